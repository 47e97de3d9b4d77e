"""A run directory has one owner.

- While a run writes its directory it holds a lock on `RUN/.ao-train.lock` (flock: the kernel drops it when
  the process dies, even by kill -9); a second writer is refused, naming the first one's pid.
- A new run into a directory that holds another run (its config, checkpoints or adapter) is refused unless
  `overwrite=True` (`ao train --overwrite`), which deletes that run's files first. The same config restarted
  before its first checkpoint is no other run, and may start again.
- `--resume` with a step count below the checkpoint's step is refused (the run would end before it starts
  and rewrite the adapter).
- Temporary directories that killed checkpoint or adapter writes left behind are removed when the owner
  starts (fsutil.remove_stale_temporaries).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from ..fsutil import check_writable_dir, remove_stale_temporaries_in
from .config import ConfigError

LOCK = ".ao-train.lock"
CONFIG_FILE = "config.yaml"
# What a run writes into its directory (and --overwrite deletes); anything else there is left alone.
RUN_FILES = (CONFIG_FILE, "metrics.jsonl", "checkpoints", "adapter", "tensorboard", "wandb")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return (f"pid {info['pid']} on {info['host']}, started "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['started']))}")
    except (OSError, ValueError, KeyError):
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Hold the run directory's lock for the duration of the block; refuse if another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ConfigError("output.dir", f"{run_dir} is being written by another training run ({_holder(path)}); "
                                        "wait for it to finish or stop it, or train into another --out") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _previous_run(run_dir: Path, cfg) -> list[str]:
    """What of another run `run_dir` holds (empty: nothing, or the same config restarted before its first
    checkpoint, with nothing to lose)."""
    ckpts = run_dir / "checkpoints"
    held = [n for n in ("checkpoints", "adapter")
            if (run_dir / n).is_dir() and any(not p.name.startswith(".") for p in (run_dir / n).iterdir())]
    saved = run_dir / CONFIG_FILE
    if saved.is_file() and (held or saved.read_text() != cfg.to_yaml()):
        held.insert(0, CONFIG_FILE)
    if "checkpoints" in held:
        steps = sorted(int(p.name[5:]) for p in ckpts.iterdir() if p.name.startswith("step_") and p.name[5:].isdigit())
        if steps:
            held[held.index("checkpoints")] = f"checkpoints up to step {steps[-1]}"
    return held


def claim(run_dir: Path, cfg, *, resumed: bool, overwrite: bool) -> None:
    """Check (or with `overwrite` clear) what the directory holds before a new run writes it; called with
    the lock held. Removes temporaries of killed writes first (they are no run)."""
    for d in (run_dir, run_dir / "checkpoints"):
        remove_stale_temporaries_in(d)
    if not resumed:
        held = _previous_run(run_dir, cfg)
        if held and not overwrite:
            raise ConfigError("output.dir", f"{run_dir} already holds another run ({', '.join(held)}): continue it "
                                            f"with --resume {run_dir}, start afresh there with --overwrite (deletes "
                                            "it), or train into another --out")
        if overwrite:
            for name in RUN_FILES:
                p = run_dir / name
                if p.is_dir():
                    shutil.rmtree(p)
                elif p.exists():
                    p.unlink()


@contextlib.contextmanager
def own_run_dir(run_dir: Path, cfg, *, resumed: bool, overwrite: bool, main: bool = True):
    """The block runs as the directory's one writer (rank 0 of a multi-process run holds the lock)."""
    if not main:
        yield
        return
    try:
        check_writable_dir(run_dir, "--out (output.dir)")
    except ValueError as e:
        raise ConfigError("output.dir", str(e)) from None
    with run_lock(run_dir):
        claim(run_dir, cfg, resumed=resumed, overwrite=overwrite)
        yield


def check_resume_steps(ckpt_dir: Path | None, total: int) -> None:
    """Refuse a resumed run whose step count is below its checkpoint's step."""
    if ckpt_dir is None:
        return
    try:
        step = int(json.loads((ckpt_dir / "trainer_state.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return  # _load_state reports an unreadable state
    if total < step:
        raise ConfigError("train.max_steps", f"{total} is below step {step} of the checkpoint {ckpt_dir}: the run "
                                             f"would end before it starts and rewrite its adapter; give --max-steps "
                                             f"{step} or more to continue it (or start afresh with --overwrite)")
