"""Held-out context prediction: does the oracle's first predicted token match the true next (or
previous) token of the text it reads?

For each held-out context-prediction row (K source positions, J tokens to predict before or after
them) the oracle's greedy first answer token is compared with the first token of the true answer;
the untrained oracle (adapter off, same injection) is the baseline. One forward per row, no decoding.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from ..prompt import IGNORE_INDEX
from ..steering import next_token_logits
from .classification import MethodScore, SourceCache, adapter_off, prompt_of

DIRECTIONS = {"future": "next", "past": "previous"}
CP_METHODS = ("oracle", "untrained")


def first_answer_token(row) -> int:
    """The first labelled token: what the oracle must say first."""
    return next(int(t) for t in row["labels"] if t != IGNORE_INDEX)


def cp_rows(test, *, per_direction: int, seed: int = 0) -> dict[str, list[int]]:
    """Indices of up to `per_direction` seeded-random context-prediction test rows per direction."""
    cols = test.select_columns(["task", "variant"])
    idx: dict[str, list[int]] = {d: [] for d in DIRECTIONS}
    for i, r in enumerate(cols):
        if r["task"] == "context_prediction" and r["variant"] in idx:
            idx[r["variant"]].append(i)
    rng = np.random.default_rng(seed)
    return {d: sorted(rng.choice(v, size=min(per_direction, len(v)), replace=False).tolist())
            for d, v in idx.items() if v}


@torch.no_grad()
def evaluate_context_prediction(model, tokenizer, test, *, hook_layer: int = 1, per_direction: int = 100,
                                batch_size: int = 32, seed: int = 0, progress: bool = True,
                                cache: SourceCache | None = None) -> dict[str, dict[str, MethodScore]]:
    """{"future"|"past": {"oracle"|"untrained": MethodScore}}: first-token matches per direction."""
    cache = cache or SourceCache(model, pad_id=tokenizer.pad_token_id, batch_size=batch_size)
    has_adapter = hasattr(model, "peft_config")
    out: dict[str, dict[str, MethodScore]] = {}
    groups = cp_rows(test, per_direction=per_direction, seed=seed)
    for direction, idx in tqdm(groups.items(), desc="eval context prediction", disable=not progress):
        rows = [test[i] for i in idx]
        vecs = cache.vectors(rows)
        truth = torch.tensor([first_answer_token(r) for r in rows])
        out[direction] = {}
        for method in CP_METHODS:
            hits = 0
            with adapter_off(model, method == "untrained" and has_adapter):
                for s in range(0, len(rows), batch_size):
                    chunk = rows[s : s + batch_size]
                    logits = next_token_logits(model, tokenizer, [prompt_of(r) for r in chunk],
                                               [list(r["positions"]) for r in chunk], vecs[s : s + batch_size],
                                               hook_layer=hook_layer)
                    hits += int((logits.argmax(-1).cpu() == truth[s : s + batch_size]).sum())
            out[direction][method] = MethodScore(correct=hits, formatted=len(rows), n=len(rows))
    return out
