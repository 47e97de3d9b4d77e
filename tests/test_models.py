import pytest
import torch
from conftest import ARCHS, make_tiny_model

import activation_oracles as ao
from activation_oracles.models import prepare_tokenizer, resolve_spec


@pytest.mark.parametrize("arch", ARCHS)
def test_decoder_layers_found_by_structure(arch):
    model = make_tiny_model(arch)
    layers = ao.decoder_layers(model)
    assert isinstance(layers, torch.nn.ModuleList)
    assert len(layers) == 4
    # the blocks are the ones the forward runs: hidden_states[i + 1] is block i's output
    seen = []
    handles = [b.register_forward_hook(lambda m, a, o, i=i: seen.append(i)) for i, b in enumerate(layers)]
    model(torch.tensor([[1, 2, 3]]))
    for h in handles:
        h.remove()
    assert seen == [0, 1, 2, 3]


def test_decoder_layers_through_peft():
    from peft import LoraConfig, get_peft_model

    model = make_tiny_model("qwen3")
    plain = ao.decoder_layers(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))
    assert ao.decoder_layers(peft_model) is plain


def test_decoder_layers_multimodal_gemma3_skips_vision_tower():
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    text = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    # the vision tower gets the same depth and a larger width, so neither length nor size decides
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                  image_size=32, patch_size=8)
    model = Gemma3ForConditionalGeneration(Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4))
    layers = ao.decoder_layers(model)
    assert layers is model.model.language_model.layers
    assert ao.layer_from_percent(model, 50) == 1


def test_layer_from_percent_matches_paper_rule():
    model = make_tiny_model("llama")
    assert [ao.layer_from_percent(model, p) for p in (25, 50, 75)] == [1, 2, 3]
    assert [ao.layer_from_percent(36, p) for p in (25, 50, 75)] == [9, 18, 27]  # Qwen3-8B
    assert [ao.layer_from_percent(30, p) for p in (25, 50, 75)] == [7, 15, 22]  # SmolLM2-135M
    with pytest.raises(ValueError, match="percent"):
        ao.layer_from_percent(30, 120)


def test_unknown_model_spec_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="spec='no-such-model'"):
        ao.load_model("no-such-model")
    with pytest.raises(ValueError, match="config.json"):
        resolve_spec(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="GGUF"):
        resolve_spec(str(tmp_path / "missing.gguf"))


def test_quantization_on_cpu_is_a_clear_error():
    with pytest.raises(ValueError, match="quantization='8bit' needs a CUDA GPU"):
        ao.load_model("smollm2-135m", device="cpu", quantization="8bit")
    with pytest.raises(ValueError, match="quantization='3bit'"):
        ao.load_model("smollm2-135m", device="cpu", quantization="3bit")


class _Tok:
    def __init__(self, pad, eos):
        self.pad_token_id, self.eos_token_id = pad, eos
        self.pad_token, self.eos_token = ("<pad>" if pad is not None else None), "</s>"
        self.padding_side = "right"

    def __setattr__(self, k, v):
        object.__setattr__(self, k, v)
        if k == "pad_token" and v == "</s>":
            object.__setattr__(self, "pad_token_id", self.eos_token_id)


def test_pad_fallback_keeps_real_pad_id_zero():
    gemma_like = prepare_tokenizer(_Tok(pad=0, eos=1))
    assert gemma_like.pad_token_id == 0 and gemma_like.padding_side == "left"
    llama_like = prepare_tokenizer(_Tok(pad=None, eos=7))
    assert llama_like.pad_token_id == 7


def test_load_local_directory_and_gguf_file(smol, tmp_path):
    import time

    from activation_oracles.models import _embedded_gguf, embedded_model_dir

    t = time.time()
    model, tok = ao.load_model(str(embedded_model_dir()), device="cpu")
    assert time.time() - t < 3.0  # the cached conversion loads fast
    assert ao.layer_from_percent(model, 50) == 15 and tok.padding_side == "left"
    assert model.config.hidden_size == 576
    gguf = _embedded_gguf("smollm2-135m")
    assert resolve_spec(str(gguf)) == (str(gguf.parent), gguf.name)


def test_device_map_and_max_memory_pass_through(tmp_path, smol_tokenizer, monkeypatch):
    """Big-model placement reaches from_pretrained: with device_map the loader never moves the model itself."""
    from conftest import make_tiny_model
    from transformers import AutoModelForCausalLM

    d = tmp_path / "tiny"
    make_tiny_model("llama").save_pretrained(d)
    smol_tokenizer.save_pretrained(d)
    model, _ = ao.load_model(str(d), device_map="auto", max_memory={"cpu": "2GiB"}, dtype="float32")
    assert model.device.type == "cpu" and not model.training
    seen = {}
    real = AutoModelForCausalLM.from_pretrained

    def spy(*a, **k):
        seen.update(k)
        return real(*a, **k)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy)
    ao.load_model(str(d), device_map="balanced", max_memory={"cpu": "3GiB"}, dtype="float32")
    assert seen["device_map"] == "balanced" and seen["max_memory"]["cpu"] in ("3GiB", 3 * 2**30)  # (parsed in place)
    with pytest.raises(ValueError, match="max_memory only applies with device_map"):
        ao.load_model(str(d), device="cpu", max_memory={"cpu": "2GiB"})
