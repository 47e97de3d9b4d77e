"""Activation Oracles: train, evaluate and query LLMs that read activations."""

from .lazy import lazy_exports

__version__ = "0.1.0"

# Imported on first use (torch and transformers take seconds): `import activation_oracles as ao` stays
# cheap, and `ao.Oracle` imports what it needs. Loading a model installs the padded-attention guard
# (models.py, see attention.py).
_EXPORTS = {
    "Oracle": ".oracle", "OracleAnswer": ".oracle", "OraclePrompt": ".prompt", "format_oracle_prompt": ".prompt",
    "collect_activations": ".hooks", "inject": ".hooks", "decoder_layers": ".models",
    "layer_from_percent": ".models", "load_model": ".models", "Client": ".serve",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "Client",
    "Oracle",
    "OracleAnswer",
    "OraclePrompt",
    "collect_activations",
    "decoder_layers",
    "format_oracle_prompt",
    "inject",
    "layer_from_percent",
    "load_model",
]
