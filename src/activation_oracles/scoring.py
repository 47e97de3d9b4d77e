"""Scoring yes/no answers: the rule `ao eval` and the in-training evaluation share."""

from __future__ import annotations

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
