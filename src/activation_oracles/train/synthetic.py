"""Rows of the data schema made from lengths alone (random token ids): what memory planning, the OOM
preflight's tests and the GPU benchmark run when only the shape of the data matters."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..prompt import IGNORE_INDEX

PAPER_LENGTHS = Path(__file__).resolve().parents[1] / "builtin" / "paper_lengths.json"


def load_lengths(path: str | Path = PAPER_LENGTHS) -> dict[str, np.ndarray]:
    """Per-example lengths of a mixture sample: oracle, context, k (placeholders), labels (labelled
    targets), layer (index of the source layer), task. The default is the paper mixture's sample
    (made by benchmarks/gpu_train.py --write-lengths)."""
    d = json.loads(Path(path).read_text())
    cols = {k: np.asarray(v) for k, v in d["columns"].items()}
    cols["task"] = np.asarray(d["meta"]["tasks"])[cols["task"]]
    return cols


def synthetic_row(rng: np.random.Generator, *, oracle: int, context: int, k: int, labels: int, layer: int,
                  vocab: int, task: str = "context_prediction") -> dict:
    """One row: `k` placeholders after a short header, the last `labels` tokens labelled, the source
    positions the last `k` context tokens."""
    ids = rng.integers(5, vocab - 5, size=oracle).tolist()
    start = max(0, min(6, oracle - labels - k - 1))
    ids[start : start + k] = [int(ids[start])] * k
    return {"task": task, "input_ids": ids, "labels": [IGNORE_INDEX] * (oracle - labels) + ids[oracle - labels :],
            "positions": list(range(start, start + k)), "context_input_ids": rng.integers(5, vocab - 5, size=context).tolist(),
            "context_positions": list(range(context - k, context)), "layer": int(layer)}


def synthetic_batches(lengths: dict[str, np.ndarray], n_batches: int, batch_size: int, vocab: int,
                      layers: list[int], seed: int, percentile: float = 99.9) -> list[list[dict]]:
    """`n_batches` global batches of rows with the sampled lengths, in the trainer's group-by-length order
    (length filter, windows of 20 batches sorted by oracle length)."""
    from .batching import epoch_batches, length_filter

    rng = np.random.default_rng(seed)
    keep = length_filter(lengths["oracle"], percentile)
    order = epoch_batches(lengths["oracle"][keep], batch_size, seed=seed, epoch=0, window=20)
    if len(order) < n_batches:
        raise ValueError(f"the length sample holds {len(order)} batches of {batch_size}, fewer than {n_batches}")
    return [[synthetic_row(rng, oracle=int(lengths["oracle"][i]), context=int(lengths["context"][i]),
                           k=int(lengths["k"][i]), labels=int(lengths["labels"][i]),
                           layer=layers[int(lengths["layer"][i])], vocab=vocab, task=str(lengths["task"][i]))
             for i in keep[b]] for b in order[:n_batches]]
