"""Readers for the local source formats; every error names the file and the field."""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
from pathlib import Path

from ..fsutil import encoding_error
from .schema import DataError


@contextlib.contextmanager
def _open_text(path: Path, encoding: str = "utf-8"):
    """The file as text, decoded strictly: a byte that is not `encoding` is an error naming the file (never a
    replacement character in the data)."""
    try:
        with (gzip.open(path, "rt", encoding=encoding, newline="") if path.suffix == ".gz"
              else open(path, encoding=encoding, newline="")) as f:
            yield f
    except UnicodeDecodeError as e:
        raise DataError(str(encoding_error(path, e, encoding=encoding))) from None


def require_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def read_csv(path: Path, columns: tuple[str, ...], *, delimiter: str = ",", encoding: str = "utf-8") -> list[dict]:
    """Rows of a CSV/TSV with the given columns required; an empty file or a missing column is an error."""
    path = require_file(path)
    csv.field_size_limit(10_000_000)
    with _open_text(path, encoding) as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; found {header}")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path}: no data rows")
    return rows


def read_jsonl(path: Path, fields: tuple[str, ...] = ()) -> list[dict]:
    path = require_file(path)
    rows = []
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}: line {n} is not JSON ({e})") from None
            for k in fields:
                if k not in row:
                    raise DataError(f"{path}: line {n} has no field {k!r}")
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def read_json(path: Path):
    path = require_file(path)
    with _open_text(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e})") from None


def require_fields(path, items: list, fields: tuple[str, ...], what: str = "item") -> None:
    if not isinstance(items, list) or not items:
        raise DataError(f"{path}: expected a non-empty list of {what}s")
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise DataError(f"{path}: {what} {i} is not an object")
        for k in fields:
            if k not in it:
                raise DataError(f"{path}: {what} {i} has no field {k!r}")
