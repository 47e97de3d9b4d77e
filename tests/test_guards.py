"""Guards that stop a run before it trains on the wrong data: the tokenizer a mixture was built for, and
paper presets that must never fall back to the demo mixture."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest

from activation_oracles.data import (
    DataError, MixtureConfig, build_mixture, check_tokenizer, load_mixture, load_tokenizer, mixture_info,
    vocab_fingerprint,
)
from activation_oracles.train import ConfigError, load_config, train

ROOT = Path(__file__).resolve().parents[1]


def _tiny_mixture_config(model: str = "smollm2-135m") -> MixtureConfig:
    cfg = MixtureConfig.builtin(model=model, scale=0.02)
    cfg.layer_percents = [25, 50]
    return cfg


@pytest.fixture(scope="module")
def smol_mix(tmp_path_factory):
    out = tmp_path_factory.mktemp("guard") / "mix"
    build_mixture(_tiny_mixture_config(), out_dir=out, log=lambda m: None)
    return out


@pytest.fixture(scope="module")
def other_model_dir(tmp_path_factory):
    """A tiny model whose tokenizer is SmolLM2's plus one added token: same text, other vocabulary."""
    from conftest import make_tiny_model

    tok, _ = load_tokenizer("smollm2-135m")
    tok.add_tokens(["<ao_extra_token>"])
    d = tmp_path_factory.mktemp("other") / "tiny-other"
    make_tiny_model("llama").save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_mixture_records_fingerprint_model_and_config(smol_mix):
    tok, _ = load_tokenizer("smollm2-135m")
    meta = mixture_info(smol_mix)
    assert meta["model"] == "smollm2-135m" and meta["tokenizer"] == vocab_fingerprint(tok)
    saved = MixtureConfig.from_yaml(smol_mix / "mixture.yaml")
    assert saved.model == "smollm2-135m" and saved.layer_percents == [25, 50]


def test_fingerprint_is_vocabulary_and_template():
    from activation_oracles.models import prepare_tokenizer

    tok, _ = load_tokenizer("smollm2-135m")
    base = vocab_fingerprint(tok)
    assert vocab_fingerprint(prepare_tokenizer(copy.deepcopy(tok))) == base  # padding side/pad token: same ids
    other_template = copy.deepcopy(tok)
    other_template.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert vocab_fingerprint(other_template) != base
    added = copy.deepcopy(tok)
    added.add_tokens(["<ao_extra_token>"])
    assert vocab_fingerprint(added) != base


def test_check_names_both_tokenizers_and_the_fix(smol_mix, other_model_dir):
    tok, _ = load_tokenizer(str(other_model_dir))
    with pytest.raises(DataError) as e:
        check_tokenizer(smol_mix, tok, str(other_model_dir))
    msg = str(e.value)
    assert "'smollm2-135m'" in msg and str(other_model_dir) in msg
    assert f"ao data build {smol_mix / 'mixture.yaml'} --model {other_model_dir} --out" in msg
    check_tokenizer(smol_mix, load_tokenizer("smollm2-135m")[0], "smollm2-135m")  # the right one passes


def test_mixture_without_fingerprint_trusts_only_the_same_model_id(smol_mix, tmp_path):
    tok, _ = load_tokenizer("smollm2-135m")
    meta = {**mixture_info(smol_mix)}
    meta.pop("tokenizer")
    check_tokenizer(smol_mix, tok, "smollm2-135m", meta=meta)
    with pytest.raises(DataError, match="no fingerprint recorded"):
        check_tokenizer(smol_mix, tok, "some/other-model", meta=meta)


def _no_model(monkeypatch):
    import activation_oracles.models as models

    def boom(*a, **k):
        raise AssertionError("the model was loaded before the data check")

    monkeypatch.setattr(models, "load_model", boom)


def _cfg(model_dir, out, **data):
    return {"model": {"spec": str(model_dir)}, "data": {"layer_percents": [25, 50], **data},
            "train": {"batch_size": 4, "max_steps": 1}, "output": {"dir": str(out), "progress": False}}


def test_train_refuses_a_mixture_of_another_tokenizer_before_loading_the_model(smol_mix, other_model_dir,
                                                                                 tmp_path, monkeypatch):
    _no_model(monkeypatch)
    with pytest.raises(ConfigError) as e:
        train(_cfg(other_model_dir, tmp_path / "run"), data=str(smol_mix))
    assert e.value.field == "data.path" and "ao data build" in str(e.value) and "'smollm2-135m'" in str(e.value)


def test_ao_train_cli_refuses_it_too(smol_mix, other_model_dir, tmp_path):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(other_model_dir, tmp_path / "run")))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, "-m", "activation_oracles.cli", "train", str(cfg), "--data", str(smol_mix)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "was built for the tokenizer of 'smollm2-135m'" in p.stderr and "ao data build" in p.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_eval_refuses_a_mixture_of_another_tokenizer(smol_mix, other_model_dir):
    from activation_oracles.eval.run import eval_data

    with pytest.raises(DataError, match="ao data build"):
        eval_data(str(smol_mix), str(other_model_dir))
    assert set(eval_data(str(smol_mix), "smollm2-135m")) == {"train", "test"}
    with pytest.raises(DataError):
        load_mixture(smol_mix, model=str(other_model_dir))


def test_paper_preset_never_falls_back_to_the_demo_mixture(tmp_path, monkeypatch, other_model_dir):
    """Without --data a paper preset builds the paper mixture from its sources; where they are missing it
    stops with the command to run (and never trains on the built-in mixture)."""
    _no_model(monkeypatch)
    monkeypatch.chdir(tmp_path)
    cfg = load_config("paper-qwen3-8b", {"model.spec": str(other_model_dir), "output.dir": str(tmp_path / "run")})
    assert cfg.data.path is None and cfg.data.mixture == "paper"
    with pytest.raises(ConfigError) as e:
        train(cfg)
    msg = str(e.value)
    assert e.value.field == "data.path" and "'paper' mixture" in msg
    assert (f"ao data build --preset paper --model {other_model_dir} --reference-data activation_oracles/datasets "
            "--out DIR") in msg
    assert "reference" in msg and "github.com/adamkarvonen/activation_oracles" in msg  # the missing source is named


def test_paper_preset_builds_the_paper_mixture(tmp_path, monkeypatch):
    """The configured mixture is the packaged paper YAML with the preset's model, seed and layers."""
    from activation_oracles.train.dataset import mixture_config

    cfg = load_config("paper-gemma2-9b")
    m = mixture_config(cfg)
    paper = MixtureConfig.from_yaml("paper")
    assert m.model == "google/gemma-2-9b-it" and m.layer_percents == [25, 50, 75]
    assert m.context_prediction.count == paper.context_prediction.count == 600_000
    assert m.spqa.source == paper.spqa.source
    with pytest.raises(ConfigError, match="data.mixture"):
        load_config("cpu-smollm2", {"data.mixture": "demo"})
