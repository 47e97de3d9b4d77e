"""The server's one model thread: requests that arrive within `max_wait_ms` of each other are answered
together, through `Oracle.score_many`/`ask_many`/`collect_many` (the library's own batched path), so
concurrent clients share forwards. A request that fails fails alone: its exception is its result."""

from __future__ import annotations

import queue
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

KINDS = ("score", "ask", "activations", "view")
_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_lock(oracle) -> threading.Lock:
    """One lock per oracle: two servers over one model must not run forwards at once (the injection and
    collection hooks live on the model)."""
    return _LOCKS.setdefault(oracle, threading.Lock())


@dataclass
class _Job:
    kind: str
    call: dict
    future: Future = field(default_factory=Future)


class Batcher:
    """`submit(kind, call)` -> a Future of that call's result. One daemon thread runs the model: it takes
    the first waiting job, waits at most `max_wait_ms` for others (up to `max_batch` jobs; jobs that
    queued while it was busy are taken at once), then answers each kind's jobs in one `*_many` call."""

    def __init__(self, oracle, *, max_batch: int = 32, max_wait_ms: float = 5.0, batch_size: int = 64,
                 check: Callable | None = None, view: Callable | None = None):
        if max_batch < 1 or max_wait_ms < 0 or batch_size < 1:
            raise ValueError("max_batch and batch_size must be positive, max_wait_ms not negative")
        self.oracle, self.max_batch, self.max_wait = oracle, max_batch, max_wait_ms / 1000
        self.batch_size, self.check, self.view = batch_size, check, view
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self.stats = {"requests": 0, "failed": 0, "batches": 0, "largest_batch": 0, "model_seconds": 0.0}
        self.batch_sizes: Counter[int] = Counter()  # jobs per batch -> how many batches (at most max_batch keys)
        self._thread = threading.Thread(target=self._loop, name="ao-serve-model", daemon=True)
        self._thread.start()

    def submit(self, kind: str, call: dict) -> Future:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: use one of {', '.join(KINDS)}")
        job = _Job(kind, call)
        self._queue.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Answer what is queued, then stop the thread."""
        self._queue.put(None)
        self._thread.join(timeout)

    def snapshot(self) -> dict:
        with self._lock:
            return {**self.stats, "model_seconds": round(self.stats["model_seconds"], 3),
                    "batch_sizes": dict(sorted(self.batch_sizes.items()))}

    # ------------------------------------------------------------------ the model thread

    def _take(self) -> tuple[list[_Job], bool]:
        """(the next batch, whether to stop after it)."""
        first = self._queue.get()
        if first is None:
            return [], True
        jobs, deadline = [first], time.monotonic() + self.max_wait
        while len(jobs) < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
        return jobs, False

    def _loop(self) -> None:
        stop = False
        while not stop:
            jobs, stop = self._take()
            if jobs:
                self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        start = time.perf_counter()
        results: list = [None] * len(jobs)
        with model_lock(self.oracle):
            for kind in KINDS:
                idx = [i for i, j in enumerate(jobs) if j.kind == kind]
                if not idx:
                    continue
                try:
                    out = self._answer(kind, [jobs[i].call for i in idx])
                except Exception as e:  # noqa: BLE001 - a bug in one kind's path must not stop the thread
                    out = [e] * len(idx)
                for i, r in zip(idx, out):
                    results[i] = r
        failed = sum(isinstance(r, BaseException) for r in results)
        with self._lock:
            self.stats["requests"] += len(jobs)
            self.stats["failed"] += failed
            self.stats["batches"] += 1
            self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
            self.stats["model_seconds"] += time.perf_counter() - start
            self.batch_sizes[len(jobs)] += 1
        for job, r in zip(jobs, results):
            if not job.future.set_running_or_notify_cancel():
                continue
            if isinstance(r, BaseException):
                job.future.set_exception(r)
            else:
                job.future.set_result(r)

    def _answer(self, kind: str, calls: list[dict]) -> list:
        o, kw = self.oracle, dict(batch_size=self.batch_size, check=self.check)
        if kind == "score":
            return o.score_many(calls, **kw)
        if kind == "ask":
            return o.ask_many(calls, **kw)
        if kind == "activations":
            return o.collect_many(calls, **kw)
        return [self._view(c) for c in calls]  # a view is already one batched call over its tokens

    def _view(self, call: dict):
        try:
            return self.view(call)
        except Exception as e:  # noqa: BLE001 - this request's result
            return e
