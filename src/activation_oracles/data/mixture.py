"""Build a mixture once into Arrow shards (`datasets.load_from_disk`-compatible) and reuse it.

Streaming end to end: every family yields rows lazily, the train split interleaves them in a seeded
random order (plus a small shuffle buffer), and rows are tokenized and written in chunks of a few
thousand, so memory stays flat however many examples are built.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..fsutil import atomic_directory
from ..models import layer_from_percent
from . import builtin
from . import classification as cls_mod
from . import hub
from .config import REFERENCE_FIX, MixtureConfig
from .context_prediction import HUB_PREFIX, SOURCE_HINTS, StreamSource, cp_rows, plan_cp
from .context_prediction import hub_read as cp_hub_read
from .schema import LAYERS_COLUMN, DataError, Row, columns, features
from .spqa import SOURCE_FILES as SPQA_FILES, plan_spqa, spqa_rows
from .tokenize import ContextRenderer, OracleFormatter

BUILDER_VERSION = "4"  # 4: answers the tokenizer merged into the prompt's last token are split off (prompt.join_answer)
META_FILE = "ao_data.json"
MIXTURE_YAML = "mixture.yaml"  # the resolved config it was built from: rebuild for another model with it
CHUNK = 2048
SHUFFLE_BUFFER = 4096


# ----------------------------------------------------------------------------- tokenizer and key


def load_tokenizer(spec: str):
    """(tokenizer, number of decoder blocks) of a model spec, without loading the weights."""
    from transformers import AutoConfig, AutoTokenizer

    from ..models import resolve_spec

    where, gguf = resolve_spec(spec)
    kw = {"gguf_file": gguf} if gguf else {}
    try:
        tok = AutoTokenizer.from_pretrained(where, **kw)
        cfg = AutoConfig.from_pretrained(where, **kw)
    except OSError as err:  # not on the hub, not reachable (offline) and not cached, or gated
        raise DataError(f"model {spec!r}: cannot load its tokenizer and config ({err}). Check the name, go online "
                        "(or download the model once with `hf download`), or pass a local model directory") from None
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    if not n:
        raise DataError(f"model {spec!r}: config has no num_hidden_layers")
    return tok, int(n)


def tokenizer_fingerprint(tokenizer) -> str:
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(str(tokenizer.chat_template).encode())
    h.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    return h.hexdigest()


def vocab_fingerprint(tokenizer) -> str:
    """What a mixture's token ids mean: the vocabulary (every token and its id, added tokens included) and
    the chat template. Two tokenizers with equal fingerprints read the same ids as the same text."""
    h = hashlib.sha256()
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: (kv[1], kv[0]))
    h.update(json.dumps(vocab, ensure_ascii=False).encode())
    h.update(b"\x00chat_template\x00" + str(tokenizer.chat_template).encode())
    return h.hexdigest()


def check_tokenizer(path: str | Path, tokenizer, model: str, *, meta: dict | None = None) -> None:
    """Refuse a mixture built for another tokenizer: its ids would be read as other tokens."""
    path = Path(path)
    meta = meta if meta is not None else mixture_info(path)
    built_model, built = meta.get("model", "?"), meta.get("tokenizer")
    here = vocab_fingerprint(tokenizer)
    if built == here or (built is None and built_model == model):
        return  # (a mixture from before fingerprints were recorded: trust an identical model id)
    config = path / MIXTURE_YAML
    config_arg = str(config) if config.is_file() else "[CONFIG]"
    raise DataError(
        f"{path} was built for the tokenizer of {built_model!r} "
        f"({'fingerprint ' + built[:12] if built else 'no fingerprint recorded'}), but the model is {model!r} "
        f"(tokenizer fingerprint {here[:12]}): its token ids would be read as other tokens. Build the mixture "
        f"for this model: `ao data build {config_arg} --model {model} --out NEW_DIR` and pass NEW_DIR instead"
    )


def _hub_reads(cfg: MixtureConfig) -> list[tuple[str, "hub.HubRead", str]]:
    """(what, read, alternative) of every hub dataset the config reads."""
    c, out = cfg.classification, []
    for name in _tasks_built(cfg):
        if c.sources.get(name, c.source) == "hub" and name in cls_mod.HUB_READS:
            out.append((f"classification task {name!r}", cls_mod.HUB_READS[name], ""))
    s = cfg.spqa.source
    if (cfg.spqa.count or cfg.spqa.test_count) and "/" in s and not os.path.isabs(s) and not os.path.exists(s):
        out.append(("spqa", hub.HubRead(s), ""))
    cp = cfg.context_prediction
    for src in cp.sources if (cp.count or cp.test_count) else []:
        if (spec := cp_hub_read(src)) is not None:
            out.append((f"context_prediction source {src['path']}", spec, SOURCE_HINTS.get(src.get("kind"), "")))
    return out


def _tasks_built(cfg: MixtureConfig) -> list[str]:
    c = cfg.classification
    return [t for t in list(c.train_tasks) + list(c.eval_tasks)
            if c.test_count or (t in c.train_tasks and c.counts.get(t, c.count))]


def check_sources(cfg: MixtureConfig) -> None:
    """Stop before reading anything when a source is missing: every local path the resolved config names,
    and with a hub mirror every hub dataset, each reported with its name and the fix."""
    c, problems = cfg.classification, []
    ref = f" (in the reference's datasets/ folder {cfg.reference_data}: {REFERENCE_FIX})" if cfg.reference_data else ""
    local = []
    if cfg.spqa.count or cfg.spqa.test_count:
        local.append(("spqa.source", cfg.spqa.source))
    local += [(f"classification task {t!r}", c.sources.get(t, c.source)) for t in _tasks_built(cfg)]
    if c.questions:
        local.append(("classification.questions", c.questions))
    cp = cfg.context_prediction
    if cp.count or cp.test_count:
        local += [(f"context_prediction source {s.get('name') or s.get('path')}", s.get("path", "")) for s in cp.sources]
    for what, path in local:
        if path and path not in ("builtin", "hub") and not path.startswith(HUB_PREFIX) and os.path.isabs(path) \
                and not os.path.exists(path):
            under = cfg.reference_data and path.startswith(cfg.reference_data)
            problems.append(f"{what}: {path} not found{ref if under else ''}")
    if cfg.hub_mirror:
        for what, spec, alt in _hub_reads(cfg):
            if not hub.mirror_dir(spec.id, cfg.hub_mirror).is_dir():
                problems.append(f"{what}: {hub.missing_from_mirror(spec, cfg.hub_mirror, alt)}")
    if problems:
        raise DataError("missing source(s):\n  - " + "\n  - ".join(problems))


def _source_paths(cfg: MixtureConfig) -> list[str]:
    c = cfg.classification
    paths = [cfg.spqa.source, c.source, c.questions, *c.sources.values(),
             *[s.get("path", "") for s in cfg.context_prediction.sources]]
    if cfg.hub_mirror:  # the mirrored copies of the hub datasets read
        paths += [str(hub.mirror_dir(spec.id, cfg.hub_mirror)) for _, spec, _ in _hub_reads(cfg)]
    return sorted({p for p in paths if p and os.path.exists(p)})


def _files_fingerprint(paths: list[str]) -> list:
    # Size and mtime of every file: editing a source file invalidates the cache.
    out = []
    for p in paths:
        files = [Path(p)] if os.path.isfile(p) else sorted(x for x in Path(p).rglob("*") if x.is_file())
        out += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return out


def mixture_key(cfg: MixtureConfig, tokenizer, n_layers: int) -> str:
    """Content hash of the resolved config, the tokenizer (with its chat template), the sources and the builder."""
    config = cfg.to_dict()
    # Options at their defaults leave the key as it was before they existed (cached builds stay valid).
    if not config.get("multi_layer"):
        config.pop("multi_layer", None)
    for k in ("reference_data", "hub_mirror"):
        if config.get(k) is None:
            config.pop(k, None)
    if config["spqa"].get("files") == list(SPQA_FILES):
        config["spqa"].pop("files")
    if not config["classification"].get("questions"):
        config["classification"].pop("questions", None)
    payload = {
        "builder": BUILDER_VERSION,
        "builtin": builtin.BUILTIN_VERSION,
        "config": config,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "n_layers": n_layers,
        "files": _files_fingerprint(_source_paths(cfg)),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


# ----------------------------------------------------------------------------- plans


class Plan:
    """Every family prepared (sources read, capacities checked) before anything is written."""

    def __init__(self, cfg: MixtureConfig, tokenizer, n_layers: int):
        self.cfg, self.tokenizer = cfg, tokenizer
        self.layers = sorted({layer_from_percent(n_layers, p) for p in cfg.layer_percents})
        # Multi-layer: each family makes one row per item (tagged with the first layer); the writer gives
        # every row all the layers.
        self.multi_layers = self.layers if cfg.multi_layer else None
        fam_layers = self.layers[:1] if cfg.multi_layer else self.layers
        self.renderer = ContextRenderer(tokenizer)
        s, c, cp = cfg.spqa, cfg.classification, cfg.context_prediction
        mirror = cfg.hub_mirror
        check_sources(cfg)
        self.spqa = None
        if s.count or s.test_count:
            with _naming("spqa", s.source, cfg):
                self.spqa = plan_spqa(s.source, layers=fam_layers, train_count=s.count, test_count=s.test_count,
                                      test_fraction=s.test_fraction, allow_recycle=cfg.allow_recycle, seed=cfg.seed,
                                      files=s.files, mirror=mirror)
            self.spqa.all_fraction, self.spqa.window, self.spqa.offset = s.all_fraction, tuple(s.window), tuple(s.offset)
        variants = {"single": cls_mod.VariantSpec(**vars(c.single)), "multi": cls_mod.VariantSpec(**vars(c.multi)),
                    "full": cls_mod.FULL}
        shares = cfg.variant_shares()
        self.cls = []
        for name in list(c.train_tasks) + list(c.eval_tasks):
            eval_only = name in c.eval_tasks
            n = c.counts.get(name, c.count)
            if not (n or c.test_count) or (eval_only and not c.test_count):
                continue
            source = c.sources.get(name, c.source)
            with _naming(f"classification task {name!r}", source, cfg):
                task = cls_mod.load_task(name, source, seed=cfg.seed, mirror=mirror, questions=c.questions or None)
            if name in c.ask_classes:
                task = cls_mod.restrict_classes(task, c.ask_classes[name], seed=cfg.seed)
            self.cls.append(cls_mod.plan_task(task, layers=fam_layers, train_count=n, test_count=c.test_count,
                                              shares=shares, eval_only=eval_only, variants=variants,
                                              yes_no_prefix=c.yes_no_prefix,
                                              allow_recycle=cfg.allow_recycle, seed=cfg.seed))
        self.cp = None
        if cp.count or cp.test_count:
            self.cp = plan_cp(tokenizer, cp.sources, layers=fam_layers, train_count=cp.count, test_count=cp.test_count,
                              test_fraction=cp.test_fraction, max_tokens=cp.max_tokens, k_multi=cp.k_multi,
                              j_range=cp.j, single_fraction=cp.single_fraction, past_fraction=cp.past_fraction,
                              allow_recycle=cfg.allow_recycle, seed=cfg.seed, mirror=mirror)

    def sources(self) -> dict:
        """Per family/task: where its rows came from, what the source held and what the build drew (for
        ao_data.json and `ao data inspect`); call after the rows were written."""
        out = {}
        if self.spqa is not None:
            p = self.spqa
            out["spqa"] = {"source": p.origin, "available": {k: len(v) for k, v in p.examples.items()},
                           "used": p.counts}
        for p in self.cls:
            need = {sp: p.contexts_needed(sp) for sp in ("train", "test")}
            have = {"train": p.train_contexts, "test": p.test_contexts}
            out[f"classification/{p.task.name}"] = {
                "source": p.task.origin, "available": len(p.task.items), "contexts": have, "contexts_drawn": need,
                "recycled": any(need[sp] > have[sp] for sp in need)}
        for src in self.cp.sources if self.cp is not None else []:
            if isinstance(src, StreamSource):
                out[f"context_prediction/{src.name}"] = {"source": src.origin, "rows_read": src.rows_read,
                                                         "documents_drawn": dict(src.drawn)}
            else:
                out[f"context_prediction/{src.name}"] = {"source": src.origin,
                                                         "available": {k: len(v) for k, v in src.split_idx.items()}}
        return out

    def streams(self, split: str) -> list[tuple[str, int, Iterator[Row]]]:
        """(name, exact row count, row iterator) per family/task for one split."""
        out = []
        if self.spqa is not None and self.spqa.counts[split]:
            out.append(("spqa", self.spqa.counts[split], spqa_rows(self.spqa, self.tokenizer, split)))
        for p in self.cls:
            n = sum(v for (s, _), v in p.counts.items() if s == split)
            if n:
                out.append((f"classification/{p.task.name}", n, cls_mod.task_rows(p, self.renderer, split)))
        if self.cp is not None and self.cp.counts[split]:
            out.append(("context_prediction", self.cp.counts[split], cp_rows(self.cp, self.tokenizer, split)))
        return out


@contextmanager
def _naming(what: str, source: str, cfg: MixtureConfig):
    """Errors while a source is read name the family/task and the source, plus the fix for a file of the
    reference's datasets/ folder."""
    try:
        yield
    except DataError as err:
        if str(err).startswith(what):
            raise
        ref, source = cfg.reference_data, str(source)
        hint = f" ({REFERENCE_FIX})" if ref and source.startswith(ref) else ""
        raise DataError(f"{what} (source {source}): {err}{hint}") from None


def _exact(name: str, n: int, it: Iterator[Row]) -> Iterator[Row]:
    """Exactly n rows of a stream; a stream that ends early is a builder bug, reported by name."""
    i = 0
    while i < n:
        row = next(it, None)
        if row is None:
            raise RuntimeError(f"{name}: produced {i} rows, expected {n} (builder bug)")
        yield row
        i += 1


def interleave(streams, seed: int, shuffle_buffer: int = SHUFFLE_BUFFER) -> Iterator[Row]:
    """Rows of all streams in a seeded random order: a random permutation of stream labels (weights = counts),
    then a shuffle buffer that breaks up the per-context groups a task emits together."""
    rng = np.random.default_rng([seed, zlib.crc32(b"interleave")])
    its = [_exact(n, c, it) for n, c, it in streams]
    order = rng.permutation(np.repeat(np.arange(len(streams), dtype=np.int32), [c for _, c, _ in streams]))
    buf: list[Row] = []
    draws = iter(())
    for s in order:
        row = next(its[s])
        if len(buf) < shuffle_buffer:
            buf.append(row)
            continue
        j = next(draws, None)
        if j is None:
            draws = iter(rng.integers(0, shuffle_buffer, size=8192).tolist())
            j = next(draws)
        buf[j], row = row, buf[j]
        yield row
    rng.shuffle(buf)
    yield from buf


def chained(streams) -> Iterator[Row]:
    for n, c, it in streams:
        yield from _exact(n, c, it)


# ----------------------------------------------------------------------------- Arrow writing


def _list_array(arrays: list[np.ndarray]):
    import pyarrow as pa

    lens = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(lens, out=offsets[1:])
    values = np.concatenate(arrays).astype(np.int32, copy=False) if arrays else np.zeros(0, np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))


def _record_batch(rows: list[Row], split: str, formatter: OracleFormatter, schema, multi_layers=None):
    import pyarrow as pa

    ks = [len(r.context_positions) for r in rows]
    layers = [multi_layers] * len(rows) if multi_layers else [r.layer for r in rows]
    ids, labels, pos = formatter.format_batch(layers, ks, [r.question for r in rows], [r.target for r in rows])
    cols = {
        "task": pa.array([r.task for r in rows]), "dataset": pa.array([r.dataset for r in rows]),
        "question": pa.array([r.question for r in rows]),
        "context_input_ids": _list_array([r.context_input_ids for r in rows]),
        "context_positions": _list_array([r.context_positions for r in rows]),
        "layer": pa.array([r.layer for r in rows], pa.int32()), "input_ids": _list_array(ids),
        "labels": _list_array(labels), "positions": _list_array(pos),
        "target": pa.array([r.target for r in rows]), "variant": pa.array([r.variant for r in rows]),
        "split": pa.array([split] * len(rows)), "label": pa.array([r.label for r in rows]),
    }
    if multi_layers:
        cols[LAYERS_COLUMN] = _list_array([np.asarray(multi_layers, dtype=np.int32)] * len(rows))
    return pa.RecordBatch.from_arrays([cols[c] for c in columns(bool(multi_layers))], schema=schema)


def write_split(out: Path, split: str, rows: Iterable[Row], total: int, formatter: OracleFormatter,
                shard_size: int, fingerprint: str, progress=None, multi_layers=None) -> int:
    """Write rows as `datasets.save_to_disk` does: data-XXXXX-of-YYYYY.arrow + dataset_info.json + state.json.
    `multi_layers`: every row reads these layers (a multi-layer mixture)."""
    import pyarrow as pa

    feats = features(bool(multi_layers))
    schema = feats.arrow_schema
    out.mkdir(parents=True, exist_ok=True)
    n_shards = max(1, math.ceil(total / shard_size))
    names = [f"data-{i:05d}-of-{n_shards:05d}.arrow" for i in range(n_shards)]
    written, shard, writer, sink, chunk = 0, -1, None, None, []

    def flush(chunk):
        nonlocal written, shard, writer, sink
        while chunk:
            if writer is None or written >= (shard + 1) * shard_size:
                if writer is not None:
                    writer.close()
                    sink.close()
                shard += 1
                sink = pa.OSFile(str(out / names[shard]), "wb")
                writer = pa.ipc.new_stream(sink, schema)
            room = (shard + 1) * shard_size - written
            part, chunk = chunk[:room], chunk[room:]
            writer.write_batch(_record_batch(part, split, formatter, schema, multi_layers))
            written += len(part)
            if progress is not None:
                progress.update(len(part))

    for row in rows:
        chunk.append(row)
        if len(chunk) == CHUNK:
            flush(chunk)
            chunk = []
    flush(chunk)
    if writer is None:  # empty split: one empty shard keeps load_from_disk happy
        sink = pa.OSFile(str(out / names[0]), "wb")
        writer = pa.ipc.new_stream(sink, schema)
        shard = 0
    writer.close()
    sink.close()
    info = {"citation": "", "description": "Activation Oracle training examples (token ids only).",
            "features": feats.to_dict(), "homepage": "", "license": ""}
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2))
    state = {"_data_files": [{"filename": n} for n in names[: shard + 1]], "_fingerprint": fingerprint,
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": split}
    (out / "state.json").write_text(json.dumps(state, indent=2))
    return written


# ----------------------------------------------------------------------------- public API


def _read_meta(out: Path) -> dict | None:
    try:
        return json.loads((out / META_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def default_out_dir(key: str) -> Path:
    from ..models import cache_dir

    return cache_dir() / "data" / key[:20]


def saved_dir(dd) -> Path:
    """The directory a built or loaded mixture (DatasetDict) lives in."""
    return Path(dd["train"].cache_files[0]["filename"]).parent.parent


def build_mixture(config: MixtureConfig | str | Path | None = None, tokenizer=None, out_dir: str | Path | None = None,
                  *, n_layers: int | None = None, progress: bool = False, force: bool = False, log=print):
    """Build (or reuse) the mixture and return it as a DatasetDict with splits train and test.

    `config`: a MixtureConfig, a YAML path, or None for the built-in offline mixture. `tokenizer`/`n_layers`:
    default to the config's model. `out_dir`: default `<cache>/data/<key>`. A directory built from the same
    key is reused; one built from another key is rebuilt (never silently reused); `force` always rebuilds.
    """
    if config is None:
        config = MixtureConfig.builtin()
    elif not isinstance(config, MixtureConfig):
        config = MixtureConfig.from_yaml(config)
    cfg = config.validate().resolved()
    if tokenizer is None:
        tokenizer, n = load_tokenizer(cfg.model)
        n_layers = n_layers or n
    if n_layers is None:
        raise DataError("n_layers is required when a tokenizer is given")
    key = mixture_key(cfg, tokenizer, n_layers)
    out = Path(out_dir) if out_dir is not None else default_out_dir(key)
    meta = _read_meta(out)
    if out.exists() and any(out.iterdir()) and meta is None:
        raise DataError(f"{out}: exists and is not an `ao data` directory; choose another --out")
    if meta is not None and meta.get("key") == key and not force:
        log(f"reusing {out} (key {key[:12]})")
        return load_mixture(out)
    if meta is not None:
        log(f"{out}: built from a different config/tokenizer/source (key {meta.get('key', '?')[:12]} != "
            f"{key[:12]}); rebuilding" if meta.get("key") != key else f"{out}: rebuilding (force)")
    t0 = time.time()
    plan = Plan(cfg, tokenizer, n_layers)
    formatter = OracleFormatter(tokenizer)
    with atomic_directory(out) as tmp:
        counts = {}
        for split in ("train", "test"):
            streams = plan.streams(split)
            total = sum(c for _, c, _ in streams)
            counts[split] = {n: c for n, c, _ in streams}
            rows = interleave(streams, cfg.seed) if split == "train" else chained(streams)
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, desc=f"ao data build [{split}]", unit="ex", smoothing=0.05)
            write_split(tmp / split, split, rows, total, formatter, cfg.shard_size, f"{key[:16]}{split}", bar,
                        multi_layers=plan.multi_layers)
            if bar is not None:
                bar.close()
        (tmp / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
        meta = {
            "key": key, "builder_version": BUILDER_VERSION, "model": cfg.model, "n_layers": n_layers,
            "layers": plan.layers, "multi_layer": cfg.multi_layer, "config": cfg.to_dict(), "counts": counts,
            "skipped_too_short": dict(plan.cp.skipped) if plan.cp else {}, "seconds": round(time.time() - t0, 1),
            "fast_oracle_format": formatter.exact_fast, "tokenizer": vocab_fingerprint(tokenizer),
            "sources": plan.sources(),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        (tmp / MIXTURE_YAML).write_text(cfg.to_yaml())
    return load_mixture(out)


def load_mixture(path: str | Path, *, model: str | None = None, tokenizer=None):
    """The DatasetDict (train, test) of a built mixture directory (memory-mapped). With `model` (a model
    spec, and optionally its already loaded `tokenizer`), refuse a mixture built for another tokenizer."""
    import datasets

    path = Path(path)
    meta = _read_meta(path)
    if meta is None:
        raise DataError(f"{path}: not a built mixture (no {META_FILE}); run `ao data build --out {path}`")
    if meta.get("builder_version") != BUILDER_VERSION:
        raise DataError(f"{path}: built by data builder v{meta.get('builder_version')}, this is v{BUILDER_VERSION}; rebuild it")
    if model is not None:
        check_tokenizer(path, tokenizer if tokenizer is not None else load_tokenizer(model)[0], model, meta=meta)
    return datasets.load_from_disk(str(path))


def mixture_info(path: str | Path) -> dict:
    meta = _read_meta(Path(path))
    if meta is None:
        raise DataError(f"{path}: not a built mixture (no {META_FILE})")
    return meta
