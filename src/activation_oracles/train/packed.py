"""The packed batch: a step's contexts as one unpadded row, its oracle prompts as another, and every index
the step needs as flat tensors that travel to the device in one buffer.

Why: on a GPU the host must issue every op of a step, and a padded step issues them per context group and
reads values back to build masks. Packed, a micro-batch is one context forward (to the deepest source
layer any of its rows reads) and one oracle forward whatever its mix of lengths and depths; the attention
masks are built on the device from sequence ids; the gathers, the injection and the loss use index tensors
made here on the host. With `shapes` (ShapeBuckets) every size is rounded up to a bucket, so a run sees a
handful of distinct shapes: what compiled kernels and captured CUDA graphs need.

Sequences in a packed row are kept apart by the block-diagonal causal mask and by position ids that
restart at 0 for each; the row's tail beyond the real tokens is padding that forms its own sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..data.schema import TASKS
from ..prompt import IGNORE_INDEX
from .batching import layer_tuple, source_layers, to_device

DUMMY_TASK = len(TASKS) + 1  # loss slot of the padding targets (len(TASKS): rows of any other task)
STAT_SLOTS = len(TASKS) + 2


@dataclass
class PackedBatch:
    """One micro-batch, packed. Tensors (host until `to`):
    ctx_ids/ctx_pos [1, Tc], ctx_seq [Tc]; ids/pos [1, To], seq [To]: the two rows, their position ids and
    sequence ids; src_layer/src_col [P]: where each placeholder's vector is read (index into `layers`,
    position in the context row); inject_col [P]: the placeholder's position in the oracle row; inject_on
    [P]: 1.0, or 0.0 for padding slots (their vectors are zeroed, so nothing is added); label_col [N]: the
    position whose hidden state predicts label_target [N]; label_task [N] (index into TASKS; DUMMY_TASK for
    padding slots); label_weight [N]: the loss weight (`scale`, 0 for padding slots)."""

    tensors: dict[str, torch.Tensor]
    layers: tuple[int, ...]  # source layers, ascending: the context forward runs to the last
    key: tuple  # everything that decides the shapes (a captured graph serves one key)
    real_tokens: int  # oracle prompt tokens
    context_tokens: int  # distinct context tokens
    pad_tokens: int
    total_tokens: int
    label_tokens: int
    task_counts: list[int] = field(default_factory=list)  # labelled targets per loss slot

    def __getattr__(self, name):
        try:
            return self.__dict__["tensors"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def bounds(self) -> tuple[int, int]:
        """(max row, max column) of the injection: the oracle row's last position."""
        return 0, self.tensors["ids"].shape[1] - 1

    def to(self, device) -> PackedBatch:
        """Every tensor on `device`, from one host buffer (pinned on a GPU): one copy per step."""
        flat, layout = pack_buffer(self.tensors)
        self.tensors = unpack_buffer(to_device(flat, device), layout)
        return self

    def host_buffer(self) -> tuple[torch.Tensor, list]:
        """The batch's one host buffer and its layout (what `to` sends; a captured step copies it into its
        own device buffer)."""
        return pack_buffer(self.tensors)


def pack_buffer(tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list]:
    """The tensors' bytes end to end in one uint8 tensor, grouped by dtype (each group 8-byte aligned), and
    the layout `unpack_buffer` reads them back with: [(dtype, byte offset, [(name, shape, numel), ...])]."""
    groups: dict[torch.dtype, list] = {}
    for name, t in tensors.items():
        groups.setdefault(t.dtype, []).append((name, t))
    parts, layout, offset = [], [], 0
    for dtype, members in groups.items():
        flat = np.concatenate([t.contiguous().view(-1).numpy() for _, t in members]).view(np.uint8)
        pad = -flat.size % 8
        parts += [flat, np.zeros(pad, np.uint8)] if pad else [flat]
        layout.append((dtype, offset, flat.size, [(n, tuple(t.shape), t.numel()) for n, t in members]))
        offset += flat.size + pad
    return torch.from_numpy(np.concatenate(parts)), layout


def unpack_buffer(flat: torch.Tensor, layout) -> dict[str, torch.Tensor]:
    """The tensors of `pack_buffer`, as views into `flat` (wherever it now lives): a few ops per dtype."""
    out = {}
    for dtype, offset, nbytes, members in layout:
        views = flat[offset : offset + nbytes].view(dtype).split([n for _, _, n in members])
        for (name, shape, _), v in zip(members, views):
            out[name] = v if len(shape) == 1 else v.view(shape)
    return out


def _round_up(n: int, buckets) -> int:
    return next((b for b in buckets if b >= n), n)


def collate_packed(rows: list[dict], *, scale: float = 1.0, shapes=None, pad_id: int = 0) -> PackedBatch:
    """Rows with the data schema's columns -> PackedBatch. A context shared by several rows runs once.
    `scale` is each labelled target's loss weight (the trainer's world / labelled targets of the global
    batch). `shapes` (ShapeBuckets): round every size up to its bucket and read the run's source layers
    (fixed) instead of the batch's."""
    ctx_start: dict[tuple, int] = {}
    contexts: list[list[int]] = []
    for r in rows:
        key = tuple(r["context_input_ids"])
        if key not in ctx_start:
            ctx_start[key] = sum(map(len, contexts))
            contexts.append(r["context_input_ids"])
    prompts = [r["input_ids"] for r in rows]
    starts = np.cumsum([0] + [len(x) for x in prompts])
    src_layer: list[int] = []  # per placeholder, example-major (a multi-layer row: layer-major)
    src_col: list[int] = []
    inject: list[int] = []
    tasks: list[int] = []
    for i, r in enumerate(rows):
        layers = layer_tuple(source_layers(r))
        cpos = r["context_positions"]
        if len(r["positions"]) != len(cpos) * len(layers):
            raise ValueError(f"row {i}: {len(r['positions'])} placeholders but {len(cpos)} context "
                             f"positions x {len(layers)} layer(s)")
        c0 = ctx_start[tuple(r["context_input_ids"])]
        for layer in layers:
            src_layer += [layer] * len(cpos)
            src_col += [c0 + p for p in cpos]
        inject += [int(starts[i]) + p for p in r["positions"]]
        tasks.append(TASKS.index(r["task"]) if r.get("task") in TASKS else len(TASKS))
    labels = np.concatenate([np.asarray(r["labels"], dtype=np.int64) for r in rows])
    hit = labels != IGNORE_INDEX
    hit[starts[:-1]] = False  # a prompt's first token is never a target
    label_target = labels[hit]
    label_col = np.flatnonzero(hit) - 1  # the hidden state before a target predicts it
    label_task = np.repeat(np.asarray(tasks, dtype=np.int64), np.diff(starts))[hit]
    layers = tuple(sorted(set(src_layer)))
    if shapes is not None:
        missing = set(layers) - set(shapes.layers)
        if missing:
            raise ValueError(f"rows read source layers {sorted(missing)} outside the run's {list(shapes.layers)}")
        layers = tuple(shapes.layers)
    context, real = sum(map(len, contexts)), int(starts[-1])
    real_p, real_n = len(src_layer), len(label_col)
    if shapes is not None:  # (the oracle row keeps one padding position at least: padding slots point there)
        tc, to = shapes.round("context", context), shapes.round("oracle", real + 1)
        p, n = shapes.round("placeholders", real_p), shapes.round("labels", real_n)
    else:
        tc, to, p, n = context, real + 1, real_p, real_n
    dummy = real  # the oracle row's first padding position
    where = {layer: k for k, layer in enumerate(layers)}
    ctx_seq = np.repeat(np.arange(len(contexts)), [len(c) for c in contexts])
    seq = np.repeat(np.arange(len(rows)), np.diff(starts))
    ctx_ids, ctx_pos, ctx_seq = _pad_row(np.concatenate(contexts), ctx_seq, tc, pad_id)
    ids, pos, seq = _pad_row(np.concatenate(prompts), seq, to, pad_id)
    t = {  # int64 first, then float32 (pack_buffer groups by dtype in this order)
        "ctx_ids": ctx_ids[None], "ctx_pos": ctx_pos[None], "ctx_seq": ctx_seq,
        "ids": ids[None], "pos": pos[None], "seq": seq,
        "src_layer": _padded([where[x] for x in src_layer], p, 0),
        "src_col": _padded(src_col, p, 0),
        "inject_col": _padded(inject, p, dummy),
        "label_col": _padded(label_col, n, dummy),
        "label_target": _padded(label_target, n, 0),
        "label_task": _padded(label_task, n, DUMMY_TASK),
        "inject_on": _padded([1.0] * real_p, p, 0.0, np.float32),
        "label_weight": _padded([float(scale)] * real_n, n, 0.0, np.float32),
    }
    task_counts = np.bincount(label_task, minlength=STAT_SLOTS).tolist()
    return PackedBatch(tensors={k: torch.from_numpy(v) for k, v in t.items()}, layers=layers,
                       key=(tc, to, p, n, layers), real_tokens=real, context_tokens=context,
                       pad_tokens=tc + to - real - context, total_tokens=tc + to, label_tokens=real_n,
                       task_counts=task_counts)


def _padded(values, n: int, fill, dtype=np.int64) -> np.ndarray:
    out = np.full(n, fill, dtype=dtype)
    out[: len(values)] = values
    return out


def _pad_row(ids: np.ndarray, seq: np.ndarray, width: int, pad_id: int):
    """(ids, position ids, sequence ids) of a packed row `width` long: positions restart at each sequence;
    the padding tail is one more sequence, so every position attends to something and no real token to it."""
    extra = width - len(ids)
    last = int(seq[-1]) + 1 if len(seq) else 0
    seq = np.concatenate([seq, np.full(extra, last)]).astype(np.int64)
    starts = np.flatnonzero(np.diff(seq, prepend=-1))
    pos = np.arange(width) - np.repeat(starts, np.diff(np.append(starts, width)))
    return np.concatenate([ids, np.full(extra, pad_id)]).astype(np.int64), pos.astype(np.int64), seq
