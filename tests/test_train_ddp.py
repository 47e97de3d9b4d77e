"""Two CPU processes (gloo, launched with torchrun): both ranks step and the adapter equals what one
process saves for the same global batch."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from test_train_helpers import TORCHRUN, tiny_model_and_mixture, torchrun_train

from activation_oracles.train import train


def _cfg(model_dir, out):
    return {
        "model": {"spec": str(model_dir)},
        "optim": {"lr": 3e-3},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},  # ranks draw different dropout masks
        "train": {"batch_size": 4, "max_steps": 3, "seed": 1},
        "eval": {"every": 2, "max_examples": 4, "max_loss_examples": 4},
        "output": {"dir": str(out), "save_every": 2, "progress": False},
    }


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not found")
def test_two_process_ddp_matches_one_process(tmp_path, smol_tokenizer):
    from safetensors.torch import load_file

    model_dir, mix = tiny_model_and_mixture(tmp_path, smol_tokenizer)
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text(yaml.safe_dump(_cfg(model_dir, tmp_path / "ddp")))
    p = torchrun_train([str(cfg_file), "--data", str(mix)], 29517, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    ddp = tmp_path / "ddp"
    assert p.stdout.count("adapter:") == 2  # both ranks finished
    cp = ddp / "checkpoints" / "step_2"
    assert (cp / "rng_rank0.pt").exists() and (cp / "rng_rank1.pt").exists()
    assert json.loads((cp / "trainer_state.json").read_text())["world_size"] == 2
    rows = [json.loads(ln) for ln in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and "eval/classification/loss" in rows[1]

    one = train(_cfg(model_dir, tmp_path / "one"), data=str(mix))
    ref = [json.loads(ln) for ln in (one / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(rows, ref):
        assert a["tokens"] == b["tokens"]  # both ranks' halves were counted
        assert abs(a["loss"] - b["loss"]) < 1e-5
    wa = load_file(ddp / "adapter" / "adapter_model.safetensors")
    wb = load_file(one / "adapter" / "adapter_model.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5, rtol=1e-4), k
