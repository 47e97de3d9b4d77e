"""Colours shared by the HTML page and the PNG figure, so that both show the same thing.

Light enough everywhere for black text (contrast >= 5.5 : 1 against the darkest stop)."""

from __future__ import annotations

from collections import Counter

from ..agreement import normalize_answer

# P(yes): red (0) - near white (0.5) - blue (1), interpolated linearly in sRGB.
P_STOPS = ((0.0, "#d6604d"), (0.5, "#f7f7f7"), (1.0, "#4393c3"))
# One colour per distinct open answer (ColorBrewer Set3, its grey left for "other").
ANSWER_COLORS = ("#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
                 "#bc80bd", "#ccebc5", "#ffed6f")
OTHER_COLOR = "#e0e0e0"


def _rgb(hex_color: str) -> tuple[int, int, int]:
    return tuple(int(hex_color[i : i + 2], 16) for i in (1, 3, 5))


def p_color(p: float) -> str:
    """The colour of a probability in [0, 1] (clipped)."""
    p = min(1.0, max(0.0, float(p)))
    for (p0, c0), (p1, c1) in zip(P_STOPS, P_STOPS[1:]):
        if p <= p1:
            t = (p - p0) / (p1 - p0)
            return "#" + "".join(f"{int(a + (b - a) * t + 0.5):02x}" for a, b in zip(_rgb(c0), _rgb(c1)))
    return P_STOPS[-1][1]


def answer_groups(answers: list[str]) -> tuple[list[int], list[tuple[str, int, str]]]:
    """Group answers that `normalize_answer` makes equal: (group per answer, legend rows (label, count,
    colour)), most frequent first. Groups beyond the palette share one last "other" row."""
    keys = [normalize_answer(a) for a in answers]
    counts = Counter(keys)
    order = sorted(counts, key=lambda k: (-counts[k], keys.index(k)))
    label = {}
    for k, a in zip(keys, answers):
        label.setdefault(k, a.strip() or "(empty answer)")
    n = len(ANSWER_COLORS)
    if len(order) <= n:
        legend = [(label[k], counts[k], c) for k, c in zip(order, ANSWER_COLORS)]
        index = {k: i for i, k in enumerate(order)}
    else:
        legend = [(label[k], counts[k], c) for k, c in zip(order[: n - 1], ANSWER_COLORS)]
        rest = order[n - 1 :]
        legend.append((f"other ({len(rest)} answers)", sum(counts[k] for k in rest), OTHER_COLOR))
        index = {k: min(i, n - 1) for i, k in enumerate(order)}
    return [index[k] for k in keys], legend
