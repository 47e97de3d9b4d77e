"""95 % intervals, in one place: Wilson for accuracies, paired differences of two methods (`ao eval`),
means of per-item scores and Newcombe's difference of two rates (audits)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

Z95 = 1.96


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # min/max with p: at p = 0 or 1 rounding would otherwise leave p a hair outside its own interval
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def paired_difference_interval(groups: list[tuple[list[int], list[int]]], z: float = Z95) -> tuple[float, float, float]:
    """(mean, low, high) of the difference between two methods scored on the same questions, where the
    mean is taken per group and then over groups (as the report's averages are). Each group gives the 0/1
    hits of both methods, question by question; pairing removes the questions' shared difficulty from the
    noise. Normal interval: the variance of a group's mean difference is its sample variance over n, and
    the groups are independent. A group of one question adds no variance estimate (its variance counts 0)."""
    if not groups:
        return (math.nan, math.nan, math.nan)
    means, var = [], 0.0
    for a, b in groups:
        if len(a) != len(b) or not a:
            raise ValueError(f"paired hits need the same questions: got {len(a)} and {len(b)}")
        d = [x - y for x, y in zip(a, b)]
        m = sum(d) / len(d)
        means.append(m)
        if len(d) > 1:
            var += sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d)
    g = len(groups)
    mean, half = sum(means) / g, z * math.sqrt(var) / g
    return (mean, mean - half, mean + half)


@dataclass
class Estimate:
    value: float
    low: float
    high: float
    n: int
    method: str  # how the interval was made

    def to_dict(self) -> dict:
        return asdict(self)

    def fmt(self, digits: int = 3) -> str:
        if self.n == 0 or math.isnan(self.value):
            return "–"
        return f"{self.value:.{digits}f} [{self.low:.2f}, {self.high:.2f}]"


def mean_interval(scores: list[float], trials: int = 1) -> Estimate:
    """Mean of per-item scores in [0, 1]: Wilson for 0/1 scores (sound at 0 and 1), else the normal
    interval 1.96 x SE of the mean (as the paper's plots), clipped to [0, 1]. `trials` > 1: each
    score is a share of that many 0/1 samples; the interval is then the wider of the normal one and
    Wilson's on the pooled samples (the normal one collapses when few items agree by chance)."""
    n = len(scores)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "none")
    mean = sum(scores) / n
    if all(s in (0.0, 1.0) for s in scores):
        lo, hi = wilson_interval(int(sum(scores)), n)
        return Estimate(mean, lo, hi, n, "wilson")
    if n == 1:
        return Estimate(mean, 0.0, 1.0, 1, "normal")
    var = sum((s - mean) ** 2 for s in scores) / (n - 1)
    half = Z95 * math.sqrt(var / n)
    lo, hi = max(0.0, mean - half), min(1.0, mean + half)
    if trials > 1:
        plo, phi = wilson_interval(round(sum(scores) * trials), n * trials)
        if phi - plo > hi - lo:
            return Estimate(mean, plo, phi, n, "wilson-pooled")
    return Estimate(mean, lo, hi, n, "normal")


def difference_interval(pos: list[float], neg: list[float]) -> Estimate:
    """TPR - FPR from 0/1 hits on positives and on negatives: Newcombe's hybrid score interval
    (Wilson interval of each rate, combined), sound near 0 and 1 unlike the Wald difference."""
    if not pos or not neg:
        return Estimate(math.nan, math.nan, math.nan, 0, "none")
    p1, p2 = sum(pos) / len(pos), sum(neg) / len(neg)
    l1, u1 = wilson_interval(int(sum(pos)), len(pos))
    l2, u2 = wilson_interval(int(sum(neg)), len(neg))
    d = p1 - p2
    low = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return Estimate(d, max(-1.0, low), min(1.0, high), len(pos) + len(neg), "newcombe")
