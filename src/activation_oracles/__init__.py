"""Activation Oracles: train, evaluate and query LLMs that read activations."""

from .attention import guard_padded_attention
from .hooks import collect_activations, inject
from .models import decoder_layers, layer_from_percent, load_model
from .oracle import Oracle, OracleAnswer
from .prompt import OraclePrompt, format_oracle_prompt
from .serve import Client

__version__ = "0.1.0"

guard_padded_attention()  # left-padded batches must not turn NaN on GPUs (see attention.py)

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
