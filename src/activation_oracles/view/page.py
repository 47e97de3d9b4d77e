"""The viewer's HTML: one self-contained page (inline CSS and JS, no network), one tab per question,
every token a coloured <span>. Every piece of text goes through `html.escape`."""

from __future__ import annotations

from html import escape
from importlib.resources import files

from .. import __version__
from .colors import P_STOPS, answer_groups, p_color
from .compute import QuestionView, View

_HERE = files(__package__)
# Whitespace drawn visibly, then the real character (so a newline still breaks the line).
_WS = {"\n": "\u21b5\n", "\t": "\u21e5\t", "\r": "\u240d"}
_DOT = "\u00b7"


def _asset(name: str) -> str:
    return (_HERE / name).read_text(encoding="utf-8")


def visible(text: str) -> str:
    """Escaped HTML of a token's text with newlines, tabs and all-space tokens made visible."""
    if not text:
        return ""
    if text.strip(" ") == "":
        return f'<span class="ws">{_DOT * len(text)}</span>'
    out = []
    for ch in text:
        if ch in _WS:
            mark, rest = _WS[ch][0], _WS[ch][1:]
            out.append(f'<span class="ws">{mark}</span>{rest}')
        else:
            out.append(escape(ch))
    return "".join(out)


def _attr(value) -> str:
    return escape(str(value), quote=True)


def _token_spans(view: View, q: QuestionView, groups) -> str:
    """groups: (group per token, legend rows) of an open question, else None."""
    toks = view.tokens
    spans = []
    for j, pos in enumerate(toks.shown):
        text = toks.texts[pos]
        cls = "t" + (" special" if toks.special[pos] else "") + ("" if text else " cont")
        data = {"pos": pos, "tok": text}
        if q.probs is not None:
            color = p_color(q.probs[j])
            data.update(p=f"{q.probs[j]:.6f}", mass=f"{q.mass[j]:.6f}", choice=q.choices[0])
        else:
            g = groups[0][j]
            color = groups[1][g][2]
            data.update(a=q.answers[j], g=g)
        attrs = " ".join(f'data-{k}="{_attr(v)}"' for k, v in data.items())
        spans.append(f'<span class="{cls}" style="background:{color}" {attrs}>{visible(text)}</span>')
    return "".join(spans)


def _legend_html(q: QuestionView, groups) -> tuple[str, str]:
    """(legend HTML, one-line explanation)."""
    if q.probs is not None:
        stops = ", ".join(f"{c} {p * 100:.0f}%" for p, c in P_STOPS)
        c0 = escape(q.choices[0])
        legend = (f'<span>P({c0}) 0</span><span class="bar" style="background:linear-gradient(to right, {stops})">'
                  f'</span><span>1</span><span>mean {sum(q.probs) / len(q.probs):.3f}, '
                  f'min {min(q.probs):.3f}, max {max(q.probs):.3f}</span>')
        how = (f"Yes/no question: each token's colour is the oracle's probability of answering "
               f"\u201c{c0}\u201d (against {escape(' / '.join(q.choices[1:]))}) when it reads that token alone.")
        return legend, how
    rows = groups[1]
    chips = "".join(f'<span class="chip" data-g="{g}" title="{_attr(label)}"><i style="background:{color}"></i>'
                    f"<span>{escape(label)}</span> <b>\u00d7{count}</b></span>" for g, (label, count, color) in enumerate(rows))
    how = ("Open question: each token's colour is the oracle's answer when it reads that token alone (one colour "
           "per distinct answer, ignoring case and punctuation); hover a token for its answer, a legend entry "
           "to see its tokens.")
    return chips, how


def _panel(view: View, q: QuestionView, i: int) -> str:
    groups = answer_groups(q.answers) if q.answers is not None else None
    legend, how = _legend_html(q, groups)
    layers = ", ".join(map(str, q.layers))
    return (f'<section class="panel{" active" if i == 0 else ""}" id="q{i + 1}" data-kind="{q.kind}">'
            f'<h2 class="q">Q: {escape(q.question)}</h2>'
            f'<p class="how">{how} Source layer{"s" if len(q.layers) > 1 else ""} {layers}.</p>'
            f'<div class="legend">{legend}</div>'
            f'<div class="info">Hover a token for its details; click to pin it.</div>'
            f'<div class="tokens">{_token_spans(view, q, groups)}</div></section>')


def _details(view: View) -> str:
    """The <dt>/<dd> rows naming the model, adapter, source layers and how the text was fed."""
    layers = sorted({x for q in view.questions for x in q.layers})
    rows = {"model": view.model, "adapter": view.adapter, "layer" + ("s" if len(layers) > 1 else ""):
            ", ".join(map(str, layers)), **view.meta}
    return "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows.items())


def _tabs_and_panels(view: View) -> str:
    tabs = "".join(
        f'<button type="button" role="tab" data-panel="q{i + 1}" class="{"active" if i == 0 else ""}" '
        f'title="{_attr(q.question)}">{"Yes/no" if q.kind == "yesno" else "Open"}: {escape(q.question)}</button>'
        for i, q in enumerate(view.questions))
    panels = "".join(_panel(view, q, i) for i, q in enumerate(view.questions))
    return f'<nav class="tabs" role="tablist">{tabs}</nav>{panels}'


def render_fragment(view: View) -> str:
    """The view without the document around it (details, tabs, panels): what `ao serve`'s live page
    inserts, then wires with page.js's `aoView.bind`."""
    return f'<dl class="meta">{_details(view)}</dl>{_tabs_and_panels(view)}'


def render_html(view: View) -> str:
    """The page for a computed `View`."""
    title = escape(f"ao view: {view.questions[0].question}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title}</title>'
            f"<style>{_asset('page.css')}</style></head><body>"
            f"<header><h1>Activation oracle: answers token by token</h1><dl>{_details(view)}</dl></header>"
            f"{_tabs_and_panels(view)}"
            f"<footer>Made by activation-oracles {__version__} (<code>ao view</code>). Each token was read on its "
            f"own (mode=\"tokens\"): its residual-stream vector at the source layer was injected into the oracle's "
            f"prompt.</footer><script>{_asset('page.js')}</script></body></html>\n")
