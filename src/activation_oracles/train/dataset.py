"""Opening a saved training mixture (memory-mapped Arrow) and the per-example statistics batching needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..data.schema import LAYERS_COLUMN
from ..prompt import IGNORE_INDEX
from .batching import length_filter
from .config import ConfigError, TrainConfig

REQUIRED = ("task", "input_ids", "labels", "positions", "context_input_ids", "context_positions", "layer")


def _list_lengths(ds, column: str) -> np.ndarray:
    arr = ds.data.column(column).combine_chunks()
    off = arr.offsets.to_numpy()
    return np.diff(off).astype(np.int64)


def _label_counts(ds) -> np.ndarray:
    """Per example: labelled next-token targets, i.e. labels[1:] != IGNORE_INDEX."""
    arr = ds.data.column("labels").combine_chunks()
    off = arr.offsets.to_numpy().astype(np.int64)
    vals = arr.values.to_numpy(zero_copy_only=False)
    hit = (vals != IGNORE_INDEX).astype(np.int64)
    starts = off[:-1]
    nonempty = off[1:] > starts
    hit[starts[nonempty]] = 0  # the first token is never a target
    csum = np.concatenate([[0], np.cumsum(hit)])
    return csum[off[1:]] - csum[off[:-1]]


@dataclass
class TrainData:
    """The kept training rows of a split and their lengths and label counts."""

    ds: object  # datasets.Dataset (memory-mapped)
    rows: np.ndarray  # kept row indices into ds
    lengths: np.ndarray  # oracle tokens of each kept row
    label_counts: np.ndarray  # labelled targets of each kept row
    dropped: int  # rows dropped as longer than the length percentile
    stages: list = field(default_factory=list)  # data.curriculum: (steps, indices into the kept set) per stage

    def __len__(self):
        return len(self.rows)

    def get(self, kept_idx) -> list[dict]:
        """Rows (as dicts) for indices into the kept set."""
        idx = [int(self.rows[i]) for i in kept_idx]
        cols = self.ds[idx]
        return [{k: cols[k][j] for k in cols} for j in range(len(idx))]


def resolve_data_dir(cfg: TrainConfig) -> Path | None:
    """The mixture directory given by data.path (checked to exist); None means the built-in mixture."""
    if cfg.data.path is None:
        return None
    p = Path(cfg.data.path).expanduser()
    if not p.is_dir():
        raise ConfigError("data.path", f"no such directory: {p}")
    return p


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) and v else v
    return out


def _with_overrides(cfg: TrainConfig, mcfg):
    from ..data.config import DataError, MixtureConfig

    mcfg.layer_percents = list(cfg.data.layer_percents)
    mcfg.multi_layer = cfg.data.multi_layer
    if cfg.data.builtin_mixture:
        try:
            mcfg = MixtureConfig.from_dict(_merge(mcfg.to_dict(), cfg.data.builtin_mixture), where="data.builtin_mixture")
            mcfg.validate()
        except DataError as err:
            raise ConfigError("data.builtin_mixture", str(err)) from None
    return mcfg


def builtin_mixture_config(cfg: TrainConfig, scale: float | None = None, model: str | None = None):
    """The built-in offline mixture as this config trains on it: its layers, scale, seed and
    `data.builtin_mixture` settings."""
    from ..data.config import MixtureConfig

    mcfg = MixtureConfig.builtin(model=model or cfg.model.spec, scale=scale or cfg.data.builtin_scale, seed=cfg.train.seed)
    return _with_overrides(cfg, mcfg)


def mixture_config(cfg: TrainConfig):
    """The mixture `data.mixture` names, for this config's model, layers and seed (data.path null)."""
    from ..data.config import DataError, MixtureConfig

    if cfg.data.mixture == "builtin":
        return builtin_mixture_config(cfg)
    try:
        mcfg = MixtureConfig.from_yaml(cfg.data.mixture)
    except DataError as err:
        raise ConfigError("data.mixture", str(err)) from None
    mcfg.model, mcfg.seed = cfg.model.spec, cfg.train.seed
    return _with_overrides(cfg, mcfg)


def build_configured_mixture(cfg: TrainConfig, *, progress: bool = False) -> Path:
    """Build (or reuse from the cache) the mixture data.mixture names, for this config's model. A mixture
    that cannot be built stops the run with the command that builds it; nothing falls back to another."""
    try:
        from ..data.config import DataError
        from ..data.mixture import build_mixture, saved_dir
    except ImportError as err:
        raise ConfigError("data.path", f"no --data given and the mixture builder is unavailable ({err}); "
                                       "build one with `ao data build --out DIR` and pass --data DIR") from None
    mcfg = mixture_config(cfg)
    try:
        # The data module's cache, keyed by the content hash: `ao demo` and `ao train` share one build.
        return saved_dir(build_mixture(mcfg, progress=progress, log=lambda *a, **k: None))
    except (DataError, OSError) as err:
        from ..data.config import paper_build_command

        name = cfg.data.mixture
        how = (f"`{paper_build_command(cfg.model.spec)}` (the paper's sources: the reference repository's "
               "datasets/ folder and the Hugging Face hub, or --hub-mirror DIR; docs/data.md)" if name == "paper" else
               f"`ao data build {name} --model {cfg.model.spec} --out DIR` (with the source paths of a copy of its "
               "YAML pointing at your data)")
        raise ConfigError("data.path", f"no --data given, so the {name!r} mixture (data.mixture) was to be built for "
                                       f"{cfg.model.spec!r} from its configured sources, and that failed: {err}. "
                                       f"Build it with {how} and pass --data DIR") from None


_SIZES = ("count", "test_count", "counts")  # how much of each task: a scale, not another recipe


def _settings(mixture: dict) -> dict:
    """A mixture config without what the run sets anyway (model, seed) and without its sizes."""
    def strip(d):
        return {k: strip(v) if isinstance(v, dict) else v for k, v in d.items() if k not in _SIZES}

    return {k: v for k, v in strip(mixture).items() if k not in ("model", "seed")}


def recipe_note(cfg: TrainConfig, data_dir: Path) -> str | None:
    """What `--data DIR` replaces: the config's data recipe (data.mixture, data.builtin_mixture) when DIR was
    built from other settings (sizes aside); None when DIR holds the recipe's mixture (as `ao demo` builds it,
    at any --data-scale) or was not built by `ao data build`."""
    from ..data.mixture import DataError, mixture_info

    try:
        built = dict(mixture_info(data_dir).get("config") or {})
        recipe = mixture_config(cfg).resolved().to_dict()
    except (DataError, ConfigError, OSError):
        return None
    if not built or _settings(built) == _settings(recipe):
        return None

    def tasks(d: dict) -> str:
        c = d.get("classification") or {}
        return f"train {', '.join(c.get('train_tasks') or []) or '-'}; eval {', '.join(c.get('eval_tasks') or []) or '-'}"

    extra = " and data.builtin_mixture" if cfg.data.mixture == "builtin" and cfg.data.builtin_mixture else ""
    return (f"--data {data_dir} replaces the config's data recipe (data.mixture {cfg.data.mixture}{extra}): the run "
            f"trains on that directory's mixture as it was built (classification {tasks(built)}), not on the "
            f"recipe's (classification {tasks(recipe)}). Leave out --data to train on the recipe (built once and "
            "cached); data.task_weights and data.curriculum apply either way.")


def check_data_tokenizer(cfg: TrainConfig, data_dir: Path, tokenizer=None) -> None:
    """Refuse a mixture `ao data build` made for another tokenizer (loads only the model's tokenizer);
    a dataset saved by other means carries no record to check, which gets a warning."""
    import warnings

    from ..data.mixture import META_FILE, DataError, check_tokenizer, load_tokenizer

    if not (Path(data_dir) / META_FILE).is_file():
        warnings.warn(f"{data_dir} has no {META_FILE} (not built by `ao data build`), so nothing shows which "
                      f"tokenizer its ids are for; make sure it was built for {cfg.model.spec!r}", stacklevel=2)
        return
    try:
        check_tokenizer(data_dir, tokenizer if tokenizer is not None else load_tokenizer(cfg.model.spec)[0],
                        cfg.model.spec)
    except DataError as err:
        raise ConfigError("data.path", str(err)) from None


def open_split(path: Path, split: str, field: str):
    import datasets

    try:
        dd = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise ConfigError("data.path", f"{path} is not a dataset saved with save_to_disk ({err})") from None
    if isinstance(dd, datasets.Dataset):
        if split != "train":
            return None
        ds = dd
    else:
        if split not in dd:
            if field == "data.eval_split":
                return None
            raise ConfigError(field, f"{path} has no split {split!r}; it has {sorted(dd)}")
        ds = dd[split]
    missing = [c for c in REQUIRED if c not in ds.column_names]
    if missing:
        raise ConfigError("data.path", f"{path} split {split!r} lacks the columns {missing}")
    return ds


def weighted_subset(tasks: np.ndarray, keep: np.ndarray, weights: dict[str, float], seed: int) -> np.ndarray:
    """The largest subset of `keep` whose task shares follow `weights`, each task's rows drawn at random
    (seeded); tasks weighted 0 or not named are dropped, weighted tasks the data lacks are ignored."""
    names = list(np.unique(tasks[keep]))
    share = {t: w for t, w in weights.items() if w > 0 and t in names}
    if not share:
        raise ConfigError("data.task_weights", f"none of the weighted tasks {sorted(weights)} has training rows; "
                                               f"the data has {sorted(names)}")
    total = sum(share.values())
    bucket = np.searchsorted(np.asarray(names), tasks[keep])
    return _stratified(keep, bucket, [share.get(t, 0) / total for t in names], seed)


def _matches(ds, keep: np.ndarray, where: dict, field: str) -> np.ndarray:
    """Boolean mask over `keep`: the rows whose columns take one of the listed values, for every column."""
    hit = np.ones(len(keep), dtype=bool)
    for col, vals in where.items():
        if col not in ds.column_names:
            raise ConfigError(f"{field}.{col}", f"the data has no column {col!r}; it has {sorted(ds.column_names)}")
        # Arrow compute: a million rows must not become a million Python strings
        column = pc.cast(ds.data.column(col), pa.string())
        match = pc.is_in(column, value_set=pa.array([str(v) for v in vals])).to_numpy(zero_copy_only=False)
        hit &= match[keep]
    return hit


def drop_excluded(ds, keep: np.ndarray, exclude: list[dict]) -> np.ndarray:
    """`keep` without the rows that match one of data.exclude's `where` mappings."""
    for i, where in enumerate(exclude):
        keep = keep[~_matches(ds, keep, where, f"data.exclude[{i}]")]
    return keep


def _stratified(rows: np.ndarray, bucket: np.ndarray, shares: list[float], seed: int) -> np.ndarray:
    """The largest subset of `rows` in which bucket k (rows with bucket == k) makes up shares[k]; each
    bucket's rows are drawn at random (seeded); rows of a bucket with share 0 are dropped."""
    rng = np.random.default_rng(seed)
    parts = [rows[bucket == k] for k in range(len(shares))]
    scale = min(len(part) / sh for part, sh in zip(parts, shares) if sh > 0)
    picked = []
    for part, sh in zip(parts, shares):
        n = min(len(part), max(1, int(round(scale * sh)))) if sh > 0 else 0
        picked.append(part if n == len(part) else rng.choice(part, size=n, replace=False))
    return np.sort(np.concatenate(picked))


def _mix_rows(ds, keep: np.ndarray, rows: np.ndarray, mix, seed: int, field: str) -> np.ndarray:
    """The stage's rows resampled to the shares of its mix buckets (see curriculum_rows)."""
    buckets = [mix] if isinstance(mix, dict) else list(mix)  # the single-mapping form is one bucket
    names = [f"{field}[{k}]" if isinstance(mix, list) else field for k in range(len(buckets))]
    bucket = np.full(len(rows), len(buckets), dtype=np.int64)  # the rest: rows no bucket matches
    for k in reversed(range(len(buckets))):  # a row belongs to the first bucket it matches
        bucket[_matches(ds, keep, buckets[k]["where"], f"{names[k]}.where")[rows]] = k
    shares = [float(bk["share"]) for bk in buckets]
    rest = 1.0 - sum(shares)
    shares.append(rest if rest > 1e-9 else 0.0)  # shares written to add up to 1 may miss it by a rounding
    for k, sh in enumerate(shares):
        if sh > 0 and not (bucket == k).any():
            if k < len(buckets):
                raise ConfigError(f"{names[k]}.where", f"matches none of the stage's rows, so its share {sh:g} "
                                                       "cannot be met; name values some of the stage's rows have")
            raise ConfigError(field, f"every row of the stage matches a bucket, so the rest's share {sh:g} "
                                     "cannot be met; widen the stage's where or let the shares add up to 1")
    return _stratified(rows, bucket, shares, seed)


def curriculum_rows(ds, keep: np.ndarray, curriculum: list[dict], batch_size: int,
                    seed: int = 0) -> list[tuple[int, np.ndarray]]:
    """Per data.curriculum stage: its step count and the indices into `keep` of the rows it matches. A stage
    with `mix: {share: p, where: {...}}` keeps its rows matching mix.where in the proportion p to 1 - p for
    the others (e.g. a gradual move from one class asked to every class); `mix: [{share, where}, ...]` sets
    the share of each bucket (a row belongs to the first it matches; the rows no bucket matches get 1 - the
    sum of the shares)."""
    stages = []
    for i, st in enumerate(curriculum):
        rows = np.flatnonzero(_matches(ds, keep, st["where"], f"data.curriculum[{i}].where"))
        if "mix" in st and len(rows):
            rows = _mix_rows(ds, keep, rows, st["mix"], seed + 1 + i, f"data.curriculum[{i}].mix")
        if len(rows) < batch_size:
            raise ConfigError(f"data.curriculum[{i}].where", f"matches {len(rows)} training rows, fewer than one "
                                                             f"batch of {batch_size}; widen the filter")
        stages.append((int(st["steps"]), rows))
    return stages


def multi_layers(ds) -> list[int] | None:
    """The source layers every row of a multi-layer mixture reads (in prompt order); None when single-layer."""
    if LAYERS_COLUMN not in ds.column_names or len(ds) == 0:
        return None
    return [int(x) for x in ds[0][LAYERS_COLUMN]]


def check_multi_layer(cfg: TrainConfig, ds, path) -> None:
    has = LAYERS_COLUMN in ds.column_names
    if has != cfg.data.multi_layer:
        built = "multi-layer (every row reads several layers)" if has else "single-layer"
        fix = ("set data.multi_layer: true" if has else
               f"rebuild it with multi_layer: true in the mixture YAML (ao data build CONFIG --out {path})")
        raise ConfigError("data.multi_layer", f"is {str(cfg.data.multi_layer).lower()} but {path} was built "
                                              f"{built}; {fix}")


def open_train_data(cfg: TrainConfig, path: Path) -> TrainData:
    ds = open_split(path, cfg.data.train_split, "data.train_split")
    check_multi_layer(cfg, ds, path)
    n = len(ds)
    if cfg.data.max_train_examples is not None:
        n = min(n, cfg.data.max_train_examples)
    # group-by-length on the oracle inputs, as in the paper (contexts are length-grouped inside the batch)
    lengths = _list_lengths(ds, "input_ids")[:n]
    counts = _label_counts(ds)[:n]
    keep = length_filter(lengths, cfg.data.max_length_percentile)
    keep = keep[counts[keep] > 0]
    keep = drop_excluded(ds, keep, cfg.data.exclude)
    if cfg.data.task_weights:
        tasks = np.asarray(ds.data.column("task").to_numpy(zero_copy_only=False)[:n])
        keep = weighted_subset(tasks, keep, cfg.data.task_weights, cfg.train.seed)
    if len(keep) < cfg.train.batch_size:
        raise ConfigError(
            "train.batch_size",
            f"{cfg.train.batch_size} is larger than the {len(keep)} usable training examples in {path}",
        )
    stages = curriculum_rows(ds, keep, cfg.data.curriculum, cfg.train.batch_size, seed=cfg.train.seed)
    return TrainData(ds=ds, rows=keep, lengths=lengths[keep], label_counts=counts[keep], dropped=n - len(keep),
                     stages=stages)
