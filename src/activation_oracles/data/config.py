"""The mixture configuration (YAML): per-task counts, layers, ratios, seed and sources."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..fsutil import TextEncodingError, read_text
from .classification import ALL_TASKS, CLS_VARIANTS, EVAL_TASKS, TRAIN_TASKS
from .schema import TASKS, DataError
from .spqa import SOURCE_FILES as SPQA_FILES

PACKAGED = ("builtin", "paper")
PAPER_COUNTS = {"spqa": 64_000, "classification": 48_000, "context_prediction": 600_000}
# Sources written "ref:<path>" are <path> inside the reference repository's datasets/ folder (reference_data).
REF_PREFIX = "ref:"
REFERENCE_REPO = "https://github.com/adamkarvonen/activation_oracles"
REFERENCE_FIX = (f"clone {REFERENCE_REPO} (`git clone {REFERENCE_REPO}`) and pass --reference-data "
                 "activation_oracles/datasets (or set reference_data: in the mixture YAML)")


def paper_build_command(model: str, out: str = "DIR") -> str:
    """The command that builds the paper's mixture for `model` (what `ao train paper-*` without --data prints)."""
    return f"ao data build --preset paper --model {model} --reference-data activation_oracles/datasets --out {out}"


@dataclass
class SpqaConfig:
    count: int = 64_000
    test_count: int = 1_000
    source: str = "builtin"  # "builtin", a LatentQA directory, or a hub dataset id
    # Behaviour files read from a directory source, among system, stimulus_completion, stimulus, control
    # (the paper trains on the last three)
    files: list[str] = field(default_factory=lambda: list(SPQA_FILES))
    test_fraction: float = 0.1  # of labels (hidden instructions), held out whole
    all_fraction: float = 0.5  # "all remaining tokens" vs a short window
    window: list[int] = field(default_factory=lambda: [1, 3])
    offset: list[int] = field(default_factory=lambda: [1, 10])


@dataclass
class VariantConfig:
    questions_per_context: int = 1
    min_offset: int = 1
    max_offset: int = 5
    min_window: int = 1
    max_window: int = 1


@dataclass
class ClassificationConfig:
    count: int = 48_000  # train examples per train task
    test_count: int = 250  # test examples per task and per variant
    source: str = "builtin"  # "builtin", "hub", or a directory in the layout of shared/data/classification
    sources: dict[str, str] = field(default_factory=dict)  # per-task override of `source`
    counts: dict[str, int] = field(default_factory=dict)  # per-task override of `count`
    # A question.json (the reference's paraphrases/question.json layout) whose paraphrases every task it
    # names is asked with, hub tasks included; empty: the source directory's own, else the project's.
    questions: str = ""
    train_tasks: list[str] = field(default_factory=lambda: list(TRAIN_TASKS))
    eval_tasks: list[str] = field(default_factory=lambda: list(EVAL_TASKS))
    single_multi_ratio: list[float] = field(default_factory=lambda: [2, 1])
    # Share of train examples per input variant: single (one token), multi (a window of tokens) and full
    # (every token of the read prompt, as `Oracle.ask` reads a text with positions="all"). Empty: the two
    # variants of single_multi_ratio. Every variant named here gets a test set, weight 0 included.
    variant_weights: dict[str, float] = field(default_factory=dict)
    # Share of questions that start with "Answer with 'Yes' or 'No' only." (the rest are asked bare, as
    # users ask them).
    yes_no_prefix: float = 1.0
    # Per task, the only classes questions ask about (e.g. {sst2: [positive]}): the answer then reads
    # the activation alone instead of its interplay with the question; contexts are balanced so that
    # half the answers are Yes. Empty: every class, half the questions about a class the context has.
    ask_classes: dict[str, list[str]] = field(default_factory=dict)
    single: VariantConfig = field(default_factory=lambda: VariantConfig(2, 1, 5, 1, 1))
    multi: VariantConfig = field(default_factory=lambda: VariantConfig(1, 1, 5, 1, 50))


@dataclass
class ContextPredictionConfig:
    count: int = 600_000
    test_count: int = 1_000
    # Each: {path: file|dir|"builtin", weight: float, kind: text|chat (builtin only), name: optional}
    sources: list[dict] = field(default_factory=lambda: [{"path": "builtin", "kind": "text", "weight": 0.5},
                                                         {"path": "builtin", "kind": "chat", "weight": 0.5}])
    test_fraction: float = 0.05  # of documents, held out whole
    max_tokens: int = 512
    k_multi: list[int] = field(default_factory=lambda: [1, 50])
    j: list[int] = field(default_factory=lambda: [1, 50])  # the paper's main text says 1-20
    single_fraction: float = 0.5  # K = 1
    past_fraction: float = 0.5


@dataclass
class MixtureConfig:
    model: str = "smollm2-135m"
    seed: int = 0
    # The reference repository's datasets/ folder, which "ref:" sources are read from (--reference-data)
    reference_data: str | None = None
    # A directory holding hub datasets as DIR/<org>/<name>/, read instead of the hub (--hub-mirror)
    hub_mirror: str | None = None
    layer_percents: list[float] = field(default_factory=lambda: [25, 50, 75])
    # false: each example reads one of the layers; true: every example reads all of them at once, one
    # "Layer: L" block of placeholders per layer (the multi-layer oracle format)
    multi_layer: bool = False
    allow_recycle: bool = False  # reuse source items when a count exceeds what a source holds
    shard_size: int = 250_000  # rows per Arrow file
    spqa: SpqaConfig = field(default_factory=SpqaConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    context_prediction: ContextPredictionConfig = field(default_factory=ContextPredictionConfig)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def builtin(cls, model: str = "smollm2-135m", scale: float = 1.0, seed: int = 0) -> "MixtureConfig":
        """The offline mixture from the project's own data (what `ao data build` builds with no CONFIG)."""
        return cls(
            model=model, seed=seed, allow_recycle=True,
            spqa=SpqaConfig(count=3000, test_count=300, source="builtin", test_fraction=0.15),
            classification=ClassificationConfig(count=1500, test_count=150, source="builtin"),  # the paper's tasks
            context_prediction=ContextPredictionConfig(count=6000, test_count=300, j=[1, 20]),
        ).scaled(scale)

    @classmethod
    def paper(cls, reference_data: str | Path | None = None, *, hub_mirror: str | Path | None = None,
              model: str | None = None, seed: int | None = None, scale: float = 1.0,
              text_source: str | None = None, chat_source: str | None = None) -> "MixtureConfig":
        """The paper's mixture from the paper's sources (the packaged data_paper.yaml): the reference
        repository's datasets/ folder (`reference_data`) and the hub (or `hub_mirror`)."""
        cfg = cls.from_yaml(packaged_config("paper"))
        cfg.reference_data = None if reference_data is None else str(reference_data)
        cfg.hub_mirror = None if hub_mirror is None else str(hub_mirror)
        cfg.model = model or cfg.model
        cfg.seed = cfg.seed if seed is None else seed
        if text_source:
            cfg = cfg.with_cp_source("text", text_source)
        if chat_source:
            cfg = cfg.with_cp_source("chat", chat_source)
        return cfg.scaled(scale)

    @classmethod
    def standins(cls, root: str | Path, model: str = "smollm2-135m", seed: int = 0) -> "MixtureConfig":
        """Paper-size counts (1M examples) from the local stand-ins in the layout of shared/data (the
        development machines' copy; not the paper's sources, see shared/data/PROVENANCE.md)."""
        root = Path(root)
        return cls(
            model=model, seed=seed,
            spqa=SpqaConfig(source=str(root / "latentqa" / "eval")),
            classification=ClassificationConfig(source=str(root / "classification")),
            context_prediction=ContextPredictionConfig(sources=[
                {"path": str(root / "context_prediction" / "web_text.jsonl.gz"), "weight": 0.5},
                {"path": str(root / "context_prediction" / "chat.jsonl.gz"), "weight": 0.5}]),
        )

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "MixtureConfig":
        return _from_dict(cls, d or {}, where)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "MixtureConfig":
        """Read a YAML file; the names "builtin" and "paper" (no such file here) mean the packaged ones."""
        path = Path(path)
        if not path.exists() and str(path) in PACKAGED:
            path = packaged_config(str(path))
        if not path.is_file():
            raise DataError(f"{path}: mixture config not found")
        try:
            d = yaml.safe_load(read_text(path))
        except TextEncodingError as e:
            raise DataError(str(e)) from None
        except yaml.YAMLError as e:
            raise DataError(f"{path}: not valid YAML ({e})") from None
        if d is not None and not isinstance(d, dict):
            raise DataError(f"{path}: the top level must be a mapping")
        return cls.from_dict(d, str(path))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def scaled(self, scale: float) -> "MixtureConfig":
        """A copy with every train and test count multiplied by `scale` (a non-zero count stays >= 1)."""
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < float("inf"):
            raise DataError(f"scale={scale!r} must be a number > 0 (every count is multiplied by it; e.g. 0.001)")
        d = self.to_dict()
        s = lambda n: max(1, int(round(n * scale))) if n else 0  # noqa: E731
        for fam in TASKS:
            d[fam]["count"], d[fam]["test_count"] = s(d[fam]["count"]), s(d[fam]["test_count"])
        d["classification"]["counts"] = {k: s(v) for k, v in d["classification"]["counts"].items()}
        return MixtureConfig.from_dict(d)

    def with_cp_source(self, kind: str, spec: str) -> "MixtureConfig":
        """A copy whose context-prediction source of this `kind` (text or chat) reads `spec` instead: a local
        file or directory, or a hub dataset ID[@CONFIG][:SPLIT]; its weight stays."""
        d, option = self.to_dict(), f"--{kind}-source"
        found = [s for s in d["context_prediction"]["sources"] if s.get("kind") == kind]
        if len(found) != 1:
            raise DataError(f"{option}: the config has {len(found)} context_prediction sources with kind: {kind}; "
                            "edit context_prediction.sources in the mixture YAML instead")
        src = found[0]
        for k in ("name", "split", "subset", "limit"):
            src.pop(k, None)
        local = Path(os.path.expandvars(spec)).expanduser()
        hid, _, split = spec.partition(":")
        hid, _, subset = hid.partition("@")
        if local.exists():
            src["path"] = str(local)
        elif _looks_like_hub(hid):
            src["path"] = f"hf:{hid}"
            src.update({k: v for k, v in (("subset", subset), ("split", split)) if v})
        else:
            raise DataError(f"{option} {spec!r}: neither a local file/directory nor a hub id ORG/NAME[@CONFIG][:SPLIT]")
        return MixtureConfig.from_dict(d)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    # ------------------------------------------------------------------ checks
    def validate(self) -> "MixtureConfig":
        c = self.classification
        for t in list(c.train_tasks) + list(c.eval_tasks) + list(c.sources) + list(c.counts) + list(c.ask_classes):
            if t not in ALL_TASKS:
                raise DataError(f"classification: unknown task name {t!r}; known: {', '.join(ALL_TASKS)}")
        both = set(c.train_tasks) & set(c.eval_tasks)
        if both:
            raise DataError(f"classification: task(s) {sorted(both)} are in both train_tasks and eval_tasks")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise DataError(f"seed={self.seed!r} must be an integer >= 0")
        if not self.layer_percents or any(not 0 <= p <= 100 for p in self.layer_percents):
            raise DataError(f"layer_percents={self.layer_percents}: give percents between 0 and 100")
        if not isinstance(self.multi_layer, bool):
            raise DataError(f"multi_layer={self.multi_layer!r} must be true or false")
        if self.multi_layer and len(set(self.layer_percents)) < 2:
            raise DataError(f"multi_layer: true needs at least two layer_percents, got {self.layer_percents}")
        for name, n in [("spqa.count", self.spqa.count), ("classification.count", c.count),
                        ("context_prediction.count", self.context_prediction.count),
                        *[(f"classification.counts.{k}", v) for k, v in c.counts.items()]]:
            if not isinstance(n, int) or n < 0:
                raise DataError(f"{name}={n!r} must be a non-negative integer")
        for name, r in [("context_prediction.k_multi", self.context_prediction.k_multi),
                        ("context_prediction.j", self.context_prediction.j),
                        ("spqa.window", self.spqa.window), ("spqa.offset", self.spqa.offset)]:
            if len(r) != 2 or not 1 <= r[0] <= r[1]:
                raise DataError(f"{name}={r}: give [min, max] with 1 <= min <= max")
        for t, cl in c.ask_classes.items():
            if not isinstance(cl, list) or not cl or not all(isinstance(x, str) for x in cl):
                raise DataError(f"classification.ask_classes.{t}={cl!r}: give a non-empty list of class names")
        if not self.spqa.files or set(self.spqa.files) - set(SPQA_FILES):
            raise DataError(f"spqa.files={self.spqa.files!r}: give some of {list(SPQA_FILES)}")
        if len(c.single_multi_ratio) != 2 or sum(c.single_multi_ratio) <= 0:
            raise DataError(f"classification.single_multi_ratio={c.single_multi_ratio}: give [single, multi]")
        if not isinstance(c.yes_no_prefix, (int, float)) or not 0 <= c.yes_no_prefix <= 1:
            raise DataError(f"classification.yes_no_prefix={c.yes_no_prefix!r}: give a share between 0 and 1")
        w = c.variant_weights
        if w and (not isinstance(w, dict) or set(w) - set(CLS_VARIANTS) or sum(w.values()) <= 0
                  or any(not isinstance(x, (int, float)) or x < 0 for x in w.values())):
            raise DataError(f"classification.variant_weights={w!r}: map some of {list(CLS_VARIANTS)} to "
                            "non-negative weights, at least one positive")
        return self

    def variant_shares(self) -> dict[str, float]:
        """Train share of each classification input variant (the test split has every one named)."""
        c = self.classification
        w = c.variant_weights or dict(zip(("single", "multi"), c.single_multi_ratio))
        total = sum(w.values())
        return {v: w[v] / total for v in CLS_VARIANTS if v in w}

    def resolved(self) -> "MixtureConfig":
        """Paths expanded ($VARS, ~, "ref:" against reference_data) and made absolute, so hashes do not depend
        on the working directory; the result no longer needs reference_data."""
        d = self.to_dict()
        ref = d["reference_data"]

        def fix(p, where):
            if isinstance(p, str) and p.startswith(REF_PREFIX):
                if not ref:
                    raise DataError(f"{where}={p!r} is read from the reference repository's datasets/ folder, and no "
                                    f"reference data was given: {REFERENCE_FIX}")
                p = str(Path(os.path.expandvars(ref)).expanduser() / p[len(REF_PREFIX):])
            if not p or p in ("builtin", "hub") or (isinstance(p, str) and (p.startswith("hf:") or _looks_like_hub(p))):
                return p
            return str(Path(os.path.expandvars(str(p))).expanduser().resolve())

        if ref:
            d["reference_data"] = fix(ref, "reference_data")
            if not Path(d["reference_data"]).is_dir():
                raise DataError(f"reference_data {d['reference_data']}: not a directory; {REFERENCE_FIX}")
        if d["hub_mirror"]:
            d["hub_mirror"] = fix(d["hub_mirror"], "hub_mirror")
            if not Path(d["hub_mirror"]).is_dir():
                raise DataError(f"hub_mirror {d['hub_mirror']}: not a directory (give a folder holding hub "
                                "datasets as DIR/<org>/<name>/, see docs/data.md)")
        d["spqa"]["source"] = fix(d["spqa"]["source"], "spqa.source")
        c = d["classification"]
        c["source"] = fix(c["source"], "classification.source")
        c["sources"] = {k: fix(v, f"classification.sources.{k}") for k, v in c["sources"].items()}
        c["questions"] = fix(c["questions"], "classification.questions")
        for i, s in enumerate(d["context_prediction"]["sources"]):
            if "path" in s:
                s["path"] = fix(s["path"], f"context_prediction.sources[{i}].path")
        return MixtureConfig.from_dict(d)


def packaged_config(name: str) -> Path:
    """Path of a YAML shipped in activation_oracles/builtin: "builtin" or "paper"."""
    if name not in PACKAGED:
        raise DataError(f"no packaged mixture {name!r}; packaged: {', '.join(PACKAGED)}")
    return Path(__file__).resolve().parents[1] / "builtin" / f"data_{name}.yaml"


def _looks_like_hub(p: str) -> bool:
    parts = p.split("/")
    return len(parts) == 2 and all(parts) and not Path(os.path.expandvars(p)).expanduser().exists() \
        and not p.startswith((".", "~", "$"))


def _from_dict(cls, d: dict, where: str):
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a mapping, got {type(d).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise DataError(f"{where}: unknown field(s) {unknown}; known: {sorted(fields)}")
    kw = {}
    for k, v in d.items():
        default = fields[k].default_factory() if fields[k].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            kw[k] = _from_dict(type(default), v, f"{where}.{k}")
        else:
            kw[k] = v
    return cls(**kw)
