"""A static figure of the viewer for papers (matplotlib): per question, the context's tokens on their
colours in a monospace grid, with a colorbar (yes/no) or a legend of answers (open)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

from ..fsutil import atomic_write_bytes
from .colors import P_STOPS, answer_groups, p_color
from .compute import View

FONT = "DejaVu Sans Mono"  # ships with matplotlib, so widths are known everywhere
CHAR_W = 0.602  # DejaVu Sans Mono advance width, in em
LINE_H = 1.9  # line pitch, in em
_MARKS = {"\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}


def _label(text: str) -> tuple[str, bool]:
    """(what to draw, whether the line breaks after it)."""
    if text and text.strip(" ") == "":
        return "\u00b7" * len(text), False
    return "".join(_MARKS.get(c, c) for c in text) or "\u2009", text.endswith("\n")


def _short(label: str, n: int = 34) -> str:
    return label if len(label) <= n else label[: n - 1].rstrip() + "\u2026"


def _layout(view: View, width: int) -> list[list[tuple[int, int, str]]]:
    """Lines of (shown index, column, label), wrapped at `width` characters."""
    lines, line, col = [], [], 0
    for j, pos in enumerate(view.tokens.shown):
        label, brk = _label(view.tokens.texts[pos])
        if col and col + len(label) > width:
            lines.append(line)
            line, col = [], 0
        line.append((j, col, label))
        col += len(label)
        if brk:
            lines.append(line)
            line, col = [], 0
    if line:
        lines.append(line)
    return lines


def write_figure(view: View, path: str | Path, *, width: int = 80, fontsize: float = 11, dpi: int = 200) -> Path:
    """Write the figure to `path` (PNG, or any format matplotlib infers from the suffix)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.patches import Patch, Rectangle

    lines = _layout(view, width)
    width = max(col + len(label) for line in lines for _, col, label in line)  # no empty margin on the right
    em, small = fontsize / 72, (fontsize - 2) / 72  # inches
    text_w, text_h = width * CHAR_W * em, len(lines) * LINE_H * em
    side, pad, head, foot = 3.6, 0.25, 0.45, 0.25  # inches: legend column, margins, question title, footer
    groups = [answer_groups(q.answers) if q.answers is not None else None for q in view.questions]
    # A block is as tall as its text or its legend (a colorbar of at least 1 inch; a row per answer).
    body = [max(text_h, 1.0 if g is None else (len(g[1]) + 1.5) * 1.7 * small) for g in groups]
    fig_w, fig_h = pad + text_w + side, pad / 2 + sum(head + b + pad for b in body) + foot
    fig = plt.figure(figsize=(fig_w, fig_h))
    cmap = LinearSegmentedColormap.from_list("p_yes", [(p, c) for p, c in P_STOPS])
    legend_x = (pad + text_w + 0.3) / fig_w
    top = fig_h - pad / 2
    for q, g, b in zip(view.questions, groups, body):
        fig.text(pad / fig_w, (top - head / 2) / fig_h, f"Q: {q.question}", fontsize=fontsize + 1, va="center",
                 weight="bold")
        ax = fig.add_axes([pad / fig_w, (top - head - text_h) / fig_h, text_w / fig_w, text_h / fig_h])
        ax.set_xlim(0, width)
        ax.set_ylim(len(lines), 0)
        ax.axis("off")
        for row, line in enumerate(lines):
            for j, col, label in line:
                color = p_color(q.probs[j]) if g is None else g[1][g[0][j]][2]
                ax.add_patch(Rectangle((col + 0.04, row + 0.08), len(label) - 0.08, 0.84, color=color, lw=0))
                ax.text(col, row + 0.5, label, family=FONT, fontsize=fontsize, va="center", ha="left")
        if g is None:
            cax = fig.add_axes([legend_x, (top - head - b) / fig_h, 0.18 / fig_w, b / fig_h])
            fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), cax=cax).set_label(f"P({q.choices[0]})")
        else:
            handles = [Patch(color=c, label=f"{_short(lab)} \u00d7{n}") for lab, n, c in g[1]]
            fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(legend_x, (top - head + 0.1) / fig_h),
                       fontsize=fontsize - 2, frameon=False, title="answer", title_fontsize=fontsize - 2,
                       alignment="left")
        top -= head + b + pad
    layers = sorted({x for q in view.questions for x in q.layers})
    fig.text(pad / fig_w, foot / 2 / fig_h, f"{view.model} | adapter: {view.adapter} | layer "
             f"{', '.join(map(str, layers))}", fontsize=7, ha="left", va="center", color="#666")
    buf = io.BytesIO()
    with warnings.catch_warnings():  # characters the font lacks (emoji) are drawn as boxes (docs/view.md)
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        fig.savefig(buf, dpi=dpi, format=Path(path).suffix.lstrip(".").lower() or "png")
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
    return path
