"""Held-out yes/no classification: the oracle against its three baselines.

For each (dataset, variant) group of test rows:
- ``oracle``: the trained oracle, activations injected;
- ``untrained``: the same injection into the base model with the adapter off (Patchscopes-style);
- ``no_injection``: the trained oracle with the placeholders left alone (what priors alone answer);
- ``probe``: logistic regression on the very activations injected, trained on the train split;
- ``text`` (when asked for): the base model (adapter off) reads the tokens the oracle reads, decoded back to
  text, and is asked the same question. What the model says when it sees the input itself: a trained
  oracle far above it reads something the model does not say, and a held-out task where it is at chance is
  one where the model does not answer the question even about the text.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from ..hooks import collect_activations
from ..intervals import paired_difference_interval, wilson_interval
from ..models import model_device
from ..prompt import chat_ids, prompt_length
from ..scoring import score
from ..steering import choice_probs, generate_answers, left_pad
from .calibration import expected_calibration_error
from .probe import pool, probe_predictions

METHODS = ("oracle", "untrained", "no_injection", "probe")
ALL_METHODS = (*METHODS, "text")
VARIANTS = ("single", "multi", "full")


@dataclass
class MethodScore:
    correct: int = 0
    formatted: int = 0
    n: int = 0
    # forced-choice scoring: P(Yes) of every answer and whether Yes was right (for calibration)
    p_yes: list[float] = field(default_factory=list)
    yes: list[int] = field(default_factory=list)
    # 1/0 per question, in the group's question order (the same for every method): paired comparisons
    hits: list[int] = field(default_factory=list)

    @property
    def acc(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        lo, hi = wilson_interval(self.correct, self.n)
        d = {"acc": self.acc, "ci_low": lo, "ci_high": hi, "format_acc": self.formatted / self.n if self.n else None,
             "correct": self.correct, "n": self.n}
        if self.p_yes:
            d["ece"] = expected_calibration_error(self.p_yes, self.yes)
        if self.hits:
            d["hits"] = "".join(map(str, self.hits))
        return d


@dataclass
class GroupResult:
    dataset: str
    variant: str
    n: int
    scores: dict[str, MethodScore] = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = {"dataset": self.dataset, "variant": self.variant, "n": self.n}
        d["scores"] = {m: s.to_dict() for m, s in self.scores.items()}
        return d


def variant_of(row) -> str:
    """The row's input variant (single token, a window, or the full prompt); older data without the
    `full` variant is told apart by its number of positions."""
    v = row.get("variant")
    if v in VARIANTS:
        return v
    return "single" if len(row["positions"]) == 1 else "multi"


def group_rows(ds, *, tasks=None, max_per_group: int | None = None, seed: int = 0) -> dict[tuple[str, str], list[int]]:
    """Indices of classification rows with a yes/no target, per (dataset, variant)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    names = [c for c in ("task", "dataset", "positions", "target", "variant") if c in ds.column_names]
    cols = ds.select_columns(names)
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


class SourceCache:
    """Source activations (base weights, adapter off) per distinct (context, layer), collected once for
    every group and method that reads them: the variants of a task and its probe share their contexts.
    Contexts run in length-sorted batches, so padding stays small."""

    def __init__(self, model, *, pad_id: int, batch_size: int = 32):
        self.model, self.pad_id, self.batch_size = model, pad_id, batch_size
        self.acts: dict[tuple[tuple[int, ...], int], torch.Tensor] = {}

    @staticmethod
    def _key(row) -> tuple[tuple[int, ...], int]:
        return tuple(int(t) for t in row["context_input_ids"]), int(row["layer"])

    @torch.no_grad()
    def fill(self, rows) -> None:
        todo = sorted({self._key(r) for r in rows} - set(self.acts), key=lambda k: (k[1], len(k[0])))
        dev = model_device(self.model)
        for s in range(0, len(todo), self.batch_size):
            chunk = todo[s : s + self.batch_size]
            ids, mask, offs = left_pad([list(c) for c, _ in chunk], self.pad_id)
            acts = collect_activations(self.model, ids.to(dev), mask.to(dev), layers=sorted({lay for _, lay in chunk}))
            for j, (ctx, layer) in enumerate(chunk):
                self.acts[(ctx, layer)] = acts[layer][j, offs[j]:].float().cpu()

    def vectors(self, rows) -> list[torch.Tensor]:
        """Each row's [K, D] vectors at its context positions, float32 on CPU."""
        self.fill(rows)
        return [self.acts[self._key(r)][list(r["context_positions"])] for r in rows]


def source_vectors(model, rows, *, batch_size: int = 32, pad_id: int = 0) -> list[torch.Tensor]:
    """Each row's [K, D] source activations (base weights, adapter off), float32 on CPU."""
    return SourceCache(model, pad_id=pad_id, batch_size=batch_size).vectors(rows)


def prompt_of(row) -> list[int]:
    return list(row["input_ids"][: prompt_length(row["labels"])])


def ask_about_text(tokenizer, text: str, question: str) -> list[int]:
    """A question about a text the model reads itself: one user turn, ready for the answer."""
    return chat_ids(tokenizer, [{"role": "user", "content": f"Text: {text}\n{question}"}], add_generation_prompt=True)


def text_prompt(tokenizer, row) -> list[int]:
    """The `text` baseline's prompt: the row's source tokens as text (special tokens dropped) and its question."""
    ids = np.asarray(row["context_input_ids"])[np.asarray(row["context_positions"], dtype=np.int64)]
    return ask_about_text(tokenizer, tokenizer.decode(ids.tolist(), skip_special_tokens=True).strip(), row["question"])


SCORINGS = ("choice", "generate")
YES_NO = ("Yes", "No")


def adapter_off(model, off: bool = True):
    """The PEFT adapter switched off while active (the untrained oracle); a no-op when `off` is false or
    the model has no adapter."""
    if off and hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        return model.disable_adapter()
    return contextlib.nullcontext()


def answers(model, tokenizer, rows, vectors, *, hook_layer: int, adapter: bool, steer: bool,
            batch_size: int = 32, max_new_tokens: int = 3, scoring: str = "choice",
            prompts: list[list[int]] | None = None) -> MethodScore:
    """Scores of one method on `rows`. `adapter=False` turns a PEFT adapter off, `steer=False` skips
    injection; `prompts` replace the rows' oracle prompts (no placeholders, so no injection).
    `scoring="choice"`: Yes vs No at the first answer token (one forward; format-correct =
    greedy would start with Yes or No; P(Yes) kept for calibration); `"generate"`: greedy text, first word
    compared."""
    if scoring not in SCORINGS:
        raise ValueError(f"scoring={scoring!r}: use one of {SCORINGS}")
    out = MethodScore(n=len(rows))
    with adapter_off(model, not adapter):
        for s in range(0, len(rows), batch_size):
            chunk = rows[s : s + batch_size]
            if prompts is None:
                args = (model, tokenizer, [prompt_of(r) for r in chunk], [list(r["positions"]) for r in chunk],
                        vectors[s : s + batch_size] if steer else None)
            else:
                args = (model, tokenizer, prompts[s : s + batch_size], [[] for _ in chunk], None)
            if scoring == "choice":
                sc = choice_probs(*args, choices=YES_NO, hook_layer=hook_layer, method="first_token")
                p_yes = sc.probs[:, 0].float().cpu().tolist()
                yes = [int(r["target"].strip().lower() == "yes") for r in chunk]
                out.hits += [int((p >= 0.5) == y) for p, y in zip(p_yes, yes)]
                out.formatted += sum(sc.formatted)
                out.p_yes += p_yes
                out.yes += yes
            else:
                texts = generate_answers(*args, hook_layer=hook_layer, max_new_tokens=max_new_tokens)
                got = [score(t, r["target"]) for t, r in zip(texts, chunk)]
                out.formatted += sum(f for f, _ in got)
                out.hits += [int(c) for _, c in got]
    out.correct = sum(out.hits)
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
    max_per_task: dict[str, int] | None = None,
) -> list[GroupResult]:
    """Score every method (of ALL_METHODS) on every (dataset, variant) group of `data["test"]`. `max_per_task`
    caps the questions of some datasets below `max_per_group` (e.g. held-out tasks, where fewer suffice)."""
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; use some of {', '.join(ALL_METHODS)}")
    test = data["test"]
    train = data["train"] if "train" in data else None
    pad = tokenizer.pad_token_id
    groups = group_rows(test, tasks=tasks, max_per_group=max_per_group, seed=seed)
    if not groups:
        raise ValueError("data['test'] holds no classification rows with Yes/No targets to evaluate"
                         + (f" for tasks={list(tasks)}" if tasks else ""))
    train_groups = group_rows(train, tasks=tasks, max_per_group=max_probe_train, seed=seed) if train is not None else {}
    if max_per_task:
        groups = {k: idx[: max_per_task.get(k[0], len(idx))] for k, idx in groups.items()}
    results = []
    cache = SourceCache(model, pad_id=pad, batch_size=batch_size)
    bar = tqdm(groups.items(), desc="eval", disable=not progress)
    has_adapter = hasattr(model, "peft_config")
    for (dataset, variant), idx in bar:
        bar.set_postfix_str(f"{dataset}/{variant}")
        rows = [test[i] for i in idx]
        vecs = cache.vectors(rows)
        res = GroupResult(dataset, variant, len(rows))
        settings = {"oracle": (True, True), "untrained": (False, True), "no_injection": (True, False),
                    "text": (False, False)}
        for m in methods:
            if m == "probe":
                continue
            adapter, steer = settings[m]
            got = answers(model, tokenizer, rows, vecs, hook_layer=hook_layer, adapter=adapter and has_adapter,
                          steer=steer, batch_size=batch_size, scoring=scoring,
                          prompts=[text_prompt(tokenizer, r) for r in rows] if m == "text" else None)
            res.scores[m] = got
        if "probe" in methods and (dataset, variant) in train_groups:
            tr_rows = [train[i] for i in train_groups[(dataset, variant)]]
            tr_vecs = cache.vectors(tr_rows)
            y = np.array([r["target"].strip().lower() == "yes" for r in tr_rows], dtype=np.int64)
            pred = probe_predictions(pool(tr_vecs), y, [probe_key(r) for r in tr_rows],
                                     pool(vecs), [probe_key(r) for r in rows])
            truth = np.array([r["target"].strip().lower() == "yes" for r in rows], dtype=np.int64)
            hits = (pred == truth).astype(int).tolist()
            res.scores["probe"] = MethodScore(correct=sum(hits), formatted=len(rows), n=len(rows), hits=hits)
        results.append(res)
    return results


# The demo's bar (issue 10): trained tasks with both classes asked, held-out tasks, context prediction.
BAR = {"over_untrained": 0.20, "over_no_injection": 0.20, "probe_gap": 0.10, "heldout_over_untrained": 0.10}


def _mean(results, method) -> float | None:
    vals = [r.scores[method].acc for r in results if method in r.scores]
    return float(np.mean(vals)) if vals else None


def paired_gap(results, a: str, b: str) -> list[float] | None:
    """[mean, low, high] of accuracy(a) - accuracy(b) averaged over groups, with its 95 % interval from the
    questions both methods answered (intervals.paired_difference_interval); None without per-question hits."""
    pairs = [(r.scores[a].hits, r.scores[b].hits) for r in results
             if a in r.scores and b in r.scores and r.scores[a].hits and r.scores[b].hits]
    if not pairs or len(pairs) < len(results):
        return None
    return [float(x) for x in paired_difference_interval(pairs)]


def present_methods(results: list[GroupResult]) -> list[str]:
    """The methods scored on at least one group, in ALL_METHODS order."""
    return [m for m in ALL_METHODS if any(m in r.scores for r in results)]


def pooled_probs(results: list[GroupResult], method: str) -> tuple[list[float], list[int]]:
    """P(Yes) and the truth of every forced-choice answer of `method`, over all groups."""
    p, y = [], []
    for r in results:
        if method in r.scores:
            p += r.scores[method].p_yes
            y += r.scores[method].yes
    return p, y


def summarize(results: list[GroupResult], *, probe_threshold: float = 0.75, bar_tasks=None, heldout_tasks=None,
              context_prediction: dict | None = None) -> dict:
    """Averages and the demo's bar, in parts that hold or not on their own:
    - trained: over the groups of `bar_tasks` (default all) whose linear probe reaches `probe_threshold`,
      the oracle beats the untrained oracle and the no-injection control by 20 points and is within 10 of
      the probe;
    - heldout: over all groups of `heldout_tasks` (tasks never trained on), the oracle beats the untrained
      oracle by 10 points;
    - context_prediction: the oracle's first token matches the true next and previous token more often
      than the untrained oracle's (`context_prediction` as returned by evaluate_context_prediction)."""
    eligible = [r for r in results if "probe" in r.scores and r.scores["probe"].acc >= probe_threshold
                and (bar_tasks is None or r.dataset in bar_tasks)]
    out: dict = {"probe_threshold": probe_threshold, "eligible_groups": [f"{r.dataset}/{r.variant}" for r in eligible],
                 "bar_tasks": sorted(bar_tasks) if bar_tasks is not None else "all", "thresholds": dict(BAR)}
    methods = [m for m in ALL_METHODS if m in METHODS or m in present_methods(results)]
    for m in methods:
        out[f"mean_{m}"] = _mean(eligible, m)
        out[f"mean_all_{m}"] = _mean(results, m)
    out["ece"] = {m: expected_calibration_error(*pooled_probs(results, m)) for m in methods
                  if any(m in r.scores and r.scores[m].p_yes for r in results)}
    out["per_variant"] = {v: {m: _mean([r for r in eligible if r.variant == v], m) for m in methods}
                          for v in VARIANTS if any(r.variant == v for r in eligible)}
    parts: dict[str, dict] = {}
    if eligible and out["mean_oracle"] is not None:
        o = out["mean_oracle"]
        gap = lambda m: o - out[f"mean_{m}"] if out[f"mean_{m}"] is not None else None  # noqa: E731
        out["oracle_minus_untrained"], out["oracle_minus_no_injection"] = gap("untrained"), gap("no_injection")
        out["probe_minus_oracle"] = -gap("probe") if gap("probe") is not None else None
        t = {"beats_untrained": out["oracle_minus_untrained"] is not None
                                and out["oracle_minus_untrained"] >= BAR["over_untrained"],
             "beats_no_injection": out["oracle_minus_no_injection"] is not None
                                   and out["oracle_minus_no_injection"] >= BAR["over_no_injection"],
             "near_probe": out["probe_minus_oracle"] is not None and out["probe_minus_oracle"] <= BAR["probe_gap"]}
        parts["trained"] = {**t, "met": all(t.values())}
        out["intervals"] = {f"oracle_minus_{m}": paired_gap(eligible, "oracle", m) for m in ("untrained", "no_injection")}
        out["intervals"]["probe_minus_oracle"] = paired_gap(eligible, "probe", "oracle")
    elif bar_tasks:  # an empty list: only held-out tasks were scored, so there is no trained part
        parts["trained"] = {"met": False, "reason": f"no group of {sorted(bar_tasks)} has a probe reaching "
                                                    f"{probe_threshold:.0%}"}
    held = [r for r in results if heldout_tasks and r.dataset in heldout_tasks]
    if held:
        o, u = _mean(held, "oracle"), _mean(held, "untrained")
        parts["heldout"] = {"groups": [f"{r.dataset}/{r.variant}" for r in held], "mean_oracle": o,
                            "mean_untrained": u, "mean_no_injection": _mean(held, "no_injection"),
                            "mean_text": _mean(held, "text"),
                            "oracle_minus_untrained": paired_gap(held, "oracle", "untrained"),
                            "met": o is not None and u is not None and o - u >= BAR["heldout_over_untrained"]}
    if context_prediction:
        cp = {d: {m: s.to_dict() for m, s in ms.items()} for d, ms in context_prediction.items()}
        parts["context_prediction"] = {**cp, "met": all(ms["oracle"]["acc"] > ms["untrained"]["acc"]
                                                          for ms in cp.values())}
    if parts:
        out["bar"] = {**parts, "met": all(p["met"] for p in parts.values())}
    return out
