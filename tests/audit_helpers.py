"""Test helper (no tests here): tiny base models, an oracle trained with `ao train`, organisms built
with `ao organism build`, all through the command line, in a shared temporary directory."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from typer.testing import CliRunner

from activation_oracles.cli import app

runner = CliRunner()


def ao(*args: str):
    """Run `ao ARGS` in-process; returns the click Result."""
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: str):
    r = ao(*args)
    assert r.exit_code == 0, (args, r.output[-3000:], r.exception)
    return r


def tiny_base(root: Path, tokenizer, name: str = "tinyA", seed: int = 0, arch: str = "llama") -> Path:
    from conftest import make_tiny_model

    d = root / name
    if not (d / "config.json").exists():
        make_tiny_model(arch, seed=seed).save_pretrained(d)
        tokenizer.save_pretrained(d)
    return d


def trained_oracle(root: Path, tokenizer, base: Path, steps: int = 3) -> Path:
    """An oracle adapter made by `ao train` on a toy mixture (a few steps)."""
    from test_train_helpers import make_dataset

    mix = make_dataset(tokenizer, root / "mix")
    cfg = {"model": {"spec": str(base)}, "data": {}, "optim": {"lr": 3e-3, "warmup_ratio": 0.1},
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
           "train": {"batch_size": 4, "max_steps": steps, "seed": 1},
           "eval": {"every": 0, "final": False}, "output": {"dir": str(root / "run"), "save_every": 0, "progress": False}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    ok("train", root / "tiny.yaml", "--data", mix)
    return root / "run" / "adapter"


def build(root: Path, base: Path, kind: str, *opts: str, name: str | None = None, steps: int = 2) -> Path:
    out = root / (name or f"org_{kind}")
    if not (out / "organism.json").exists():
        ok("organism", "build", kind, "--base", base, "--out", out, "--max-steps", steps, *opts)
    return out


def results(d: Path) -> dict:
    return json.loads((d / "results.json").read_text())


def answers(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "answers.jsonl").read_text().splitlines()]
