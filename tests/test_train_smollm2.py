"""One short SmolLM2-135M run on the built-in mixture (the data module's offline data)."""

from __future__ import annotations

import json

import pytest

import activation_oracles as ao

pytestmark = pytest.mark.slow


def test_smollm2_builtin_short_run_learns(tmp_path, monkeypatch, smol):
    pytest.importorskip("activation_oracles.data.builtin")
    import activation_oracles.data.mixture as mixture_mod
    from activation_oracles.train import train

    monkeypatch.setattr(mixture_mod, "default_out_dir", lambda key: tmp_path / "mix")
    run = train("cpu-smollm2", out=str(tmp_path / "run"), overrides={
        "data.builtin_scale": 0.03, "data.curriculum": [], "train.batch_size": 8, "train.max_steps": 6, "optim.lr": 3e-4,
        "optim.warmup_ratio": 0.0, "output.save_every": 0, "output.progress": False, "eval.every": 0,
        "eval.initial": True, "eval.max_examples": 1, "eval.max_loss_examples": 8, "eval.batch_size": 12,
    })
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(7))
    before, after = rows[0], rows[-1]
    assert after["eval/classification/loss"] < before["eval/classification/loss"]
    tasks = [k for k in before if k.endswith("/loss")]
    assert sum(after[k] for k in tasks) < sum(before[k] for k in tasks)
    assert all(r["padding_share"] < 0.1 for r in rows[1:])
    assert "eval/classification/format_acc" in after
    oracle = ao.Oracle.from_pretrained("smollm2-135m", str(run / "adapter"), device="cpu")
    [answer] = oracle.ask("The movie was fantastic!", "Is the sentiment positive?", max_new_tokens=4)
    assert isinstance(answer.text, str)
