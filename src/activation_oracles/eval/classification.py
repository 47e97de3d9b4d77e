"""Held-out yes/no classification: the oracle against its three baselines.

For each (dataset, variant) group of test rows:
- ``oracle``: the trained oracle, activations injected;
- ``untrained``: the same injection into the base model with the adapter off (Patchscopes-style);
- ``no_injection``: the trained oracle with the placeholders left alone (what priors alone answer);
- ``probe``: logistic regression on the very activations injected, trained on the train split.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..hooks import collect_activations
from ..models import model_device
from ..prompt import prompt_length
from ..steering import choose_answers, generate_answers, left_pad
from .probe import pool, probe_predictions
from .scoring import score, wilson_interval

METHODS = ("oracle", "untrained", "no_injection", "probe")
VARIANTS = ("single", "multi")


@dataclass
class MethodScore:
    correct: int = 0
    formatted: int = 0
    n: int = 0

    @property
    def acc(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        lo, hi = wilson_interval(self.correct, self.n)
        return {"acc": self.acc, "ci_low": lo, "ci_high": hi, "format_acc": self.formatted / self.n if self.n else None,
                "correct": self.correct, "n": self.n}


@dataclass
class GroupResult:
    dataset: str
    variant: str
    n: int
    scores: dict[str, MethodScore] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scores"] = {m: s.to_dict() for m, s in self.scores.items()}
        return d


def variant_of(row) -> str:
    return "single" if len(row["positions"]) == 1 else "multi"


def group_rows(ds, *, tasks=None, max_per_group: int | None = None, seed: int = 0) -> dict[tuple[str, str], list[int]]:
    """Indices of classification rows with a yes/no target, per (dataset, single|multi)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    cols = ds.select_columns(["task", "dataset", "positions", "target"])
    for i, r in enumerate(cols):
        if r["task"] != "classification" or (tasks and r["dataset"] not in tasks):
            continue
        if r["target"].strip().lower() not in ("yes", "no"):
            continue
        groups[(r["dataset"], variant_of(r))].append(i)
    rng = np.random.default_rng(seed)
    out = {}
    for k, idx in sorted(groups.items()):
        if max_per_group and len(idx) > max_per_group:
            idx = sorted(rng.choice(idx, size=max_per_group, replace=False).tolist())
        out[k] = idx
    return out


@torch.no_grad()
def source_vectors(model, rows, *, batch_size: int = 32, pad_id: int = 0) -> list[torch.Tensor]:
    """Each row's [K, D] source activations (base weights, adapter off), float32 on CPU."""
    out: list[torch.Tensor] = []
    dev = model_device(model)
    for s in range(0, len(rows), batch_size):
        chunk = rows[s : s + batch_size]
        ids, mask, offs = left_pad([list(r["context_input_ids"]) for r in chunk], pad_id)
        acts = collect_activations(model, ids.to(dev), mask.to(dev), layers=sorted({r["layer"] for r in chunk}))
        for j, r in enumerate(chunk):
            pos = torch.tensor([offs[j] + p for p in r["context_positions"]], device=dev)
            out.append(acts[r["layer"]][j, pos].float().cpu())
    return out


def prompt_of(row) -> list[int]:
    return list(row["input_ids"][: prompt_length(row["labels"])])


SCORINGS = ("choice", "generate")


def answers(model, tokenizer, rows, vectors, *, hook_layer: int, adapter: bool, steer: bool,
            batch_size: int = 32, max_new_tokens: int = 3, scoring: str = "choice") -> list[tuple[bool, bool]]:
    """(format-correct, correct) per row. `adapter=False` turns a PEFT adapter off, `steer=False` skips
    injection. `scoring="choice"`: Yes vs No at the first answer token (one forward; format-correct =
    greedy would start with Yes or No); `"generate"`: greedy text, first word compared."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring={scoring!r}: use one of {SCORINGS}")
    off = contextlib.nullcontext()
    if not adapter and hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        off = model.disable_adapter()
    out: list[tuple[bool, bool]] = []
    with off:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            args = (model, tokenizer, [prompt_of(r) for r in chunk], [list(r["positions"]) for r in chunk],
                    vectors[s : s + batch_size] if steer else None)
            if scoring == "choice":
                picks, fmt = choose_answers(*args, hook_layer=hook_layer)
                out += [(f, p.lower() == r["target"].strip().lower()) for p, f, r in zip(picks, fmt, chunk)]
            else:
                texts = generate_answers(*args, hook_layer=hook_layer, max_new_tokens=max_new_tokens)
                out += [score(t, r["target"]) for t, r in zip(texts, chunk)]
    return out


def probe_key(row) -> tuple:
    # The class the question asks about, so that "yes" means one thing per probe.
    return (row["layer"], row.get("label") or row["question"])


def evaluate_classification(
    model,
    tokenizer,
    data,
    *,
    hook_layer: int = 1,
    tasks=None,
    methods=METHODS,
    max_per_group: int | None = 200,
    max_probe_train: int = 300,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
    scoring: str = "choice",
) -> list[GroupResult]:
    """Score every method on every (dataset, variant) group of `data["test"]`."""
    test = data["test"]
    train = data["train"] if "train" in data else None
    pad = tokenizer.pad_token_id
    groups = group_rows(test, tasks=tasks, max_per_group=max_per_group, seed=seed)
    if not groups:
        raise ValueError("data['test'] holds no classification rows with Yes/No targets to evaluate"
                         + (f" for tasks={list(tasks)}" if tasks else ""))
    train_groups = group_rows(train, tasks=tasks, max_per_group=max_probe_train, seed=seed) if train is not None else {}
    results = []
    bar = tqdm(groups.items(), desc="eval", disable=not progress)
    has_adapter = hasattr(model, "peft_config")
    for (dataset, variant), idx in bar:
        bar.set_postfix_str(f"{dataset}/{variant}")
        rows = [test[i] for i in idx]
        vecs = source_vectors(model, rows, batch_size=batch_size, pad_id=pad)
        res = GroupResult(dataset, variant, len(rows))
        settings = {"oracle": (True, True), "untrained": (False, True), "no_injection": (True, False)}
        for m in methods:
            if m == "probe":
                continue
            adapter, steer = settings[m]
            got = answers(model, tokenizer, rows, vecs, hook_layer=hook_layer, adapter=adapter and has_adapter,
                          steer=steer, batch_size=batch_size, scoring=scoring)
            res.scores[m] = MethodScore(correct=sum(c for _, c in got), formatted=sum(f for f, _ in got), n=len(rows))
        if "probe" in methods and (dataset, variant) in train_groups:
            tr_rows = [train[i] for i in train_groups[(dataset, variant)]]
            tr_vecs = source_vectors(model, tr_rows, batch_size=batch_size, pad_id=pad)
            y = np.array([r["target"].strip().lower() == "yes" for r in tr_rows], dtype=np.int64)
            pred = probe_predictions(pool(tr_vecs), y, [probe_key(r) for r in tr_rows],
                                     pool(vecs), [probe_key(r) for r in rows])
            truth = np.array([r["target"].strip().lower() == "yes" for r in rows], dtype=np.int64)
            res.scores["probe"] = MethodScore(correct=int((pred == truth).sum()), formatted=len(rows), n=len(rows))
        results.append(res)
    return results


def summarize(results: list[GroupResult], *, probe_threshold: float = 0.75, bar_tasks=None) -> dict:
    """Averages over the groups whose linear probe reaches `probe_threshold` (the demo's bar), among
    the datasets in `bar_tasks` (default: all)."""
    eligible = [r for r in results if "probe" in r.scores and r.scores["probe"].acc >= probe_threshold
                and (bar_tasks is None or r.dataset in bar_tasks)]
    out = {"probe_threshold": probe_threshold, "eligible_groups": [f"{r.dataset}/{r.variant}" for r in eligible],
           "bar_tasks": sorted(bar_tasks) if bar_tasks is not None else "all"}
    for m in METHODS:
        vals = [r.scores[m].acc for r in eligible if m in r.scores]
        out[f"mean_{m}"] = float(np.mean(vals)) if vals else None
        allv = [r.scores[m].acc for r in results if m in r.scores]
        out[f"mean_all_{m}"] = float(np.mean(allv)) if allv else None
    if eligible and out["mean_oracle"] is not None:
        o = out["mean_oracle"]
        out["oracle_minus_untrained"] = o - out["mean_untrained"] if out["mean_untrained"] is not None else None
        out["oracle_minus_no_injection"] = o - out["mean_no_injection"] if out["mean_no_injection"] is not None else None
        out["probe_minus_oracle"] = out["mean_probe"] - o if out["mean_probe"] is not None else None
        out["bar"] = {
            "beats_untrained_by_20": bool(out["oracle_minus_untrained"] is not None and out["oracle_minus_untrained"] >= 0.20),
            "beats_no_injection_by_15": bool(out["oracle_minus_no_injection"] is not None
                                             and out["oracle_minus_no_injection"] >= 0.15),
            "within_10_of_probe": bool(out["probe_minus_oracle"] is not None and out["probe_minus_oracle"] <= 0.10),
        }
        out["bar"]["met"] = all(out["bar"].values())
    return out
