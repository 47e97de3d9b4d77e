"""The training loop: objective correctness, a tiny run that learns, checkpoints, exact resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import activation_oracles as ao
from activation_oracles.train import CheckpointError, latest_complete, train, verify
from activation_oracles.train.batching import collate
from activation_oracles.train.objective import OracleObjective, batch_kwargs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, smol_tokenizer):
    from conftest import make_tiny_model

    d = tmp_path_factory.mktemp("tiny-llama")
    make_tiny_model("llama").save_pretrained(d)
    smol_tokenizer.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def mix(tmp_path_factory, smol_tokenizer):
    from test_train_helpers import make_dataset

    return make_dataset(smol_tokenizer, tmp_path_factory.mktemp("data") / "mix")


def tiny_cfg(tiny_dir, out, **over):
    cfg = {
        "model": {"spec": str(tiny_dir)},
        "data": {},
        "optim": {"lr": 3e-3, "warmup_ratio": 0.1},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.1},
        "train": {"batch_size": 4, "max_steps": 6, "seed": 1},
        "eval": {"every": 3, "max_examples": 4, "max_loss_examples": 4},
        "output": {"dir": str(out), "save_every": 3, "progress": False},
    }
    for k, v in over.items():
        sec, key = k.split(".")
        cfg[sec][key] = v
    return cfg


def losses(run_dir):
    return [json.loads(ln)["loss"] for ln in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_objective_matches_plain_forward(tiny, smol_tokenizer):
    """Batched, deduplicated, left-padded, logits-at-labels loss == per-example full-logits loss."""
    from peft import LoraConfig, get_peft_model
    from test_train_helpers import make_rows

    model = get_peft_model(tiny("llama"), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                     init_lora_weights=False))
    model.eval()
    rows = make_rows(smol_tokenizer, layers=(1, 3))[:6]
    b = collate(rows, smol_tokenizer.pad_token_id)
    assert sum(t.shape[0] for t in b.ctx_ids) == 3  # two questions per sentence: each context runs once
    ce, which = OracleObjective(model, hook_layer=1)(**batch_kwargs(b))
    for i, r in enumerate(rows):
        ids = torch.tensor([r["context_input_ids"]])
        acts = ao.collect_activations(model, ids, layers=[r["layer"]])[r["layer"]][0, r["context_positions"]]
        with ao.inject(model, [acts], [r["positions"]], hook_layer=1):
            logits = model(input_ids=torch.tensor([r["input_ids"]])).logits[0]
        ref = F.cross_entropy(logits[:-1], torch.tensor(r["labels"][1:]), ignore_index=-100, reduction="sum")
        assert torch.allclose(ce[which == i].sum(), ref, rtol=1e-4, atol=1e-4), i


def test_tiny_run_learns_and_saves_loadable_adapter(tiny_dir, mix, tmp_path):
    run = train(tiny_cfg(tiny_dir, tmp_path / "run", **{"train.max_steps": 12, "output.save_every": 0,
                                                           "optim.lr": 2e-2}), data=str(mix))
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    for key in ("loss", "lr", "tokens", "step_time_s", "padding_share", "loss/classification"):
        assert key in rows[0]
    assert 0 <= rows[0]["padding_share"] < 0.5 and rows[0]["tokens"] > 0
    first, last = sum(r["loss"] for r in rows[:3]) / 3, sum(r["loss"] for r in rows[-3:]) / 3
    assert last < first - 0.2
    assert "eval/classification/loss" in rows[-1] and "eval/toy_sentiment/single/acc" in rows[-1]
    assert "eval/classification/format_acc" in rows[-1]
    verify(run / "adapter")
    meta = json.loads((run / "adapter" / "ao_config.json").read_text())
    assert meta["hook_layer"] == 1 and meta["base_model"] == str(tiny_dir)
    for key in ("prompt_format", "layer_percents", "base_model_revision", "training_config", "package_version"):
        assert key in meta
    assert (run / "checkpoints" / "step_12" / "optimizer.pt").exists()  # final checkpoint
    oracle = ao.Oracle.from_pretrained(str(tiny_dir), str(run / "adapter"), device="cpu")
    assert oracle.hook_layer == 1
    sd = {k: v for k, v in oracle.model.state_dict().items() if "lora_B" in k}
    assert sd and any(v.abs().sum() > 0 for v in sd.values())  # trained weights arrived


def test_packed_run_follows_the_padded_run(tiny_dir, mix, tmp_path):
    """train.context_packing through the whole trainer (start-of-run check, collate, evaluation): no dropout,
    the same batches, so the loss curve is the padded one; the padding share falls."""
    over = {"train.max_steps": 4, "output.save_every": 0, "lora.dropout": 0.0}
    padded = train(tiny_cfg(tiny_dir, tmp_path / "padded", **over), data=str(mix))
    packed = train(tiny_cfg(tiny_dir, tmp_path / "packed", **over, **{"train.context_packing": True}), data=str(mix))
    rows = [[json.loads(ln) for ln in (r / "metrics.jsonl").read_text().splitlines()] for r in (padded, packed)]
    for a, b in zip(*rows):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
        assert b["padding_share"] <= a["padding_share"]
    # packing really ran (the start-of-run check could have turned it off): its contexts carry no padding
    assert sum(r["padding_share"] for r in rows[1]) < sum(r["padding_share"] for r in rows[0])
    assert "eval/classification/loss" in rows[1][-1]


def test_saved_config_is_what_ran_and_metrics_reach_tensorboard(tiny_dir, mix, tmp_path, monkeypatch):
    import yaml

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    import activation_oracles.steering as steering

    # a model whose forward mixes packed contexts: the run turns train.context_packing off after its check
    monkeypatch.setattr(steering, "packing_error", lambda model: 1.0)
    cfg = tiny_cfg(tiny_dir, tmp_path / "run", **{"train.max_steps": 3, "train.context_packing": True,
                                                     "output.save_every": 0, "output.report_to": ["tensorboard"],
                                                     "eval.every": 0, "eval.final": False})
    with pytest.warns(UserWarning, match="train.context_packing: packed and padded activations"):
        run = train(cfg, data=str(mix))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["context_packing"] is False and saved["train"]["max_steps"] == 3
    assert [p.name for p in run.iterdir() if p.name.startswith(".") and p.name != ".ao-train.lock"] == []
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    for key in ("loss", "lr", "tokens_per_s"):
        got = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in got] == [1, 2, 3]
        assert [v for _, v in got] == pytest.approx([r[key] for r in rows], rel=1e-6)


def test_resume_after_sigkill_matches_uninterrupted(tiny_dir, mix, tmp_path):
    import yaml

    # a curriculum stage (multi-token rows for 5 steps) spans the kill, so its cursor must resume too
    stage = {"data.curriculum": [{"steps": 5, "where": {"variant": ["multi"]}}]}
    full = train(tiny_cfg(tiny_dir, tmp_path / "full", **stage), data=str(mix))
    ref = losses(full)
    assert len(ref) == 6
    # the same run in a subprocess, SIGKILLed after step 4 (checkpoint at 3) by the test-only kill_after_step
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_cfg(tiny_dir, tmp_path / "killed", **stage)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    p = subprocess.run([sys.executable, "-m", "kill_after_step", "4", str(cfg_file), "--data", str(mix)],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr[-2000:]
    killed = tmp_path / "killed"
    assert len(losses(killed)) == 4
    assert latest_complete(killed).name == "step_3"
    # a newer, half-written checkpoint is named and skipped, never loaded
    bad = killed / "checkpoints" / "step_5"
    bad.mkdir()
    (bad / "adapter_model.safetensors").write_bytes(b"garbage")
    # what a checkpoint write killed mid-way leaves (its writer's pid is gone): removed when the run resumes
    from activation_oracles.fsutil import _host_tag

    leftover = killed / "checkpoints" / f".step_6-ao999999999@{_host_tag()}-abc"
    leftover.mkdir()
    (leftover / "optimizer.pt").write_bytes(b"half written")
    with pytest.warns(UserWarning, match="step_5: incomplete checkpoint"):
        run = train(resume=str(killed))
    assert not leftover.exists()
    assert [p.name for p in run.rglob(".*") if p.name != ".ao-train.lock"] == []  # no temporary left
    got = losses(run)
    assert len(got) == 6
    assert max(abs(a - b) for a, b in zip(got, ref)) < 1e-5, (got, ref)
    a = (full / "adapter" / "adapter_model.safetensors").read_bytes()
    from safetensors.torch import load_file

    fa, fb = load_file(full / "adapter" / "adapter_model.safetensors"), load_file(run / "adapter" / "adapter_model.safetensors")
    assert a and all(torch.allclose(fa[k], fb[k], atol=1e-6) for k in fa)


def test_corrupted_checkpoint_is_named(tiny_dir, mix, tmp_path):
    run = train(tiny_cfg(tiny_dir, tmp_path / "run", **{"train.max_steps": 2, "output.save_every": 1,
                                                           "eval.every": 0, "eval.final": False}), data=str(mix))
    cp = run / "checkpoints" / "step_2"
    verify(cp)
    with open(cp / "optimizer.pt", "r+b") as f:
        f.seek(10)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CheckpointError, match=r"step_2: corrupted checkpoint \(optimizer.pt fails"):
        verify(cp)
    with pytest.warns(UserWarning, match="step_2: corrupted"):
        assert latest_complete(run).name == "step_1"
    (cp / "MANIFEST.json").unlink()
    with pytest.raises(CheckpointError, match="step_2: incomplete checkpoint"):
        train(resume=str(cp))


def test_init_from_starts_at_a_saved_adapter(tiny_dir, mix, tmp_path):
    """lora.init_from: the new run starts at the saved adapter (at lr ~0 it ends there too, and its first loss is
    well below a fresh adapter's on the same batch); a mismatched rank and a folder without weights are named."""
    from safetensors.torch import load_file

    from activation_oracles.train import ConfigError

    first = train(tiny_cfg(tiny_dir, tmp_path / "a", **{"train.max_steps": 8, "output.save_every": 0,
                                                         "optim.lr": 2e-2, "eval.every": 0}), data=str(mix))
    saved = load_file(str(first / "adapter" / "adapter_model.safetensors"))
    # lr 0 for the whole second run: its adapter must come out exactly as the first run left it
    cont = train(tiny_cfg(tiny_dir, tmp_path / "b", **{"train.max_steps": 2, "output.save_every": 0, "eval.every": 0,
                                                        "optim.lr": 1e-12, "lora.init_from": str(first / "adapter")}),
                 data=str(mix))
    after = load_file(str(cont / "adapter" / "adapter_model.safetensors"))
    assert saved.keys() == after.keys() and any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k)
    assert all(torch.allclose(saved[k], after[k], atol=1e-6) for k in saved)
    fresh = losses(train(tiny_cfg(tiny_dir, tmp_path / "c", **{"train.max_steps": 2, "output.save_every": 0,
                                                                "eval.every": 0, "optim.lr": 1e-12}), data=str(mix)))
    assert losses(cont)[0] < fresh[0] - 0.2  # same first batch, the trained adapter's loss is lower

    with pytest.raises(ConfigError, match="lora.init_from.*lora.r"):
        train(tiny_cfg(tiny_dir, tmp_path / "d", **{"lora.r": 4, "lora.init_from": str(first / "adapter")}),
              data=str(mix))
    with pytest.raises(ConfigError, match="lora.init_from.*no adapter_model.safetensors"):
        train(tiny_cfg(tiny_dir, tmp_path / "e", **{"lora.init_from": str(tmp_path)}), data=str(mix))
