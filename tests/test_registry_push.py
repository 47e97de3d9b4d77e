"""Published oracles (registry, adapter="published"), `ao oracles`, `ao push --dry-run`, and loading a
model spread with device_map/max_memory. No network: resolution and cards are tested, not downloads."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model
from typer.testing import CliRunner

import activation_oracles as ao
from activation_oracles.cli import app
from activation_oracles.registry import PUBLISHED, find_published, resolve_adapter

PAPER_MODELS = {"Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B", "gemma-2-9b-it", "gemma-2-27b-it",
                "gemma-3-1b-it", "gemma-3-27b-it", "Llama-3.2-1B-Instruct", "Llama-3.1-8B-Instruct",
                "Llama-3.3-70B-Instruct"}


def test_registry_covers_the_papers_twelve_models():
    assert {p.name for p in PUBLISHED} == PAPER_MODELS and len(PUBLISHED) == 12
    for p in PUBLISHED:
        assert find_published(p.base_model) is p and find_published(p.name.lower()) is p
        assert p.adapter.startswith("adamkarvonen/checkpoints_") and p.adapter.count("/") == 1
        assert p.confirmed in ("reference", "listings")
        assert p.layer_percents == (25, 50, 75) and p.hook_layer == 1
    assert resolve_adapter("Qwen/Qwen3-8B", "published") == "adamkarvonen/checkpoints_latentqa_cls_past_lens_addition_Qwen3-8B"
    assert resolve_adapter("Qwen/Qwen3-8B", "my/adapter") == "my/adapter"
    with pytest.raises(ValueError, match="no published oracle for base model 'gpt2'"):
        find_published("gpt2")


def test_from_pretrained_published_resolves_the_hub_id(monkeypatch, smol_tokenizer):
    import peft

    import activation_oracles.oracle as oracle_mod

    loaded, adapters = [], []
    model = make_tiny_model("llama")
    monkeypatch.setattr(oracle_mod, "load_model", lambda spec, **kw: loaded.append(spec) or (model, smol_tokenizer))
    monkeypatch.setattr(peft.PeftModel, "from_pretrained",
                        classmethod(lambda cls, m, adapter, **kw: adapters.append(adapter) or m))
    oracle = ao.Oracle.from_pretrained("Qwen/Qwen3-8B", adapter="published")
    assert loaded == ["Qwen/Qwen3-8B"] and adapters == [find_published("Qwen3-8B").adapter]
    assert oracle.has_oracle_adapter and oracle.hook_layer == 1
    with pytest.raises(ValueError, match="no published oracle"):
        ao.Oracle.from_pretrained("smollm2-135m", adapter="published")


def test_ao_oracles_lists_every_entry():
    result = CliRunner().invoke(app, ["oracles", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(ln) for ln in result.stdout.splitlines()]
    assert [r["adapter"] for r in rows] == [p.adapter for p in PUBLISHED]


@pytest.fixture
def trained_dir(tmp_path, smol_tokenizer):
    """An adapter directory as the trainer writes it, with an evaluation's results.json beside it."""
    from peft import LoraConfig, get_peft_model

    from activation_oracles.train.checkpoint import ao_config, save_adapter
    from activation_oracles.train.config import load_config

    cfg = load_config("cpu-smollm2", {"data.path": str(tmp_path / "mix"), "train.max_steps": 40})
    mix = tmp_path / "mix"
    mix.mkdir()
    (mix / "ao_data.json").write_text(json.dumps({"counts": {"train": {"spqa": 300, "classification/sst2": 1200},
                                                             "test": {"spqa": 30}}}))
    peft_model = get_peft_model(make_tiny_model("llama"), LoraConfig(r=4, target_modules="all-linear"))
    run = tmp_path / "run"
    save_adapter(peft_model, run / "adapter", ao_config(cfg, layers=[15], step=40))
    (run / "results.json").write_text(json.dumps({"groups": [
        {"dataset": "sst2", "variant": "single", "n": 100,
         "scores": {"oracle": {"acc": 0.81}, "untrained": {"acc": 0.52}, "probe": {"acc": 0.9}}}]}))
    return run / "adapter"


def test_push_dry_run_writes_the_card_and_lists_files(trained_dir, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda *a, **k: pytest.fail("a dry run must not reach the hub"))
    result = CliRunner().invoke(app, ["push", str(trained_dir), "--repo", "me/oracle-smol", "--dry-run"])
    assert result.exit_code == 0, result.output
    listed = [ln.strip() for ln in result.stdout.splitlines() if ln.startswith("  ")]
    assert listed[:4] == ["adapter_config.json", "adapter_model.safetensors", "ao_config.json", "README.md"]
    assert listed[4].startswith("results.json (from ") and not (trained_dir / "optimizer.pt").exists()
    card = (trained_dir / "README.md").read_text()
    assert card.startswith("---\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\nlibrary_name: peft\n")  # hub id
    assert "- train: 1,500 examples (classification/sst2 1,200, spqa 300)" in card
    assert "LoRA r=16" in card and "batch 8, 40 (saved at step 40)" in card
    assert "| sst2 | single | 100 | 0.810 | 0.520 | 0.900 |" in card
    assert 'ao.Oracle.from_pretrained("smollm2-135m", adapter="me/oracle-smol")' in card
    bad = CliRunner().invoke(app, ["push", str(trained_dir.parent), "--repo", "me/x", "--dry-run"])
    assert bad.exit_code == 2 and "no adapter_config.json" in bad.output
    bad = CliRunner().invoke(app, ["push", str(trained_dir), "--repo", "noslash", "--dry-run"])
    assert bad.exit_code == 2 and "--repo 'noslash'" in bad.output


def test_device_map_and_max_memory_reach_the_loader(tmp_path, smol_tokenizer, monkeypatch):
    import transformers

    d = tmp_path / "tiny"
    make_tiny_model("llama").save_pretrained(d)
    smol_tokenizer.save_pretrained(d)
    seen, real = [], transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: seen.append(k) or real(*a, **k))
    oracle = ao.Oracle.from_pretrained(str(d), device="cpu", device_map="auto", max_memory={"cpu": "2GiB"})
    assert seen[0]["device_map"] == "auto" and seen[0]["max_memory"]["cpu"] in ("2GiB", 2 * 1024**3)  # (parsed in place)
    monkeypatch.undo()
    plain = ao.Oracle.from_pretrained(str(d), device="cpu")
    kw = dict(positions="last", max_new_tokens=4)
    assert oracle.ask("hello there", "Q?", **kw)[0].text == plain.ask("hello there", "Q?", **kw)[0].text
    with pytest.raises(ValueError, match="max_memory only applies with device_map"):
        ao.Oracle.from_pretrained(str(d), device="cpu", max_memory={"cpu": "2GiB"})
    assert torch.equal(oracle.model.lm_head.weight, plain.model.lm_head.weight)
