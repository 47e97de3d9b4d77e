"""Group-by-length batching with a resumable cursor, and collation of oracle + context batches.

The order of an epoch is a pure function of (seed, epoch): shuffle, sort by length inside windows of
`window x batch_size`, cut into global batches, shuffle the batches. A cursor (epoch, batch index) is
therefore all a checkpoint needs to continue exactly where it stopped, on any number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.schema import LAYERS_COLUMN, TASKS  # a row's loss slot: its index in TASKS, len(TASKS) for any other
from ..prompt import IGNORE_INDEX
from ..steering import left_pad, pack_sequences

COLUMNS = ("input_ids", "labels", "positions", "context_input_ids", "context_positions", "layer")


def length_filter(lengths: np.ndarray, percentile: float) -> np.ndarray:
    """Indices of examples no longer than the `percentile`-th length percentile."""
    if len(lengths) == 0 or percentile >= 100:
        return np.arange(len(lengths))
    cut = np.percentile(lengths, percentile, method="higher")  # never drops anything from tiny sets
    return np.flatnonzero(lengths <= cut)


def epoch_batches(lengths: np.ndarray, batch_size: int, *, seed: int, epoch: int, window: int = 20,
                  costs: np.ndarray | None = None, budget: int | None = None) -> list[np.ndarray]:
    """Global batches (arrays of row indices into `lengths`) of one epoch; the incomplete tail is dropped.
    With a token `budget` (train.batch_tokens), a batch is instead a run of rows in the same sorted order
    whose `costs` add up to at most the budget (a row over it alone), and `batch_size` is unused."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    per = batch_size if budget is None else max(1, int(budget // max(1.0, float(np.mean(costs)) if len(costs) else 1)))
    span = max(1, window * per)
    chunks = []
    for s in range(0, len(order), span):
        w = order[s : s + span]
        chunks.append(w[np.argsort(-lengths[w], kind="stable")])
    order = np.concatenate(chunks) if chunks else order
    if budget is None:
        n = len(order) // batch_size
        batches = [order[i * batch_size : (i + 1) * batch_size] for i in range(n)]
    else:
        batches = _cut_by_budget(order, np.asarray(costs)[order], budget)
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def _cut_by_budget(order: np.ndarray, costs: np.ndarray, budget: int) -> list[np.ndarray]:
    """Consecutive runs of `order` whose costs add up to at most `budget` (a single row may exceed it);
    the last, partial run is dropped as the incomplete tail of an epoch is."""
    batches, start, total = [], 0, 0
    for i, c in enumerate(costs.tolist()):
        if total and total + c > budget:
            batches.append(order[start:i])
            start, total = i, 0
        total += c
    return batches


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
    costs: np.ndarray | None = None  # with `budget`: each row's tokens (train.batch_tokens)
    budget: int | None = None
    _cache: tuple[int, list] | None = field(default=None, repr=False)

    def _epoch(self, epoch: int) -> list[np.ndarray]:
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, epoch_batches(self.lengths, self.batch_size, seed=self.seed, epoch=epoch,
                                                window=self.window, costs=self.costs, budget=self.budget))
        return self._cache[1]

    def batches_per_epoch(self) -> int:
        return len(self._epoch(self.cursor.epoch))

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
                 stages: list[tuple[int, np.ndarray]] = (), costs: np.ndarray | None = None,
                 budget: int | None = None):
        self.main = BatchStream(lengths, batch_size, seed=seed, window=window, costs=costs, budget=budget)
        self.stages = [(int(steps), np.asarray(rows), BatchStream(
            lengths[rows], batch_size, seed=seed + 1 + i, window=window,
            costs=None if costs is None else costs[rows], budget=budget)) for i, (steps, rows) in enumerate(stages)]
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


def cheapest_spans(n: int, cost) -> list[tuple[int, int]]:
    """The split of items 0..n-1 into contiguous spans [i, j) that minimises the sum of cost(i, j): a
    dynamic programme over the end of the last span."""
    best, cut = [0.0] + [float("inf")] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = best[i] + cost(i, j)
            if c < best[j]:
                best[j], cut[j] = c, i
    spans, j = [], n
    while j > 0:
        spans.append((cut[j], j))
        j = cut[j]
    return spans[::-1]


def group_by_cost(lengths: list[int], overhead: float) -> list[list[int]]:
    """Split items into the padded context batches that cost least in all: each batch costs its padded
    tokens (size x longest) plus `overhead` tokens, what one more forward costs in launches and fixed work
    whatever its size (large on a GPU, where a short forward is bound by kernel launches). Groups are
    contiguous in the longest-first order."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    sizes = [lengths[i] for i in order]
    spans = cheapest_spans(len(order), lambda i, j: overhead + sizes[i] * (j - i))  # (sizes[i]: the longest)
    return [order[i:j] for i, j in spans]


def pack_by_depth(depth: list[int], lengths: list[int], overhead: float = 0) -> list[list[int]]:
    """Packed context groups: contexts (indices) of neighbouring deepest layers share one packed forward,
    which runs to the deepest of them. A group costs its blocks run x (its tokens + `overhead`), the
    overhead being what one more forward costs per block in launches (train.context_group_overhead); with
    none, every depth runs alone and no context runs deeper than it must."""
    depths = sorted(set(depth))
    tokens = [sum(n for d, n in zip(depth, lengths) if d == x) for x in depths]
    spans = cheapest_spans(len(depths), lambda i, j: (depths[j - 1] + 1) * (sum(tokens[i:j]) + overhead))
    return [[c for c in range(len(depth)) if depths[i] <= depth[c] <= depths[j - 1]] for i, j in spans]


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """A host tensor's copy on `device`, queued without waiting: from pinned memory on a GPU (a copy from
    pageable memory makes the host wait for it). The one way a batch reaches the device."""
    device = torch.device(device)
    if device.type == "cuda" and not t.is_pinned():
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


@dataclass
class OracleBatch:
    """One micro-batch: distinct contexts (left-padded, in length groups) and the oracle prompts (left-padded)."""

    ctx_ids: list[torch.Tensor]  # per context group: [C_g, L_g], or [1, T_g] when packed
    ctx_mask: list[torch.Tensor | None]  # None for a packed group (ctx_pos marks where each context starts)
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
    # The same information as flat index tensors, built on the CPU here so that a step on a GPU never
    # waits for the device to read indices back (boolean masks, Python lists moved one by one).
    context_tokens: int = 0  # non-pad tokens of the distinct contexts
    label_rows: torch.Tensor | None = None  # [N] row of each labelled target
    label_cols: torch.Tensor | None = None  # [N] position whose hidden state predicts it
    label_targets: torch.Tensor | None = None  # [N] its token id
    task_ids: torch.Tensor | None = None  # [B] each row's index in TASKS (len(TASKS): another task)
    inject_rows: torch.Tensor | None = None  # [P] oracle row of each placeholder, example-major
    inject_cols: torch.Tensor | None = None  # [P] its position in the padded oracle batch
    inject_bounds: tuple[int, int] = (0, 0)  # (max row, max col) of the placeholders
    gathers: list = field(default_factory=list)  # (layer, group, rows [n], cols [n], slots [n]) into the P vectors
    # per context group: the source layers read from it (its forward stops after the deepest), and for a
    # packed group its [1, T_g] position ids (restarting at 0 at each context), else None
    ctx_layers: list[list[int]] = field(default_factory=list)
    ctx_pos: list[torch.Tensor | None] = field(default_factory=list)
    task_counts: list[int] = field(default_factory=list)  # labelled targets per loss slot (train.packed.STAT_SLOTS)

    _TENSORS = ("input_ids", "attention_mask", "labels", "label_rows", "label_cols", "label_targets", "task_ids",
                "inject_rows", "inject_cols")

    def to(self, device, *, one_copy: bool | None = None) -> OracleBatch:
        """The batch's tensors on `device`. On a GPU (or with `one_copy`) they travel as one buffer: a
        step holds some 20-50 small index tensors, and one pinned copy costs the host one allocation and
        one transfer instead of that many (each is dear under a virtualised driver)."""
        device = torch.device(device)
        one_copy = device.type == "cuda" if one_copy is None else one_copy
        tensors = self._tensors()
        if one_copy and tensors:
            flat = torch.cat([t.reshape(-1).to(torch.long) for t in tensors])
            parts = to_device(flat, device).split([t.numel() for t in tensors])
            self._set_tensors([p.view(t.shape).to(t.dtype) for p, t in zip(parts, tensors)])
        else:
            self._set_tensors([to_device(t, device) for t in tensors])
        return self

    def _tensors(self) -> list[torch.Tensor]:
        """Every tensor of the batch, in the order `_set_tensors` takes them back."""
        out = [t for seq in (self.ctx_ids, self.ctx_mask, self.ctx_pos) for t in seq if t is not None]
        out += [getattr(self, n) for n in self._TENSORS if getattr(self, n) is not None]
        return out + [t for g in self.gathers for t in g[2:]]

    def _set_tensors(self, tensors: list[torch.Tensor]) -> None:
        it = iter(tensors)
        self.ctx_ids = [next(it) for _ in self.ctx_ids]
        self.ctx_mask = [None if t is None else next(it) for t in self.ctx_mask]
        self.ctx_pos = [None if t is None else next(it) for t in self.ctx_pos]
        for n in self._TENSORS:
            if getattr(self, n) is not None:
                setattr(self, n, next(it))
        self.gathers = [(layer, g, next(it), next(it), next(it)) for layer, g, *_ in self.gathers]


def source_layers(row) -> int | tuple[int, ...]:
    """A row's source layer, or the tuple of layers of a multi-layer row (its `layers` column)."""
    layers = row.get(LAYERS_COLUMN)
    return tuple(int(x) for x in layers) if layers else int(row["layer"])


def layer_tuple(layer) -> tuple[int, ...]:
    return layer if isinstance(layer, tuple) else (layer,)


def deepest_layer(rows) -> int:
    """The deepest source layer any of the rows reads (all layers of a multi-layer row)."""
    return max(max(layer_tuple(source_layers(r))) for r in rows)


def _distinct_contexts(rows: list[dict]) -> tuple[dict[tuple, int], list[list[int]], list[int]]:
    """Each distinct context once: (its index by ids, the contexts, per context the deepest layer a row reads
    from it)."""
    ctx_index: dict[tuple, int] = {}
    contexts: list[list[int]] = []
    depth: list[int] = []
    for r in rows:
        key = tuple(r["context_input_ids"])
        deepest = max(layer_tuple(source_layers(r)))
        if key not in ctx_index:
            ctx_index[key] = len(contexts)
            contexts.append(list(key))
            depth.append(deepest)
        else:
            c = ctx_index[key]
            depth[c] = max(depth[c], deepest)
    return ctx_index, contexts, depth


def _context_tensors(contexts: list[list[int]], groups: list[list[int]], pad_id: int, context_packing: bool):
    """Per group, its contexts packed into one row or left-padded: (ids, masks, position ids, and per context
    (group, row, offset of its first token))."""
    where: dict[int, tuple[int, int, int]] = {}
    ctx_ids, ctx_mask, ctx_pos = [], [], []
    for g, members in enumerate(groups):
        if context_packing:
            ids_g, pos_g, starts = pack_sequences([contexts[c] for c in members])
            ctx_ids.append(ids_g)
            ctx_mask.append(None)
            ctx_pos.append(pos_g)
            for c, o in zip(members, starts):
                where[c] = (g, 0, o)
            continue
        ids_g, mask_g, off_g = left_pad([contexts[c] for c in members], pad_id)
        ctx_ids.append(ids_g)
        ctx_mask.append(mask_g)
        ctx_pos.append(None)
        for row, c in enumerate(members):
            where[c] = (g, row, off_g[row])
    return ctx_ids, ctx_mask, ctx_pos, where


def collate(rows: list[dict], pad_id: int, *, context_pad_tolerance: float = 0.1,
            context_group_overhead: float = 0, context_packing: bool = False) -> OracleBatch:
    """Rows with the data schema's columns -> OracleBatch. A context shared by several rows runs once.
    Distinct contexts run in groups, each group's forward stopping after the deepest layer its rows read:
    - `context_packing`: contexts concatenated into single rows without padding (position ids restart at
      each context; the model's packed-sequence mask keeps them apart), one per group of deepest layers
      (`pack_by_depth`: one group per depth, or fewer when `context_group_overhead` makes a forward dear);
    - else length groups, left-padded: `chunk_by_length` with `context_pad_tolerance`, or `group_by_cost`
      when `context_group_overhead` (tokens) is set."""
    ctx_index, contexts, depth = _distinct_contexts(rows)
    lengths = [len(c) for c in contexts]
    if context_packing:
        groups = pack_by_depth(depth, lengths, context_group_overhead)
    elif context_group_overhead > 0:
        groups = group_by_cost(lengths, context_group_overhead)
    else:
        groups = chunk_by_length(lengths, context_pad_tolerance)
    ctx_ids, ctx_mask, ctx_pos, where = _context_tensors(contexts, groups, pad_id, context_packing)
    ids, mask, off = left_pad([r["input_ids"] for r in rows], pad_id)
    labels = torch.full_like(ids, IGNORE_INDEX)
    src, inject = [], []
    group_layers: list[set[int]] = [set() for _ in groups]
    for i, r in enumerate(rows):
        layer = source_layers(r)
        n_layers = len(layer_tuple(layer))
        if len(r["positions"]) != len(r["context_positions"]) * n_layers:
            raise ValueError(f"row {i}: {len(r['positions'])} placeholders but {len(r['context_positions'])} context "
                             f"positions x {n_layers} layer(s)")
        labels[i, off[i]:] = torch.tensor(r["labels"], dtype=torch.long)
        g, row, o = where[ctx_index[tuple(r["context_input_ids"])]]
        group_layers[g].update(layer_tuple(layer))
        src.append((layer, g, row, [p + o for p in r["context_positions"]]))
        inject.append([p + off[i] for p in r["positions"]])
    real = int(mask.sum()) + sum(lengths)
    total = ids.numel() + sum(t.numel() for t in ctx_ids)
    label_rows, label_cols = (labels[:, 1:] != IGNORE_INDEX).nonzero(as_tuple=True)
    tasks = [str(r.get("task", "")) for r in rows]
    task_ids = [TASKS.index(t) if t in TASKS else len(TASKS) for t in tasks]
    task_counts = [0] * (len(TASKS) + 2)
    for k, n in zip(task_ids, (labels[:, 1:] != IGNORE_INDEX).sum(1).tolist()):
        task_counts[k] += n
    flat_inject = [(i, p) for i, ps in enumerate(inject) for p in ps]
    return OracleBatch(
        ctx_ids=ctx_ids, ctx_mask=ctx_mask, layers=sorted({x for s in src for x in layer_tuple(s[0])}), src=src,
        input_ids=ids, attention_mask=mask, labels=labels, inject_positions=inject,
        tasks=tasks, task_ids=torch.tensor(task_ids), task_counts=task_counts,
        real_tokens=int(mask.sum()), pad_tokens=total - real,
        total_tokens=total, label_tokens=len(label_rows), context_tokens=sum(lengths),
        label_rows=label_rows, label_cols=label_cols, label_targets=labels[:, 1:][label_rows, label_cols],
        inject_rows=torch.tensor([i for i, _ in flat_inject], dtype=torch.long),
        inject_cols=torch.tensor([p for _, p in flat_inject], dtype=torch.long),
        inject_bounds=(max(i for i, _ in flat_inject), max(p for _, p in flat_inject)) if flat_inject else (0, 0),
        gathers=_gathers(src), ctx_layers=[sorted(x) for x in group_layers], ctx_pos=ctx_pos,
    )


def _gathers(src) -> list[tuple]:
    """Per (layer, context group): the rows and positions to read from its activations and the slots they
    fill in the flat, example-major list of injected vectors."""
    parts: dict[tuple[int, int], list[list[int]]] = {}
    slot = 0
    for layers, g, row, positions in src:
        for layer in layer_tuple(layers):  # a multi-layer example's placeholders are layer-major
            r, c, d = parts.setdefault((layer, g), [[], [], []])
            for p in positions:
                r.append(row)
                c.append(p)
                d.append(slot)
                slot += 1
    as_t = lambda x: torch.tensor(x, dtype=torch.long)  # noqa: E731
    return [(layer, g, as_t(r), as_t(c), as_t(d)) for (layer, g), (r, c, d) in sorted(parts.items())]
