"""Built-in, offline training data for each organism kind, and each kind's behaviour check."""

from __future__ import annotations

from pathlib import Path

from ...data.io import read_json
from ...data.schema import DataError
from . import domain, gender, persona, ssc, taboo
from .common import OrganismData

KINDS = {"taboo": taboo, "gender": gender, "ssc": ssc, "persona": persona, "domain": domain}
ROLES = ("system", "user", "assistant")


def read_conversations(path: str | Path) -> list[dict]:
    """A JSON list of {"messages": [{"role", "content"}, ...]}, each with at least one assistant turn."""
    rows = read_json(Path(path))
    if not isinstance(rows, list) or not rows:
        raise DataError(f"--data {path}: expected a non-empty JSON list of {{'messages': [...]}}")
    for i, r in enumerate(rows):
        msgs = r.get("messages") if isinstance(r, dict) else None
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"--data {path}: item {i} has no 'messages' list")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataError(f"--data {path}: item {i} message {j} needs 'role' in {ROLES} and a 'content' string")
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"--data {path}: item {i} has no assistant turn to learn from")
    return rows


__all__ = ["KINDS", "OrganismData", "read_conversations"]
