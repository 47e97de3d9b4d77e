"""Agreement of sampled answers: the confidence signal for open questions (how many of N samples say the
same thing), with a matcher that decides what counts as the same."""

from __future__ import annotations

import string
import unicodedata
from collections import Counter


def normalize_answer(text: str) -> str:
    """The default matcher of sampled answers: case, punctuation and spacing do not count."""
    text = "".join(" " if unicodedata.category(ch).startswith("P") or ch in string.punctuation else ch
                   for ch in text.lower())
    return " ".join(text.split())


def agree(answers: list, num_samples: int, matcher, *, group: bool = False) -> list:
    """Fill `agreement` for runs of `num_samples` consecutive samples of one query: the share of the run
    whose `matcher(text)` equals this answer's. `group=True` keeps one answer per distinct key per query
    (its first sample), most agreed first."""
    out = []
    for start in range(0, len(answers), num_samples):
        run = answers[start : start + num_samples]
        keys = [matcher(a.text) for a in run]
        counts = Counter(keys)
        for a, k in zip(run, keys):
            a.agreement = counts[k] / len(run)
        if group:
            first = {}
            for a, k in zip(run, keys):
                first.setdefault(k, a)
            run = sorted(first.values(), key=lambda a: -a.agreement)  # stable: ties keep sample order
        out += run
    return out
