"""Parsing the command line's compound values (positions, comma-separated integers), for every `ao`
subcommand; below cli.py so that subcommand modules can use it without importing the app."""

from __future__ import annotations

import typer


def parse_positions(text: str):
    """'all' | 'last' | N | A:B (Python slice, negatives from the end) | N,M,..."""
    text = text.strip()
    if text in ("all", "last"):
        return text
    try:
        if ":" in text:
            parts = [int(p) if p else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError
            return slice(*parts)
        if "," in text:
            return [int(p) for p in text.split(",") if p]
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"--positions {text!r}: use all, last, N, A:B or N,M,...") from None


def parse_ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise typer.BadParameter(f"{flag} {text!r}: give comma-separated integers, e.g. 7,15,22") from None
