"""Training and evaluation data for oracles (token ids only; activations are computed on the fly).

    from activation_oracles.data import MixtureConfig, build_mixture, load_mixture
    dd = build_mixture(MixtureConfig.builtin(), out_dir="mix")   # DatasetDict: train, test
"""

from ..lazy import lazy_exports

# Imported on first use: mixture.py needs torch and datasets, which `ao --help` should not wait for.
_EXPORTS = {
    **dict.fromkeys(("ClassificationConfig", "ContextPredictionConfig", "MixtureConfig", "SpqaConfig",
                     "VariantConfig"), ".config"),
    **dict.fromkeys(("BUILDER_VERSION", "build_mixture", "check_tokenizer", "load_mixture", "load_tokenizer",
                     "mixture_info", "mixture_key", "vocab_fingerprint"), ".mixture"),
    **dict.fromkeys(("COLUMNS", "TASKS", "VARIANTS", "DataError", "features"), ".schema"),
    "OracleFormatter": ".tokenize",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "BUILDER_VERSION", "COLUMNS", "ClassificationConfig", "ContextPredictionConfig", "DataError", "MixtureConfig",
    "OracleFormatter", "SpqaConfig", "TASKS", "VARIANTS", "VariantConfig", "build_mixture", "check_tokenizer",
    "features", "load_mixture", "load_tokenizer", "mixture_info", "mixture_key", "vocab_fingerprint",
]
