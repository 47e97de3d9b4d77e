"""Writing a file or a directory all at once: readers see the old one or the complete new one, never half;
and reading text files strictly as UTF-8, naming the file when one is not.

The temporary directories of a write carry their writer's process id and host (`.NAME-ao<pid>@<host>-...`),
so that a later write, or a run that owns the directory, can tell the leftovers of a killed writer (removed)
from those of one still running (kept): `remove_stale_temporaries`."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path


class TextEncodingError(ValueError):
    """A text file is not in the encoding it is read with; the message names the file and the fix."""


def encoding_error(path: str | Path, err: UnicodeDecodeError, *, encoding: str = "utf-8", what: str = "",
                   where: str = "") -> TextEncodingError:
    """The error for a file that is not `encoding` text: names the file, the byte and the fix."""
    path = Path(path)
    byte = err.object[err.start : err.start + 1]
    return TextEncodingError(
        f"{what}{path}: not {encoding} text (byte 0x{byte.hex()}{where}); convert it to UTF-8, "
        f"e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}.utf8{path.suffix}")


def read_text(path: str | Path, *, encoding: str = "utf-8", what: str = "") -> str:
    """The text of `path`, decoded strictly (never with replacement characters); `what` prefixes the
    message (e.g. "--data ")."""
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise encoding_error(path, e, encoding=encoding, what=what, where=f" on line {line}") from None
    except LookupError:
        raise TextEncodingError(f"{what}{path}: unknown encoding {encoding!r}") from None


def check_writable_dir(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any slow work, an output directory that cannot be written: a file in its place, a
    file in its path, a read-only or inaccessible parent. Probes by writing a file, as permissions alone
    do not tell (root, read-only mounts). Creates nothing."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option} {path}: is a file, not a directory; choose another {option}")
    probe_in = p
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise ValueError(f"{option} {path}: {probe_in} is a file, so no directory can be made under it; choose "
                         f"another {option}")
    try:
        fd, name = tempfile.mkstemp(prefix=".ao-write-probe-", dir=probe_in)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        where = "" if probe_in == p else f" (in {probe_in})"
        raise ValueError(f"{option} {path}: cannot write there{where}: {e.strerror}; choose a writable "
                         "location") from None
    return p


def check_writable_file(path: str | os.PathLike, option: str) -> Path:
    """An output file: its directory must be writable and the path must not be a directory."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise ValueError(f"{option} {path}: is a directory; give a file name")
    check_writable_dir(p.parent, option)
    return p


def _host_tag() -> str:
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]


def _owner_tag() -> str:
    return f"ao{os.getpid()}@{_host_tag()}"


def _temp_name_re(name: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}-(?:old-)?ao(\d+)@([0-9a-f]{{8}})-")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the temporary directories that writers of `target` killed on this host left beside it (a
    writer still running keeps its own); returns what was removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pattern, host, removed = _temp_name_re(target.name), _host_tag(), []
    for p in target.parent.iterdir():
        m = pattern.match(p.name)
        if m and m.group(2) == host and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def remove_stale_temporaries_in(directory: str | Path) -> list[Path]:
    """`remove_stale_temporaries` for every entry's temporaries in `directory` (a run's checkpoints/)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    names = {m.group(1) for p in d.iterdir() if (m := re.match(r"^\.(.+?)-(?:old-)?ao\d+@[0-9a-f]{8}-", p.name))}
    return [r for n in sorted(names) for r in remove_stale_temporaries(d / n)]


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory entry) to disk; best effort on filesystems that refuse."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # pragma: no cover - exotic filesystems
        pass


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` through a temporary file beside it and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` through a temporary file beside it and a rename."""
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_directory(target: str | Path, *, fsync: bool = False):
    """Yield a fresh temporary directory beside `target`; on success it replaces `target` by rename,
    on any error it is removed and `target` is left as it was.

    An older `target` is renamed aside before the new one moves in and deleted afterwards, so a crash
    at any point leaves either directory whole. `fsync=True` flushes every file and the parent
    directory first (checkpoints: the rename must not reach the disk before the data does)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-{_owner_tag()}-", dir=target.parent))
    try:
        yield tmp
        if fsync:
            for p in tmp.rglob("*"):
                if p.is_file():
                    fsync_path(p)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}-old-{_owner_tag()}-", dir=target.parent))
            os.replace(target, old / target.name)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old / target.name, target)
            raise
        if fsync:
            fsync_path(target.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
