"""Test helper (no tests here): a small oracle mixture with the data module's schema, built from
hand-written sentences and yes/no questions, saved with save_to_disk; and two-process CPU training runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")

POSITIVE = [
    "I loved this film, it was wonderful.", "What a delightful and charming story.",
    "The best meal I have had in years.", "An absolute joy from start to finish.",
    "The staff were kind and the room was lovely.", "A brilliant, moving performance.",
    "I am so happy with this purchase.", "Great music and a fantastic crowd.",
]
NEGATIVE = [
    "I hated this film, it was awful.", "What a dull and tedious story.",
    "The worst meal I have had in years.", "A complete waste of time and money.",
    "The staff were rude and the room was dirty.", "A wooden, lifeless performance.",
    "I am so disappointed with this purchase.", "Terrible sound and an angry crowd.",
]
QUESTIONS = ["Is the sentiment of this text positive?", "Is this text expressing a good opinion?"]


def make_rows(tokenizer, *, layers=(1, 2), split="train", repeat=1):
    import activation_oracles as ao

    rows = []
    items = [(s, True) for s in POSITIVE] + [(s, False) for s in NEGATIVE]
    for rep in range(repeat):
        for i, (sent, pos) in enumerate(items):
            for q_i, q in enumerate(QUESTIONS):
                ctx = list(tokenizer(sent, add_special_tokens=False)["input_ids"])
                k = 1 + (i + q_i + rep) % 3  # single- and multi-token inputs
                k = min(k, len(ctx))
                layer = layers[(i + q_i + rep) % len(layers)]
                answer = "Yes" if pos else "No"
                p = ao.format_oracle_prompt(tokenizer, layer=layer, num_positions=k, question=q, answer=answer)
                rows.append({
                    "task": "classification", "dataset": "toy_sentiment", "question": q,
                    "context_input_ids": ctx, "context_positions": list(range(len(ctx) - k, len(ctx))),
                    "layer": layer, "input_ids": p.input_ids, "labels": p.labels, "positions": p.positions,
                    "target": answer, "variant": "single" if k == 1 else "multi", "split": split,
                })
    return rows


def make_dataset(tokenizer, out: Path, *, layers=(1, 2), repeat=1) -> Path:
    import datasets

    train = make_rows(tokenizer, layers=layers, split="train", repeat=repeat)
    test = make_rows(tokenizer, layers=layers, split="test")[::4]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(train), "test": datasets.Dataset.from_list(test)})
    dd.save_to_disk(str(out))
    return out


def tiny_model_and_mixture(tmp_path: Path, tokenizer) -> tuple[Path, Path]:
    """A tiny random Llama saved with `tokenizer` (tmp_path/tiny) and the toy mixture (tmp_path/mix)."""
    from conftest import make_tiny_model

    model_dir = tmp_path / "tiny"
    make_tiny_model("llama").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir, make_dataset(tokenizer, tmp_path / "mix")


def torchrun_train(args: list[str], port: int, env_extra: dict | None = None, timeout: int = 600,
                   kill_after: int | None = None):
    """`torchrun --nproc_per_node 2 -m activation_oracles.train ARGS`: two CPU processes (gloo); with
    `kill_after`, both SIGKILLed after that step (tests/kill_after_step.py)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1",
           **(env_extra or {})}
    module = ["-m", "activation_oracles.train"] if kill_after is None else ["-m", "kill_after_step", str(kill_after)]
    cmd = [TORCHRUN, "--nproc_per_node", "2", "--master_port", str(port), *module, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
