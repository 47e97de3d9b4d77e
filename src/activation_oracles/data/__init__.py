"""Training and evaluation data for oracles (token ids only; activations are computed on the fly).

    from activation_oracles.data import MixtureConfig, build_mixture, load_mixture
    dd = build_mixture(MixtureConfig.builtin(), out_dir="mix")   # DatasetDict: train, test
"""

from .config import ClassificationConfig, ContextPredictionConfig, MixtureConfig, SpqaConfig, VariantConfig
from .mixture import (
    BUILDER_VERSION, build_mixture, check_tokenizer, load_mixture, load_tokenizer, mixture_info, mixture_key,
    vocab_fingerprint,
)
from .schema import COLUMNS, TASKS, VARIANTS, DataError, features
from .tokenize import OracleFormatter

__all__ = [
    "BUILDER_VERSION", "COLUMNS", "ClassificationConfig", "ContextPredictionConfig", "DataError", "MixtureConfig",
    "OracleFormatter", "SpqaConfig", "TASKS", "VARIANTS", "VariantConfig", "build_mixture", "check_tokenizer",
    "features", "load_mixture", "load_tokenizer", "mixture_info", "mixture_key", "vocab_fingerprint",
]
