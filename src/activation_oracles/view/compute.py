"""The oracle's answer at every token of one context, for each question: the data behind the page and
the figure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..tokens import ContextTokens, context_tokens

KINDS = ("auto", "yesno", "open")
# A question whose (last) sentence starts with one of these is answered yes or no.
AUXILIARIES = frozenset(
    "is are was were am be do does did has have had can could will would shall should may might must "
    "isn't aren't wasn't weren't don't doesn't didn't hasn't haven't hadn't can't couldn't won't wouldn't "
    "shouldn't".split()
)


def question_kind(question: str) -> str:
    """"yesno" when the question mentions "yes or no" or its last sentence starts with an auxiliary verb
    ("Is ...", "Does ...", "Can ..."), else "open"."""
    q = question.strip()
    if re.search(r"\byes\b.{0,12}\bno\b", q, re.IGNORECASE):
        return "yesno"
    sentences = [s for s in re.split(r"(?<=[.!?:])\s+", q) if s.strip()]
    words = re.findall(r"[A-Za-z']+", sentences[-1] if sentences else q)
    return "yesno" if words and words[0].lower() in AUXILIARIES else "open"


@dataclass
class QuestionView:
    question: str
    kind: str  # "yesno" | "open"
    layers: list[int]
    choices: tuple[str, ...] = ("Yes", "No")
    probs: list[float] | None = None  # yesno: P(choices[0]) per shown token
    mass: list[float] | None = None  # yesno: probability on the choices' first tokens at all
    answers: list[str] | None = None  # open: the greedy answer per shown token


@dataclass
class View:
    tokens: ContextTokens
    questions: list[QuestionView]
    model: str
    adapter: str
    meta: dict = field(default_factory=dict)  # extra lines for the header (e.g. raw / template)


def _kinds(questions: list[str], kind) -> list[str]:
    kinds = [kind] * len(questions) if isinstance(kind, str) else list(kind)
    if len(kinds) != len(questions):
        raise ValueError(f"kind: got {len(kinds)} kinds for {len(questions)} questions")
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"kind={k!r}: use one of {', '.join(KINDS)}")
    return [question_kind(q) if k == "auto" else k for q, k in zip(questions, kinds)]


def compute_view(oracle, context: str, questions, *, kind="auto", choices=("Yes", "No"), layer=None, layers=None,
                 layer_percent=None, raw: bool = False, show_template: bool = False, max_new_tokens: int = 16,
                 batch_size: int = 64, model: str | None = None, adapter: str | None = None) -> View:
    """Ask every question at every shown token of `context`: yes/no questions through one
    `oracle.score(mode="tokens")` call (P of the first choice), open ones through one
    `oracle.ask(mode="tokens")` call (greedy answers). `kind`: "auto" | "yesno" | "open", one for all
    questions or one per question."""
    questions = [questions] if isinstance(questions, str) else list(questions)
    if not questions:
        raise ValueError("questions is empty: give at least one question")
    if not isinstance(context, str) or not context.strip():
        raise ValueError("context must be a non-empty string")
    kinds = _kinds(questions, kind)
    toks = context_tokens(oracle.tokenizer, context, raw=raw, show_template=show_template)
    common = dict(positions=toks.shown, mode="tokens", layer=layer, layers=layers, layer_percent=layer_percent,
                  batch_size=batch_size)
    views = [QuestionView(q, k, [], tuple(choices)) for q, k in zip(questions, kinds)]
    n = len(toks.shown)
    for k in ("yesno", "open"):
        idx = [i for i, v in enumerate(views) if v.kind == k]
        if not idx:
            continue
        qs = [questions[i] for i in idx]
        if k == "yesno":
            out = oracle.score(toks.ids, qs, tuple(choices), **common)
        else:
            out = oracle.ask(toks.ids, qs, max_new_tokens=max_new_tokens, **common)
        for j, i in enumerate(idx):  # answers come question by question, positions in order
            part = out[j * n : (j + 1) * n]
            views[i].layers = list(part[0].layers)
            if k == "yesno":
                views[i].probs = [a.probs[choices[0]] for a in part]
                views[i].mass = [a.choice_mass for a in part]
            else:
                views[i].answers = [a.text for a in part]
    if model is None:
        model = str(getattr(oracle.model.config, "name_or_path", "") or type(oracle.model).__name__)
    if adapter is None:
        adapter = "oracle adapter" if oracle.has_oracle_adapter else "none (untrained oracle)"
    meta = {"input": "plain text (raw)" if raw else "user turn of the chat template",
            "tokens shown": f"{n} of {len(toks.ids)}" + ("" if show_template or raw else " (template tokens hidden)")}
    return View(toks, views, model, adapter, meta)
