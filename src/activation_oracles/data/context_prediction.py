"""Self-supervised context prediction ("past lens"; paper section 3.2, 600k examples).

K contiguous source positions from a text; the oracle predicts the J tokens just before them
(past) or just after them (future). Source and target tokens never overlap, and the context is cut
after the last source position so the target model never sees the future tokens.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from . import builtin, hub, io
from .schema import DataError, Row
from .tokenize import _encode_batch

PAST_Q = "Can you predict the previous {J} tokens that came before this?"
FUTURE_Q = "Can you predict the next {J} tokens that come after this?"


def _doc(row: dict, path, n: int):
    if isinstance(row.get("messages"), list):
        for i, m in enumerate(row["messages"]):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise DataError(f"{path}: row {n} messages[{i}] needs 'role' and 'content'")
        return {"messages": row["messages"]}
    if isinstance(row.get("text"), str):
        return {"text": row["text"]}
    raise DataError(f"{path}: row {n} has neither a 'text' string nor a 'messages' list")


def read_texts(path: str | Path) -> list[dict]:
    """Documents {"text": str} or {"messages": [...]} from .jsonl(.gz), .txt or .parquet files or a directory."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and _kind_ok(p))
        if not files:
            raise DataError(f"{path}: no .jsonl/.jsonl.gz/.txt/.parquet files")
        return [d for f in files for d in read_texts(f)]
    name = path.name
    if name.endswith((".jsonl", ".jsonl.gz", ".json.gz")):
        return [_doc(r, path, n) for n, r in enumerate(io.read_jsonl(path))]
    if name.endswith((".txt", ".txt.gz")):
        io.require_file(path)
        with io._open_text(path) as f:
            docs = [p.strip() for p in f.read().split("\n\n") if p.strip()]
        if not docs:
            raise DataError(f"{path}: no text")
        return [{"text": d} for d in docs]
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        io.require_file(path)
        table = pq.read_table(path)
        if not {"text", "messages"} & set(table.column_names):
            raise DataError(f"{path}: missing column 'text' (or 'messages'); found {table.column_names}")
        return [_doc(r, path, n) for n, r in enumerate(table.to_pylist())]
    raise DataError(f"{path}: unsupported file type (use .jsonl, .jsonl.gz, .txt or .parquet)")


def _kind_ok(p: Path) -> bool:
    return p.name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".txt", ".txt.gz", ".parquet"))


def _hub_doc(row: dict, hid: str, n: int) -> dict:
    """A hub row as a document: chats (lmsys-chat-1m `conversation`, or `messages`) as {role, content}
    turns, anything else by its `text` (FineWeb)."""
    conv = row.get("conversation") if row.get("conversation") is not None else row.get("messages")
    if isinstance(conv, list):
        return _doc({"messages": [{"role": m.get("role"), "content": m.get("content")} if isinstance(m, dict) else m
                                  for m in conv]}, f"hf:{hid}", n)
    return _doc(row, f"hf:{hid}", n)


def tokenize_docs(tokenizer, docs: list[dict], max_tokens: int) -> list[np.ndarray]:
    """Plain text as is (with the tokenizer's BOS), chats through the chat template; cut to max_tokens."""
    from ..prompt import render_chat

    texts, special = [], []
    for d in docs:
        if "messages" in d:
            texts.append(render_chat(tokenizer, d["messages"], add_generation_prompt=False))
            special.append(False)
        else:
            texts.append(d["text"][: max_tokens * 12])  # no need to tokenize far past the cut
            special.append(True)
    out = []
    bos = [tokenizer.bos_token_id] if getattr(tokenizer, "bos_token_id", None) is not None and \
        tokenizer("a")["input_ids"][:1] == [tokenizer.bos_token_id] else []
    for start in range(0, len(texts), 256):
        ids = _encode_batch(tokenizer, texts[start : start + 256])
        for i, x in enumerate(ids):
            x = (bos if special[start + i] else []) + list(x)
            out.append(np.asarray(x[:max_tokens], dtype=np.int32))
    return out


HUB_PREFIX = "hf:"
# What an error about a context-prediction corpus offers instead, per kind (the CLI options of `ao data build`).
SOURCE_HINTS = {
    "chat": "Or read another chat dataset instead: --chat-source ID[@CONFIG][:SPLIT] (a hub dataset whose rows hold "
            "`conversation` or `messages` turns, e.g. HuggingFaceH4/ultrachat_200k:train_sft) or a local .jsonl "
            "file of {\"messages\": [...]} rows.",
    "text": "Or read another text corpus or config instead: --text-source ID[@CONFIG][:SPLIT] (e.g. "
            "HuggingFaceFW/fineweb@sample-10BT) or a local .jsonl/.txt/.parquet file of texts.",
}


@dataclass
class CpSource:
    """A file, directory or built-in source: every document tokenized up front (they are small)."""

    name: str
    weight: float
    ids: list[np.ndarray]
    split_idx: dict[str, np.ndarray] = field(default_factory=dict)
    origin: str = ""

    def available(self, split: str) -> int:
        return len(self.split_idx[split])


class StreamSource:
    """A hub dataset read in its stream order, never held in memory: document i belongs to test when
    crc32(seed, name, i) falls in the first `test_fraction` of the range, so each split reads the stream
    from the start and keeps only its own documents (disjoint, reproducible, no length needed). Documents
    are tokenized 256 at a time as they are drawn. At the end of the stream (or of `limit` rows) the
    source starts a new pass if recycling is allowed, else stops the build."""

    def __init__(self, name, weight, spec: hub.HubRead, *, tokenizer, max_tokens: int, test_fraction: float,
                 seed: int, limit: int | None = None, mirror=None, alternative: str = ""):
        self.name, self.weight, self.spec = name, weight, spec
        self.tokenizer, self.max_tokens, self.test_fraction, self.seed = tokenizer, max_tokens, test_fraction, seed
        self.limit, self.mirror, self.alternative = limit, mirror, alternative
        self.origin = (f"hub:{spec.id}" + (f" ({spec.config})" if spec.config else "") + f" {spec.splits[0]} (streamed)"
                       + (f" from mirror {mirror}" if mirror else ""))
        self.drawn = {"train": 0, "test": 0}  # documents handed out per split
        self.rows_read = 0  # stream rows read, both splits and every pass
        # Opened now, so that a missing, gated or unreachable dataset stops the build before anything is written.
        self.ds = hub.read(spec, spec.splits[0], mirror=mirror, alternative=alternative)

    def available(self, split: str) -> int | None:
        return None  # unknown until the stream ends

    def _in_test(self, i: int) -> bool:
        return zlib.crc32(f"{self.seed}/{self.name}/{i}".encode()) < self.test_fraction * 2**32

    def _pass(self, split: str) -> Iterator[dict]:
        want_test = split == "test"
        for i, row in enumerate(hub.iterate(self.ds, self.spec, mirror=self.mirror, alternative=self.alternative)):
            if self.limit is not None and i >= self.limit:
                return
            self.rows_read += 1
            if self._in_test(i) == want_test:
                yield _hub_doc(row, self.spec.id, i)

    def docs(self, split: str, recycle: bool) -> Iterator[np.ndarray]:
        while True:
            got, batch = 0, []
            for doc in self._pass(split):
                batch.append(doc)
                if len(batch) == 256:
                    got += len(batch)
                    yield from self._tokens(batch, split)
                    batch = []
            got += len(batch)
            yield from self._tokens(batch, split)
            if not got:
                raise DataError(f"context_prediction source {self.name} ({self.spec.id}): no {split} documents in "
                                f"the stream (test_fraction={self.test_fraction})")
            if not recycle:
                raise DataError(f"context_prediction source {self.name} ({self.spec.id}): the stream ended after "
                                f"{got:,} {split} documents, fewer than the count needs; set allow_recycle: true, "
                                "lower the count or give a larger source")

    def _tokens(self, batch, split):
        for x in tokenize_docs(self.tokenizer, batch, self.max_tokens) if batch else ():
            self.drawn[split] += 1
            yield x


def hub_read(s: dict) -> hub.HubRead | None:
    """How an `hf:<id>` source is read (streamed; its `subset` config and `split`), or None for other sources."""
    path = str(s.get("path", ""))
    if not path.startswith(HUB_PREFIX):
        return None
    return hub.HubRead(path[len(HUB_PREFIX):], (s.get("split", "train"),), config=s.get("subset"), streaming=True)


def _source_name(s: dict) -> str:
    path = str(s["path"])
    if s.get("name"):
        return s["name"]
    if path == "builtin":
        return f"builtin_{s.get('kind', 'text')}"
    return (path[len(HUB_PREFIX):].rstrip("/").split("/")[-1] if path.startswith(HUB_PREFIX)
            else Path(path).name.split(".")[0])


@dataclass
class CpPlan:
    sources: list
    layers: list[int]
    counts: dict[str, int]
    seed: int
    k_multi: tuple[int, int] = (1, 50)
    j_range: tuple[int, int] = (1, 50)
    single_fraction: float = 0.5
    past_fraction: float = 0.5
    allow_recycle: bool = False
    skipped: dict[str, int] = field(default_factory=lambda: {"train": 0, "test": 0})


def plan_cp(tokenizer, sources: list[dict], *, layers, train_count, test_count, test_fraction, max_tokens,
            k_multi, j_range, single_fraction, past_fraction, allow_recycle, seed, mirror=None) -> CpPlan:
    """Sources: files/directories/builtin (read and tokenized now) or `hf:<id>` hub datasets (streamed
    while the rows are written; from `mirror` when given)."""
    if (train_count or test_count) and not sources:
        raise DataError("context_prediction: no sources configured")
    out = []
    for s in sources:
        if "path" not in s:
            raise DataError(f"context_prediction source {s}: missing field 'path'")
        name, path = _source_name(s), str(s["path"])
        spec = hub_read(s)
        if spec is not None:
            out.append(StreamSource(name, float(s.get("weight", 1.0)), spec, tokenizer=tokenizer, max_tokens=max_tokens,
                                    test_fraction=test_fraction, seed=seed, limit=s.get("limit"), mirror=mirror,
                                    alternative=SOURCE_HINTS.get(s.get("kind"), "")))
            continue
        docs = builtin.cp_docs(s.get("kind", "text")) if path == "builtin" else read_texts(path)
        src = CpSource(name, float(s.get("weight", 1.0)), tokenize_docs(tokenizer, docs, max_tokens), origin=path)
        ids = src.ids
        perm = np.random.default_rng([seed, zlib.crc32(src.name.encode())]).permutation(len(ids))
        n_test = max(1, round(len(ids) * test_fraction)) if test_count else 0
        if n_test >= len(ids) and train_count:
            raise DataError(f"context_prediction source {s['path']}: {len(ids)} document(s) cannot be split into train and test")
        src.split_idx = {"test": perm[:n_test], "train": perm[n_test:]}
        out.append(src)
    plan = CpPlan(out, list(layers), {"train": train_count, "test": test_count}, seed, tuple(k_multi), tuple(j_range),
                  single_fraction, past_fraction, allow_recycle)
    for split in ("train", "test"):
        if any(isinstance(x, StreamSource) for x in out):
            continue  # a stream's length is known only at its end, where it stops or recycles
        avail = sum(x.available(split) for x in out)
        if plan.counts[split] > avail and not allow_recycle:
            raise DataError(
                f"context_prediction: {split} count={plan.counts[split]} but the sources hold only {avail} {split} "
                "documents (one example per document per pass); lower the count or set allow_recycle: true")
    return plan


class _Cycler:
    """Documents of one source in random order; reshuffles when exhausted if recycling is allowed."""

    def __init__(self, idx, rng, recycle, name):
        self.idx, self.rng, self.recycle, self.name = idx, rng, recycle, name
        self.order, self.i = rng.permutation(idx), 0

    def next(self) -> int:
        if self.i == len(self.order):
            if not self.recycle:
                raise DataError(f"context_prediction source {self.name}: ran out of documents "
                                "(too many were too short); set allow_recycle: true or add text")
            self.order, self.i = self.rng.permutation(self.idx), 0
        self.i += 1
        return int(self.order[self.i - 1])


def _draws(src, split: str, rng, recycle: bool) -> Iterator[np.ndarray]:
    """The documents a source hands out for one split, in order."""
    if isinstance(src, StreamSource):
        return src.docs(split, recycle)
    cyc = _Cycler(src.split_idx[split], rng, recycle, src.name)  # drawn now: the rng order is part of the output
    return (src.ids[cyc.next()] for _ in itertools.repeat(None))


def cp_rows(plan: CpPlan, tokenizer, split: str) -> Iterator[Row]:
    n = plan.counts[split]
    if not n:
        return
    rng = np.random.default_rng([plan.seed, zlib.crc32(b"context_prediction"), 1 if split == "train" else 2])
    srcs = [s for s in plan.sources if s.available(split) is None or s.available(split)]
    w = np.array([s.weight for s in srcs], dtype=float)
    w = w / w.sum()
    docs = [_draws(s, split, rng, plan.allow_recycle) for s in srcs]
    emitted = misses = 0
    while emitted < n:
        si = int(rng.choice(len(srcs), p=w))
        ids = next(docs[si])
        single = rng.random() < plan.single_fraction
        k = 1 if single else int(rng.integers(plan.k_multi[0], plan.k_multi[1] + 1))
        j = int(rng.integers(plan.j_range[0], plan.j_range[1] + 1))
        past = rng.random() < plan.past_fraction
        if len(ids) < k + j:
            plan.skipped[split] += 1
            misses += 1
            if misses > 10_000:
                raise DataError("context_prediction: 10,000 documents in a row were too short for K + J tokens")
            continue
        misses = 0
        if past:
            s = int(rng.integers(j, len(ids) - k + 1))
            target_ids = ids[s - j : s]
        else:
            s = int(rng.integers(0, len(ids) - k - j + 1))
            target_ids = ids[s + k : s + k + j]
        # Chat-template markers are not text to predict; a target that is nothing but markers is redrawn.
        target = tokenizer.decode(target_ids.tolist(), skip_special_tokens=True)
        if not target.strip():
            plan.skipped[split] += 1
            continue
        q = (PAST_Q if past else FUTURE_Q).format(J=j)
        pos = np.arange(s, s + k, dtype=np.int32)
        yield Row("context_prediction", srcs[si].name, q, ids[: s + k], pos,
                  plan.layers[int(rng.integers(len(plan.layers)))], target, "past" if past else "future")
        emitted += 1
