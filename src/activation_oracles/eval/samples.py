"""A few held-out questions per task family, answered by the oracle next to the true answer."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..steering import generate_answers
from .classification import prompt_of, source_vectors


@dataclass
class Sample:
    task: str
    dataset: str
    context: str  # the source tokens, with the read positions marked ⟦...⟧
    question: str
    answer: str
    target: str

    def to_dict(self) -> dict:
        return asdict(self)


def mark_positions(tokenizer, ids, positions, *, window: int = 40) -> str:
    """Decoded context around the read positions, the read span between ⟦ and ⟧."""
    lo, hi = min(positions), max(positions)
    start = max(0, lo - window)
    before = tokenizer.decode(list(ids[start:lo]), skip_special_tokens=True)
    inside = tokenizer.decode(list(ids[lo : hi + 1]), skip_special_tokens=False)
    return ("…" if start else "") + before + "⟦" + inside + "⟧"


def pick_rows(test, per_task: int = 1, seed: int = 0, datasets=None) -> list[int]:
    """Row indices of `per_task` random test rows per family; classification rows only from `datasets`
    (the evaluated ones) when given, so the sample shows a task the scores above cover."""
    tasks, names = test["task"], test["dataset"]
    rng = np.random.default_rng(seed)
    out = []
    for t in ("classification", "spqa", "context_prediction"):
        idx = [i for i, (x, d) in enumerate(zip(tasks, names))
               if x == t and (t != "classification" or not datasets or d in datasets)]
        if idx:
            out += sorted(rng.choice(idx, size=min(per_task, len(idx)), replace=False).tolist())
    return out


def sample_answers(model, tokenizer, test, *, hook_layer: int = 1, per_task: int = 1, seed: int = 0,
                   max_new_tokens: int = 30, datasets=None) -> list[Sample]:
    rows = [test[i] for i in pick_rows(test, per_task, seed, datasets)]
    if not rows:
        return []
    vecs = source_vectors(model, rows, pad_id=tokenizer.pad_token_id)
    texts = generate_answers(model, tokenizer, [prompt_of(r) for r in rows], [list(r["positions"]) for r in rows],
                             vecs, hook_layer=hook_layer, max_new_tokens=max_new_tokens)
    return [Sample(r["task"], r["dataset"], mark_positions(tokenizer, r["context_input_ids"], r["context_positions"]),
                   r["question"], t, r["target"]) for r, t in zip(rows, texts)]


def samples_markdown(samples: list[Sample]) -> str:
    lines = ["## Sample questions and answers (held-out)", ""]
    for s in samples:
        ctx = s.context.replace("\n", " ")
        lines += [f"**{s.task} / {s.dataset}**", "", f"- context: {ctx}", f"- question: {s.question}",
                  f"- oracle: {s.answer}", f"- truth: {s.target}", ""]
    return "\n".join(lines)
