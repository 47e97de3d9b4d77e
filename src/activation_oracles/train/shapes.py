"""Shape buckets: the few sizes a run's packed batches are rounded up to (train.shape_buckets).

A compiled kernel or a captured CUDA graph serves one shape; a packed batch has four sizes (context tokens,
oracle tokens, placeholders, labelled targets) that vary from step to step. Rounding each up to one of a
few buckets bounds the distinct shapes a run sees; the buckets sit at the quantiles of the sizes the run's
own batches will have (computed from the data's lengths before training), so the padding they add is
small, and it is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZES = ("context", "oracle", "placeholders", "labels")
MULTIPLE = {"context": 64, "oracle": 64, "placeholders": 8, "labels": 8}  # (tensor-core friendly widths)


@dataclass
class ShapeBuckets:
    layers: tuple[int, ...]  # the run's source layers: every packed batch gathers from all of them
    context: list[int]
    oracle: list[int]
    placeholders: list[int]
    labels: list[int]

    def round(self, size: str, n: int) -> int:
        """`n` rounded up to its bucket; past the largest, to a multiple of the size's step (a new shape,
        which the buckets, made from the run's own batches, leave to batches they never saw)."""
        for b in getattr(self, size):
            if b >= n:
                return b
        m = MULTIPLE[size]
        return -(-n // m) * m

    @classmethod
    def from_sizes(cls, sizes: dict[str, np.ndarray], k: int, layers) -> ShapeBuckets:
        """Buckets at the quantiles 1/K', 2/K', ..., 1 of each size's per-micro-batch values (`sizes`),
        rounded up to MULTIPLE: K' = k for the token counts, whose padding costs forward and backward work;
        k / 4 for the labelled targets (their padding costs only the LM head); 1 for the placeholders (a
        gather and an injection, next to nothing). So the shapes are at most k x k x k/4."""
        per = {"context": k, "oracle": k, "labels": max(1, k // 4), "placeholders": 1}
        out = {}
        for name in SIZES:
            v = np.asarray(sizes[name])
            m, n = MULTIPLE[name], per[name]
            qs = np.quantile(v, np.arange(1, n + 1) / n, method="higher") if len(v) else np.array([m])
            out[name] = sorted({int(-(-q // m) * m) for q in qs})
        return cls(layers=tuple(int(x) for x in layers), **out)

    def padding(self, sizes: dict[str, np.ndarray]) -> dict[str, float]:
        """Per size, the share of the rounded sizes that is padding, over the given per-batch values."""
        out = {}
        for name in SIZES:
            v = np.asarray(sizes[name], dtype=np.int64)
            r = np.array([self.round(name, int(x)) for x in v], dtype=np.int64)
            out[name] = float(1 - v.sum() / r.sum()) if r.sum() else 0.0
        return out

    def distinct(self, sizes: dict[str, np.ndarray]) -> int:
        """How many distinct shapes (all four sizes together) the given batches round to."""
        keys = zip(*[[self.round(name, int(x)) for x in sizes[name]] for name in SIZES])
        return len(set(keys))

    def describe(self) -> str:
        return "; ".join(f"{name} {getattr(self, name)}" for name in SIZES)


def micro_batch_sizes(per_row: dict[str, np.ndarray], batches: list[np.ndarray], parts: int) -> dict[str, np.ndarray]:
    """Each size of every micro-batch: the global batches (row indices) cut into `parts` (processes x
    gradient accumulation steps) as the trainer cuts them. `per_row`: oracle tokens, context tokens,
    placeholders and labelled targets of each row. The oracle size adds the row's one padding slot; a
    context shared by rows counts once in a real batch but for each row here, so the context buckets err on
    the large side."""
    micro = [part for b in batches for part in np.array_split(np.asarray(b, dtype=np.int64), parts) if len(part)]
    if not micro:
        return {name: np.zeros(0, dtype=np.int64) for name in SIZES}
    order = np.concatenate(micro)
    starts = np.cumsum([0] + [len(m) for m in micro[:-1]])
    sizes = {name: np.add.reduceat(np.asarray(per_row[name], dtype=np.int64)[order], starts) for name in SIZES}
    sizes["oracle"] = sizes["oracle"] + 1
    return sizes
