"""Summaries of a built mixture: counts per task/variant/layer, K and J histograms, decoded examples."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from ..prompt import prompt_length

_J_RE = re.compile(r"(?:previous|next) (\d+) tokens")
_BINS = [(1, 1), (2, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, 10**9)]


def _hist(values) -> dict[str, int]:
    values = np.asarray(values)
    out = {}
    for lo, hi in _BINS:
        n = int(((values >= lo) & (values <= hi)).sum())
        if n:
            out[f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f">{lo - 1}")] = n
    return out


def summarize(ds) -> dict:
    """Counts and histograms of one split (a datasets.Dataset), read column-wise from Arrow."""
    import pyarrow.compute as pc

    t = ds.data.table if hasattr(ds.data, "table") else ds.data
    task, ds_name, var = (t.column(c).to_pylist() for c in ("task", "dataset", "variant"))
    layer = t.column("layer").to_pylist()
    k = pc.list_value_length(t.column("positions")).to_numpy(zero_copy_only=False)
    js = [int(m.group(1)) for q, tk in zip(t.column("question").to_pylist(), task)
          if tk == "context_prediction" and (m := _J_RE.search(q))]
    ans = Counter(a for a, tk in zip(t.column("target").to_pylist(), task) if tk == "classification")
    tokens = {c: int(pc.sum(pc.list_value_length(t.column(c))).as_py() or 0)
              for c in ("context_input_ids", "input_ids")}
    return {
        "examples": len(task),
        "per_task": dict(Counter(task)),
        "per_task_variant": {f"{a}/{b}": n for (a, b), n in sorted(Counter(zip(task, var)).items())},
        "per_dataset": dict(sorted(Counter(zip(task, ds_name)).items())),
        "per_layer": dict(sorted(Counter(layer).items())),
        "K": _hist(k) if len(k) else {},
        "J": _hist(js) if js else {},
        "classification_answers": dict(ans),
        # what the target model reads (contexts) and what the oracle reads (prompt + answer)
        "tokens": {"context": tokens["context_input_ids"], "oracle": tokens["input_ids"],
                   "total": tokens["context_input_ids"] + tokens["input_ids"]},
    }


def render_example(row: dict, tokenizer, max_context: int = 400) -> str:
    """Context with [[source tokens]] marked, and the oracle prompt with placeholders and answer span."""
    ctx, pos = row["context_input_ids"], set(row["context_positions"])
    start = max(0, min(pos) - max_context) if pos else 0
    parts = []
    for i in range(start, len(ctx)):
        piece = tokenizer.decode([ctx[i]])
        parts.append(f"[[{piece}]]" if i in pos else piece)
    oracle, opos = row["input_ids"], set(row["positions"])
    labels = row["labels"]
    first_label = prompt_length(labels)
    o = []
    for i, tid in enumerate(oracle):
        piece = tokenizer.decode([tid])
        if i == first_label:
            o.append("<<ANSWER>>")
        o.append("⟨?⟩" if i in opos else piece)
    return (f"--- {row['split']} | {row['task']} / {row['dataset']} | variant={row['variant']} | layer={row['layer']} | "
            f"K={len(row['positions'])}\n"
            f"context ({len(ctx)} tokens{', shown from ' + str(start) if start else ''}):\n{''.join(parts)}\n"
            f"oracle input ({len(oracle)} tokens, labels from <<ANSWER>>):\n{''.join(o)}\n"
            f"target: {row['target']!r}")
