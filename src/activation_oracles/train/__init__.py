"""LoRA training of activation oracles: `train(config)` or `ao train CONFIG`.

    from activation_oracles.train import train, load_config
    run_dir = train("cpu-smollm2", data="mix/", overrides={"train.max_steps": 20})
"""

from ..lazy import lazy_exports
from .config import ConfigError, TrainConfig, load_config
from .presets import list_presets

# checkpoint.py imports torch: loaded on first use, so that `ao --help` stays fast
__getattr__ = lazy_exports(__name__, {"CheckpointError": ".checkpoint", "latest_complete": ".checkpoint",
                                      "verify": ".checkpoint"})


def train(config=None, **kwargs):
    """Train an oracle adapter; see `activation_oracles.train.loop.train`."""
    from .loop import train as _train

    return _train(config, **kwargs)


__all__ = ["CheckpointError", "ConfigError", "TrainConfig", "latest_complete", "list_presets", "load_config",
           "train", "verify"]
