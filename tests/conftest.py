"""Shared fixtures: tiny random models of real architectures, and the embedded SmolLM2-135M."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

VOCAB = 49152  # SmolLM2's, so tiny models can share its tokenizer


def _tiny_config(arch: str, layers: int = 4):
    import transformers as tf

    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    if arch == "llama":
        return tf.LlamaConfig(**common)
    if arch == "mistral":
        return tf.MistralConfig(**common)
    if arch == "qwen2":
        return tf.Qwen2Config(**common)
    if arch == "qwen3":
        return tf.Qwen3Config(**common, head_dim=8)
    if arch == "gemma2":
        return tf.Gemma2Config(**common, head_dim=8, pad_token_id=0)
    if arch == "gemma3":
        return tf.Gemma3TextConfig(**common, head_dim=8, pad_token_id=0)
    if arch == "gpt_neox":
        return tf.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                                num_attention_heads=4, max_position_embeddings=512)
    if arch == "gpt2":
        return tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=4, n_head=4, n_positions=512)
    if arch == "phi":
        return tf.PhiConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                            num_attention_heads=4, max_position_embeddings=512)
    raise KeyError(arch)


ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt_neox", "gpt2", "phi"]


def make_tiny_model(arch: str = "llama", seed: int = 0, layers: int = 4):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_tiny_config(arch, layers), dtype=torch.float32)
    return model.eval()


@pytest.fixture(scope="session")
def smol():
    """(model, tokenizer) of the embedded SmolLM2-135M-Instruct; converted once into the user cache."""
    import activation_oracles as ao

    return ao.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def smol_tokenizer(smol):
    return smol[1]


@pytest.fixture
def tiny():
    """Factory: tiny(arch) -> a 4-block random model of that architecture (vocab = SmolLM2's)."""
    return make_tiny_model


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA
