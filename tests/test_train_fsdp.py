"""FSDP (torch fully_shard) with two CPU processes (gloo, launched with torchrun): the optimizer is saved
sharded, in-training evaluation runs, an interrupted run resumes exactly, and the result equals what
one process trains on the same global batches."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_train_helpers import TORCHRUN, tiny_model_and_mixture, torchrun_train


def _cfg(model_dir, out, distributed="fsdp"):
    return {
        "model": {"spec": str(model_dir)},
        "optim": {"lr": 3e-3},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},  # ranks draw different dropout masks
        "train": {"batch_size": 4, "max_steps": 4, "seed": 1, "distributed": distributed},
        "eval": {"every": 2, "max_examples": 2, "max_loss_examples": 4, "max_new_tokens": 2},
        "output": {"dir": str(out), "save_every": 2, "progress": False},
    }


def _launch(cfg_file, mix, port, resume=None, kill_after=None):
    args = ["--resume", str(resume)] if resume else [str(cfg_file), "--data", str(mix)]
    return torchrun_train(args, port, kill_after=kill_after)


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_two_process_fsdp_shards_evaluates_resumes_and_matches_one_process(tmp_path, smol_tokenizer):
    from safetensors.torch import load_file
    from torch.distributed.checkpoint import FileSystemReader

    from activation_oracles.train import train

    model_dir, mix = tiny_model_and_mixture(tmp_path, smol_tokenizer)
    cfg_file = tmp_path / "fsdp.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg(model_dir, tmp_path / "fsdp")))

    p = _launch(cfg_file, mix, 29541)
    assert p.returncode == 0, p.stderr[-4000:]
    run = tmp_path / "fsdp"
    rows = _rows(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert "eval/classification/loss" in rows[1] and "eval/classification/acc" in rows[3]  # evaluated under FSDP
    cp = run / "checkpoints" / "step_2"
    assert json.loads((cp / "trainer_state.json").read_text())["fsdp"] is True
    assert not (cp / "optimizer.pt").exists() and sorted(f.name for f in (cp / "optimizer").glob("*.distcp")) == [
        "__0_0.distcp", "__1_0.distcp"]  # every rank wrote its own shard
    meta = FileSystemReader(str(cp / "optimizer")).read_metadata().state_dict_metadata
    moments = [m for k, m in meta.items() if k.endswith("exp_avg") and m.size[0] >= 2]
    assert moments and all(len(m.chunks) == 2 for m in moments)  # each moment split over the two ranks

    # the same run killed after step 3 and resumed from step 2 ends bit-identical
    (tmp_path / "resume.yaml").write_text(yaml.safe_dump(_cfg(model_dir, tmp_path / "resumed")))
    killed = _launch(tmp_path / "resume.yaml", mix, 29542, kill_after=3)
    assert killed.returncode != 0
    resumed = _launch(None, None, 29543, resume=tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    wa = load_file(run / "adapter" / "adapter_model.safetensors")
    wb = load_file(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert [r["loss"] for r in _rows(tmp_path / "resumed")] == [r["loss"] for r in rows]

    # one process on the same global batches
    one = train(_cfg(model_dir, tmp_path / "one", "ddp"), data=str(mix))
    for a, b in zip(rows, _rows(one)):
        assert a["tokens"] == b["tokens"] and abs(a["loss"] - b["loss"]) < 1e-5
    wc = load_file(one / "adapter" / "adapter_model.safetensors")
    for k in wa:
        assert torch.allclose(wa[k], wc[k], atol=1e-5, rtol=1e-4), k
