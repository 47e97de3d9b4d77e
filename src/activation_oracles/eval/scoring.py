"""Scoring yes/no answers and putting confidence intervals on accuracies."""

from __future__ import annotations

import math
import string

YES_NO = ("yes", "no")


def first_word(text: str) -> str:
    """First whitespace-separated word, stripped of punctuation, lower-cased."""
    for w in text.strip().split():
        w = w.strip(string.punctuation + "“”‘’")
        if w:
            return w.lower()
    return ""


def score(answer: str, target: str) -> tuple[bool, bool]:
    """(format-correct: the first word is yes/no, answer-correct: it equals the target's first word)."""
    w = first_word(answer)
    return w in YES_NO, w in YES_NO and w == first_word(target)


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (sound near 0 and 1, unlike the normal one)."""
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # min/max with p: at p = 0 or 1 rounding would otherwise leave p a hair outside its own interval
    return (max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half)))


def paired_difference_interval(groups: list[tuple[list[int], list[int]]], z: float = 1.96) -> tuple[float, float, float]:
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
