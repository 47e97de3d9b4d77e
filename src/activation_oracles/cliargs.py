"""Parsing the command line's compound values (comma-separated integers; positions live with the query API
in oracle.parse_positions), for every `ao` subcommand; below cli.py so that subcommand modules can use it without importing the app."""

from __future__ import annotations

import typer


def parse_ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise typer.BadParameter(f"{flag} {text!r}: give comma-separated integers, e.g. 7,15,22") from None
