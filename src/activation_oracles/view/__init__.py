"""`ao view`: the oracle's answer at every token of a text, as a self-contained HTML page (one tab per
question), a static figure, or a page served on localhost. See docs/view.md."""

from __future__ import annotations

from pathlib import Path

from ..fsutil import atomic_write_text
from .compute import KINDS, QuestionView, View, compute_view, question_kind
from .figure import write_figure
from .page import render_fragment, render_html
from .serve import serve_page, serve_until_stopped
from ..tokens import ContextTokens, context_tokens


def render_view(oracle, context: str, questions, **options) -> str:
    """The HTML page of `oracle`'s answers to `questions` at every token of `context` (options: see
    `compute_view`)."""
    return render_html(compute_view(oracle, context, questions, **options))


def write_view(oracle, context: str, questions, out: str | Path, *, png: str | Path | None = None, **options) -> View:
    """Compute the view once, write the page to `out` (and the figure to `png`), return the `View`."""
    view = compute_view(oracle, context, questions, **options)
    atomic_write_text(out, render_html(view))
    if png is not None:
        write_figure(view, png)
    return view


__all__ = ["KINDS", "ContextTokens", "QuestionView", "View", "compute_view", "context_tokens", "question_kind",
           "render_fragment", "render_html", "render_view", "serve_page", "serve_until_stopped", "write_figure",
           "write_view"]
