"""Group-by-length batching with a resumable cursor, and collation of oracle + context batches.

The order of an epoch is a pure function of (seed, epoch): shuffle, sort by length inside windows of
`window x batch_size`, cut into global batches, shuffle the batches. A cursor (epoch, batch index) is
therefore all a checkpoint needs to continue exactly where it stopped, on any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.schema import LAYERS_COLUMN
from ..prompt import IGNORE_INDEX
from ..steering import left_pad

COLUMNS = ("input_ids", "labels", "positions", "context_input_ids", "context_positions", "layer")


def length_filter(lengths: np.ndarray, percentile: float) -> np.ndarray:
    """Indices of examples no longer than the `percentile`-th length percentile."""
    if len(lengths) == 0 or percentile >= 100:
        return np.arange(len(lengths))
    cut = np.percentile(lengths, percentile, method="higher")  # never drops anything from tiny sets
    return np.flatnonzero(lengths <= cut)


def epoch_batches(lengths: np.ndarray, batch_size: int, *, seed: int, epoch: int, window: int = 20) -> list[np.ndarray]:
    """Global batches (arrays of row indices into `lengths`) of one epoch; the incomplete tail is dropped."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    span = max(1, window * batch_size)
    chunks = []
    for s in range(0, len(order), span):
        w = order[s : s + span]
        chunks.append(w[np.argsort(-lengths[w], kind="stable")])
    order = np.concatenate(chunks) if chunks else order
    n = len(order) // batch_size
    batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(n)]
    perm = rng.permutation(n)
    return [batches[i] for i in perm]


@dataclass
class Cursor:
    """Where the data stream stands: `batch` global batches of `epoch` are consumed."""

    epoch: int = 0
    batch: int = 0

    def to_dict(self):
        return {"epoch": self.epoch, "batch": self.batch}


@dataclass
class BatchStream:
    """Deterministic, resumable stream of global batches over `lengths` (one per kept example)."""

    lengths: np.ndarray
    batch_size: int
    seed: int = 0
    window: int = 20
    cursor: Cursor = field(default_factory=Cursor)
    _cache: tuple[int, list] | None = field(default=None, repr=False)

    def _epoch(self, epoch: int) -> list[np.ndarray]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, epoch_batches(self.lengths, self.batch_size, seed=self.seed, epoch=epoch,
                                                window=self.window))
        return self._cache[1]

    def next(self) -> np.ndarray:
        batches = self._epoch(self.cursor.epoch)
        if self.cursor.batch >= len(batches):
            self.cursor = Cursor(self.cursor.epoch + 1, 0)
            batches = self._epoch(self.cursor.epoch)
        b = batches[self.cursor.batch]
        self.cursor = Cursor(self.cursor.epoch, self.cursor.batch + 1)
        return b


class StagedStream:
    """A curriculum in front of the main stream: stage i supplies the next `steps` batches from its own
    rows only (indices into `lengths`), then the main stream takes over for the rest of the run.

    Each part is a BatchStream with its own seed, so the state is the steps taken plus one cursor per part,
    and resuming at any step continues exactly. Rows a stage used stay in the main stream's epoch: a stage
    is a warm-up on a subset, not a reordering of the epoch.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, *, seed: int = 0, window: int = 20,
                 stages: list[tuple[int, np.ndarray]] = ()):
        self.main = BatchStream(lengths, batch_size, seed=seed, window=window)
        self.stages = [(int(steps), np.asarray(rows), BatchStream(lengths[rows], batch_size, seed=seed + 1 + i,
                                                                   window=window))
                       for i, (steps, rows) in enumerate(stages)]
        self.step = 0

    batch_size = property(lambda self: self.main.batch_size)
    cursor = property(lambda self: self.main.cursor)

    def next(self) -> np.ndarray:
        s, self.step = self.step, self.step + 1
        for steps, rows, stream in self.stages:
            if s < steps:
                return rows[stream.next()]
            s -= steps
        return self.main.next()

    def state_dict(self) -> dict:
        return {"cursor": self.main.cursor.to_dict(), "stage_cursors": [st.cursor.to_dict() for _, _, st in self.stages]}

    def load_state_dict(self, state: dict, step: int) -> None:
        self.step = int(step)
        self.main.cursor = Cursor(**state["cursor"])
        cursors = state.get("stage_cursors", [])
        if len(cursors) != len(self.stages):
            raise ValueError(f"the checkpoint has {len(cursors)} curriculum stages but the config has {len(self.stages)}")
        for (_, _, st), c in zip(self.stages, cursors):
            st.cursor = Cursor(**c)


def chunk_by_length(lengths: list[int], tolerance: float) -> list[list[int]]:
    """Split items (indices into `lengths`) into groups run as separate padded batches: sorted longest
    first, a new group starts when an item is shorter than (1 - tolerance) x its group's longest, so no
    group wastes more than `tolerance` of its tokens on padding. tolerance >= 1: one group."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        if groups and lengths[i] >= (1 - tolerance) * lengths[groups[-1][0]]:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


@dataclass
class OracleBatch:
    """One micro-batch: distinct contexts (left-padded, in length groups) and the oracle prompts (left-padded)."""

    ctx_ids: list[torch.Tensor]  # per context group: [C_g, L_g]
    ctx_mask: list[torch.Tensor]
    layers: list[int]  # distinct source layers needed
    # per example: (layer, group, row, positions in the padded group); a multi-layer example has a tuple of
    # layers and reads the same positions at each, layer-major (see `source_layers`)
    src: list[tuple[int | tuple[int, ...], int, int, list[int]]]
    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor
    labels: torch.Tensor  # [B, L], IGNORE_INDEX outside answers
    inject_positions: list[list[int]]  # placeholder positions in the padded oracle batch
    tasks: list[str]
    real_tokens: int  # non-pad oracle tokens
    pad_tokens: int  # pad tokens over oracle and context batches
    total_tokens: int  # all tokens over oracle and context batches (pad included)
    label_tokens: int

    def to(self, device) -> OracleBatch:
        self.ctx_ids = [t.to(device, non_blocking=True) for t in self.ctx_ids]
        self.ctx_mask = [t.to(device, non_blocking=True) for t in self.ctx_mask]
        for name in ("input_ids", "attention_mask", "labels"):
            setattr(self, name, getattr(self, name).to(device, non_blocking=True))
        return self


def source_layers(row) -> int | tuple[int, ...]:
    """A row's source layer, or the tuple of layers of a multi-layer row (its `layers` column)."""
    layers = row.get(LAYERS_COLUMN)
    return tuple(int(x) for x in layers) if layers else int(row["layer"])


def layer_tuple(layer) -> tuple[int, ...]:
    return layer if isinstance(layer, tuple) else (layer,)


def collate(rows: list[dict], pad_id: int, *, context_pad_tolerance: float = 0.1) -> OracleBatch:
    """Rows with the data schema's columns -> OracleBatch. A context shared by several rows runs once;
    distinct contexts run in length groups (see `chunk_by_length`) to keep their padding small."""
    ctx_index: dict[tuple, int] = {}
    contexts: list[list[int]] = []
    for r in rows:
        key = tuple(r["context_input_ids"])
        if key not in ctx_index:
            ctx_index[key] = len(contexts)
            contexts.append(list(key))
    groups = chunk_by_length([len(c) for c in contexts], context_pad_tolerance)
    where: dict[int, tuple[int, int, int]] = {}  # context -> (group, row, pad offset)
    ctx_ids, ctx_mask = [], []
    for g, members in enumerate(groups):
        ids_g, mask_g, off_g = left_pad([contexts[c] for c in members], pad_id)
        ctx_ids.append(ids_g)
        ctx_mask.append(mask_g)
        for row, c in enumerate(members):
            where[c] = (g, row, off_g[row])
    ids, mask, off = left_pad([r["input_ids"] for r in rows], pad_id)
    labels = torch.full_like(ids, IGNORE_INDEX)
    src, inject = [], []
    for i, r in enumerate(rows):
        layer = source_layers(r)
        n_layers = len(layer_tuple(layer))
        if len(r["positions"]) != len(r["context_positions"]) * n_layers:
            raise ValueError(f"row {i}: {len(r['positions'])} placeholders but {len(r['context_positions'])} context "
                             f"positions x {n_layers} layer(s)")
        labels[i, off[i]:] = torch.tensor(r["labels"], dtype=torch.long)
        g, row, o = where[ctx_index[tuple(r["context_input_ids"])]]
        src.append((layer, g, row, [p + o for p in r["context_positions"]]))
        inject.append([p + off[i] for p in r["positions"]])
    real = int(mask.sum()) + sum(int(m.sum()) for m in ctx_mask)
    total = ids.numel() + sum(t.numel() for t in ctx_ids)
    return OracleBatch(
        ctx_ids=ctx_ids, ctx_mask=ctx_mask, layers=sorted({x for s in src for x in layer_tuple(s[0])}), src=src,
        input_ids=ids, attention_mask=mask, labels=labels, inject_positions=inject,
        tasks=[str(r.get("task", "")) for r in rows], real_tokens=int(mask.sum()), pad_tokens=total - real,
        total_tokens=total, label_tokens=int((labels[:, 1:] != IGNORE_INDEX).sum()),
    )
