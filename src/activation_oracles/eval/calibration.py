"""Calibration of yes/no answers: is P(Yes) an honest probability?

The oracle's confidence in its forced choice is max(P(Yes), P(No)) from the softmax over the two
answer tokens. Expected calibration error (ECE) bins answers by that confidence and averages
|accuracy - mean confidence| over the bins, weighted by their size (equal-width bins over [0.5, 1]).
"""

from __future__ import annotations

import numpy as np

BINS = 10


def _arrays(p_yes, truth):
    p = np.asarray(p_yes, dtype=np.float64)
    y = np.asarray(truth, dtype=np.int64)
    if p.shape != y.shape:
        raise ValueError(f"p_yes has {p.shape} values but truth has {y.shape}")
    return p, y


def reliability(p_yes, truth, bins: int = BINS) -> list[dict]:
    """Per confidence bin over [0.5, 1]: the number of answers, their mean confidence and accuracy."""
    p, y = _arrays(p_yes, truth)
    conf = np.maximum(p, 1 - p)
    correct = (p >= 0.5).astype(np.int64) == y
    edges = np.linspace(0.5, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1]), 0, bins - 1)
    out = []
    for b in range(bins):
        m = idx == b
        out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "n": int(m.sum()),
                    "confidence": float(conf[m].mean()) if m.any() else None,
                    "accuracy": float(correct[m].mean()) if m.any() else None})
    return out


def expected_calibration_error(p_yes, truth, bins: int = BINS) -> float:
    """Size-weighted mean |accuracy - confidence| over the confidence bins (0 = perfectly calibrated)."""
    p, _ = _arrays(p_yes, truth)
    if len(p) == 0:
        return float("nan")
    rows = reliability(p_yes, truth, bins)
    return float(sum(r["n"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["n"]) / len(p))


def plot_reliability(curves: dict[str, tuple[list, list]], out, bins: int = BINS):
    """One reliability diagram: per method (name -> (p_yes, truth)), accuracy against confidence."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0.5, 1], [0.5, 1], color="grey", lw=0.8, ls="--", label="perfectly calibrated")
    for name, (p, y) in curves.items():
        pts = [(r["confidence"], r["accuracy"]) for r in reliability(p, y, bins) if r["n"]]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o", label=f"{name} (ECE {expected_calibration_error(p, y, bins):.3f})")
    ax.set_xlabel("confidence: max(P(Yes), P(No))")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0.5, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Reliability of yes/no answers")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
