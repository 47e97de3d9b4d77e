"""Training configuration: dataclasses, YAML loading, overrides and validation that names the field.

A config is one YAML file with the sections below; every key is optional and falls back to the default
shown here. `load_config(name_or_path, overrides)` accepts a packaged preset name (see `ao train --help`)
or a path, applies dotted overrides such as ``{"optim.lr": 3e-5}`` and validates the result before any
model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..fsutil import TextEncodingError, read_text
from ..oracle_config import ADAPTER_WEIGHTS
from .presets import list_presets, preset_file


class ConfigError(ValueError):
    """A configuration value is wrong; `field` names it as a dotted path (e.g. ``optim.lr``)."""

    def __init__(self, field_name: str, message: str):
        self.field = field_name
        super().__init__(f"{field_name}: {message}")


@dataclass
class ModelConfig:
    spec: str = "smollm2-135m"  # embedded name, directory, .gguf file or hub id
    revision: str | None = None
    dtype: str | None = None  # float32 | bfloat16 | float16 | None (bf16 on a bf16 GPU, else float32)
    quantization: str | None = None  # None | 8bit | 4bit (bitsandbytes, GPU only)
    gradient_checkpointing: bool = False
    trust_remote_code: bool = False
    # eager | sdpa | flash_attention_2; null: the family's (eager where attention is soft-capped, as in
    # Gemma-2; flash-attention 2 on a GPU that has it; else SDPA)
    attn_implementation: str | None = None


@dataclass
class DataConfig:
    path: str | None = None  # a DatasetDict saved with save_to_disk (splits train/test); None: build `mixture`
    # What to build (and cache) when path is null: "builtin" (the offline demo mixture), "paper" (the paper's
    # 1M-example mixture from the local sources its YAML names) or a mixture YAML file.
    mixture: str = "builtin"
    train_split: str = "train"
    eval_split: str = "test"
    layer_percents: list[float] = field(default_factory=lambda: [25.0, 50.0, 75.0])
    # true: every example reads all layer_percents at once (the multi-layer format, one "Layer: L" block of
    # placeholders per layer); the data must be built that way (mixture option multi_layer: true)
    multi_layer: bool = False
    max_length_percentile: float = 99.9  # drop training examples longer than this percentile
    max_train_examples: int | None = None  # take the first N rows (after the split) when set
    builtin_scale: float = 1.0  # size of the built-in mixture (data.mixture builtin) relative to the data module default
    # Relative share of each task family ("classification", "spqa", "context_prediction") in the rows
    # trained on; families left out are dropped. Empty: the mixture as built.
    task_weights: dict[str, float] = field(default_factory=dict)
    # Training rows to leave out, each entry a `where` mapping (rows matching all its columns are dropped), e.g.
    # [{dataset: [md_gender], variant: [single]}] for a group whose label its inputs do not carry. The eval
    # split keeps them, so the evaluation still reports the group.
    exclude: list[dict[str, Any]] = field(default_factory=list)
    # Settings of the mixture built when data.path is null that differ from data.mixture's, in the shape of
    # a mixture YAML, e.g. {classification: {ask_classes: {sst2: [positive]}}}.
    builtin_mixture: dict[str, Any] = field(default_factory=dict)
    # Warm-up stages before the whole data, in order: each trains `steps` optimiser steps on the rows whose
    # columns match `where` (all of them), e.g. [{steps: 150, where: {variant: [multi]}}].
    curriculum: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LoraSettings:
    r: int = 64
    alpha: float = 128
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    # Start from a saved adapter's weights (a run's adapter/ or checkpoint): r and targets must match it.
    init_from: str | None = None


@dataclass
class OptimConfig:
    lr: float = 1e-5
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_ratio: float = 0.1
    schedule: str = "linear"  # linear (warmup then linear decay to 0) | constant (warmup then flat)
    max_grad_norm: float = 1.0


@dataclass
class TrainSettings:
    batch_size: int = 16  # global examples per optimiser step (all ranks, all accumulation steps)
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    length_window: int = 20  # group-by-length: sort inside windows of length_window x batch_size
    context_pad_tolerance: float = 0.1  # contexts run in length groups wasting at most this share on padding
    # > 0: instead, the context groups that minimise padded tokens + this many tokens per extra forward (what a
    # forward costs in kernel launches on a GPU; about 1000 for an 8B model on an H100, see docs/training.md)
    context_group_overhead: int = 0
    # contexts of a step concatenated into one unpadded row per deepest source layer (transformers' packed-
    # sequence mask keeps them apart); replaces the two settings above. Checked against a padded forward
    # when training starts, and turned off with a warning for a model whose forward does not honour it.
    context_packing: bool = False
    compile: bool = False  # torch.compile each decoder block (dynamic shapes; static with shape_buckets)
    # The GPU path: a micro-batch's contexts and its oracle prompts as one unpadded row each, so one context
    # forward (to the deepest source layer it reads) and one oracle forward whatever its lengths and depths;
    # attention masks built on the device; no value read back within a step. Replaces the three context
    # settings above. Checked against the padded forward when training starts (off, with a warning, for a
    # model whose forward does not keep packed sequences apart).
    packing: bool = False
    # > 0 (with packing): every size of a packed batch rounded up to one of this many buckets per size, chosen
    # from the data's lengths, so that a run sees a few shapes (what compiled kernels and CUDA graphs need)
    shape_buckets: int = 0
    # capture each shape's whole optimiser step (forward, backward, clipping, AdamW) as one CUDA graph and
    # replay it: the host then issues one launch per step instead of thousands. Needs packing, shape_buckets,
    # one process and a GPU.
    cuda_graphs: bool = False
    # > 0: optimiser batches by tokens instead of examples: each global batch is a run of examples (in the
    # group-by-length order) whose oracle + context tokens add up to at most this; batch_size is then unused.
    # For models too small for 16 examples to fill a GPU (docs/training.md: what it changes in the recipe).
    batch_tokens: int | None = None
    # forward + backward on the longest batch before step 1, failing early with advice when it runs out of
    # memory; null: on GPUs only
    preflight: bool | None = None
    seed: int = 0
    hook_layer: int = 1
    coefficient: float = 1.0
    # detached: the paper's injection, gradient through h only (the added ||h|| v/||v|| is a constant);
    # through_norm: the gradient also flows through ||h|| (this project's behaviour before the change).
    injection_grad: str = "detached"
    autocast: str | None = None  # None | bf16 (bf16 autocast of the forward passes, CPU or GPU)
    distributed: str = "ddp"  # ddp | fsdp (only used with more than one process)


@dataclass
class EvalConfig:
    every: int = 0  # optimiser steps between evaluations; 0: only at the end when final is true
    final: bool = True
    initial: bool = False  # also evaluate before the first step (logged as a step-0 row)
    max_examples: int = 64  # per (dataset, single/multi token) group for generation eval
    max_loss_examples: int = 128  # per task for validation loss
    max_new_tokens: int = 4
    batch_size: int = 16


@dataclass
class OutputConfig:
    dir: str = "runs/oracle"
    save_every: int = 0  # optimiser steps between checkpoints; 0: only at the end
    keep_last: int | None = None  # checkpoints to keep (None: all)
    log_every: int = 1
    progress: bool = True
    report_to: list[str] = field(default_factory=list)  # tensorboard, wandb


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSettings = field(default_factory=TrainSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    name: str | None = None  # the preset or file it came from (informational)
    description: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = {f.name: f.type for f in dataclasses.fields(TrainConfig)}


def _section_classes() -> dict[str, type]:
    return {
        "model": ModelConfig, "data": DataConfig, "lora": LoraSettings, "optim": OptimConfig,
        "train": TrainSettings, "eval": EvalConfig, "output": OutputConfig,
    }


def from_dict(d: dict[str, Any] | None) -> TrainConfig:
    """Build a TrainConfig from nested dicts, rejecting unknown sections and keys by name."""
    d = dict(d or {})
    classes = _section_classes()
    kwargs: dict[str, Any] = {}
    for key, value in d.items():
        if key in ("name", "description"):
            kwargs[key] = value
            continue
        if key not in classes:
            raise ConfigError(key, f"unknown section; expected one of {sorted([*classes, 'name', 'description'])}")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(key, f"must be a mapping, got {type(value).__name__}")
        cls = classes[key]
        names = {f.name for f in dataclasses.fields(cls)}
        for k in value:
            if k not in names:
                raise ConfigError(f"{key}.{k}", f"unknown key; {key} accepts {sorted(names)}")
        kwargs[key] = cls(**value)
    return TrainConfig(**kwargs)


def _parse_value(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any] | None) -> TrainConfig:
    """Return a copy with dotted keys replaced: {"optim.lr": 2e-5, "train.batch_size": 8}.
    String values are parsed as YAML scalars ("1e-5" -> float, "null" -> None)."""
    d = cfg.to_dict()
    for key, value in (overrides or {}).items():
        parts = key.split(".")
        if len(parts) != 2:
            raise ConfigError(key, "overrides take the form section.key=value (e.g. optim.lr=2e-5)")
        sec, k = parts
        if sec not in d or not isinstance(d[sec], dict):
            raise ConfigError(key, f"unknown section {sec!r}")
        if k not in d[sec]:
            raise ConfigError(key, f"unknown key; {sec} accepts {sorted(d[sec])}")
        d[sec][k] = _parse_value(value)
    return from_dict(d)


def parse_set(items: list[str] | None) -> dict[str, str]:
    """`--set section.key=value` arguments -> an overrides dict (values parsed by apply_overrides)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError("--set", f"{item!r}: use section.key=value (e.g. optim.weight_decay=0)")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_where(where, name: str) -> None:
    if not isinstance(where, dict) or not where:
        raise ConfigError(name, f"must map data columns to lists of values, got {where!r}")
    for col, vals in where.items():
        if not isinstance(col, str) or not isinstance(vals, list) or not vals:
            raise ConfigError(f"{name}.{col}", f"must be a non-empty list of values, got {vals!r}")


def _validate_curriculum(stages) -> None:
    if not isinstance(stages, list):
        raise ConfigError("data.curriculum", f"must be a list of stages {{steps: N, where: {{column: [values]}}}}, "
                                             f"got {stages!r}")
    for i, st in enumerate(stages):
        name = f"data.curriculum[{i}]"
        if not isinstance(st, dict) or not {"steps", "where"} <= set(st) or not set(st) <= {"steps", "where", "mix"}:
            raise ConfigError(name, f"must be a mapping with the keys steps and where (and optionally mix), got {st!r}")
        if not _int(st["steps"]) or st["steps"] < 1:
            raise ConfigError(f"{name}.steps", f"must be a positive integer, got {st['steps']!r}")
        _validate_where(st["where"], f"{name}.where")
        if "mix" in st:
            _validate_mix(st["mix"], f"{name}.mix")


def _validate_exclude(excl) -> None:
    if not isinstance(excl, list):
        raise ConfigError("data.exclude", f"must be a list of {{column: [values]}} mappings, got {excl!r}")
    for i, where in enumerate(excl):
        _validate_where(where, f"data.exclude[{i}]")


def _validate_mix(mix, name: str) -> None:
    """{share: p, where: {...}} or a non-empty list of them whose shares add up to at most 1."""
    if isinstance(mix, list) and not mix:
        raise ConfigError(name, "is an empty list; give {share: p, where: {column: [values]}} or a list of them")
    buckets = mix if isinstance(mix, list) else [mix]
    for k, bk in enumerate(buckets):
        bname = f"{name}[{k}]" if isinstance(mix, list) else name
        if not isinstance(bk, dict) or set(bk) != {"share", "where"}:
            raise ConfigError(bname, f"must be {{share: 0 < p <= 1, where: {{column: [values]}}}} (or a list of "
                                     f"them), got {bk!r}")
        if not _num(bk["share"]) or not 0 < bk["share"] <= 1:
            raise ConfigError(f"{bname}.share", f"must be a number in (0, 1], got {bk['share']!r}")
        _validate_where(bk["where"], f"{bname}.where")
    total = sum(bk["share"] for bk in buckets)
    if total > 1 + 1e-9 or (not isinstance(mix, list) and total >= 1):
        raise ConfigError(name, f"the shares add up to {total:g}; they must leave room for the other rows "
                                "(below 1 for one bucket, at most 1 for a list)")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check types and ranges; raise ConfigError naming the first bad field. Touches no model or data."""
    for check in (_validate_model_data, _validate_lora_optim, _validate_train, _validate_eval_output):
        check(cfg)
    return cfg


def _validate_model_data(cfg: TrainConfig) -> None:
    m, dc = cfg.model, cfg.data
    if not isinstance(m.spec, str) or not m.spec:
        raise ConfigError("model.spec", "must be a non-empty model spec (embedded name, directory or hub id)")
    if m.dtype not in (None, "float32", "bfloat16", "float16"):
        raise ConfigError("model.dtype", f"{m.dtype!r} is not one of float32, bfloat16, float16 or null")
    if m.quantization not in (None, "8bit", "4bit"):
        raise ConfigError("model.quantization", f"{m.quantization!r} is not one of 8bit, 4bit or null")
    if m.attn_implementation not in (None, "eager", "sdpa", "flash_attention_2"):
        raise ConfigError("model.attn_implementation", f"{m.attn_implementation!r} is not one of eager, sdpa, "
                                                       "flash_attention_2 or null")
    if dc.path is not None and not isinstance(dc.path, str):
        raise ConfigError("data.path", "must be a directory path or null")
    if not isinstance(dc.mixture, str) or not (dc.mixture in ("builtin", "paper") or dc.mixture.endswith((".yaml", ".yml"))):
        raise ConfigError("data.mixture", f"must be builtin, paper or a mixture YAML file, got {dc.mixture!r}")
    if not isinstance(dc.layer_percents, list) or not dc.layer_percents or not all(
        _num(p) and 0 <= p <= 100 for p in dc.layer_percents
    ):
        raise ConfigError("data.layer_percents", f"must be a non-empty list of numbers in [0, 100], got {dc.layer_percents!r}")
    if not isinstance(dc.multi_layer, bool):
        raise ConfigError("data.multi_layer", f"must be true or false, got {dc.multi_layer!r}")
    if dc.multi_layer and len(set(dc.layer_percents)) < 2:
        raise ConfigError("data.multi_layer", f"needs at least two data.layer_percents, got {dc.layer_percents}")
    if not _num(dc.max_length_percentile) or not 0 < dc.max_length_percentile <= 100:
        raise ConfigError("data.max_length_percentile", f"must lie in (0, 100], got {dc.max_length_percentile!r}")
    if dc.max_train_examples is not None and (not _int(dc.max_train_examples) or dc.max_train_examples < 1):
        raise ConfigError("data.max_train_examples", f"must be a positive integer or null, got {dc.max_train_examples!r}")
    if not _num(dc.builtin_scale) or dc.builtin_scale <= 0:
        raise ConfigError("data.builtin_scale", f"must be > 0, got {dc.builtin_scale!r}")
    if not isinstance(dc.builtin_mixture, dict):
        raise ConfigError("data.builtin_mixture", f"must be a mapping in the shape of a mixture YAML, got {dc.builtin_mixture!r}")
    if not isinstance(dc.task_weights, dict) or not all(
        isinstance(k, str) and _num(v) and v >= 0 for k, v in dc.task_weights.items()
    ) or (dc.task_weights and not any(v > 0 for v in dc.task_weights.values())):
        raise ConfigError("data.task_weights", "must map task families (classification, spqa, context_prediction) "
                                               f"to non-negative weights, at least one positive; got {dc.task_weights!r}")
    _validate_curriculum(dc.curriculum)
    _validate_exclude(dc.exclude)


def _validate_lora_optim(cfg: TrainConfig) -> None:
    lo, o = cfg.lora, cfg.optim
    if not _int(lo.r) or lo.r < 1:
        raise ConfigError("lora.r", f"must be a positive integer, got {lo.r!r}")
    if not _num(lo.alpha) or lo.alpha <= 0:
        raise ConfigError("lora.alpha", f"must be > 0, got {lo.alpha!r}")
    if not _num(lo.dropout) or not 0 <= lo.dropout < 1:
        raise ConfigError("lora.dropout", f"must lie in [0, 1), got {lo.dropout!r}")
    if not (isinstance(lo.target_modules, str) or (
        isinstance(lo.target_modules, list) and lo.target_modules and all(isinstance(x, str) for x in lo.target_modules)
    )):
        raise ConfigError("lora.target_modules", "must be 'all-linear' or a list of module names")
    if lo.init_from is not None and not (Path(str(lo.init_from)).expanduser() / ADAPTER_WEIGHTS).is_file():
        raise ConfigError("lora.init_from", f"{lo.init_from}: no {ADAPTER_WEIGHTS} there; give the directory of a "
                                            "saved adapter (a run's adapter/ or checkpoint-N/)")
    if not _num(o.lr) or o.lr <= 0:
        raise ConfigError("optim.lr", f"must be > 0, got {o.lr!r}")
    if not _num(o.weight_decay) or o.weight_decay < 0:
        raise ConfigError("optim.weight_decay", f"must be >= 0, got {o.weight_decay!r}")
    if not isinstance(o.betas, list) or len(o.betas) != 2 or not all(_num(b) and 0 <= b < 1 for b in o.betas):
        raise ConfigError("optim.betas", f"must be two numbers in [0, 1), got {o.betas!r}")
    if not _num(o.eps) or o.eps <= 0:
        raise ConfigError("optim.eps", f"must be > 0, got {o.eps!r}")
    if not _num(o.warmup_ratio) or not 0 <= o.warmup_ratio < 1:
        raise ConfigError("optim.warmup_ratio", f"must lie in [0, 1), got {o.warmup_ratio!r}")
    if o.schedule not in ("linear", "constant"):
        raise ConfigError("optim.schedule", f"{o.schedule!r} is not one of linear, constant")
    if not _num(o.max_grad_norm) or o.max_grad_norm < 0:
        raise ConfigError("optim.max_grad_norm", f"must be >= 0 (0 disables clipping), got {o.max_grad_norm!r}")


def _validate_train(cfg: TrainConfig) -> None:
    m, t = cfg.model, cfg.train
    if not _int(t.batch_size) or t.batch_size < 1:
        raise ConfigError("train.batch_size", f"must be a positive integer, got {t.batch_size!r}")
    if not _int(t.grad_accum) or t.grad_accum < 1:
        raise ConfigError("train.grad_accum", f"must be a positive integer, got {t.grad_accum!r}")
    if t.batch_size % t.grad_accum:
        raise ConfigError("train.grad_accum", f"must divide train.batch_size={t.batch_size}, got {t.grad_accum}")
    if not _num(t.epochs) or t.epochs <= 0:
        raise ConfigError("train.epochs", f"must be > 0, got {t.epochs!r}")
    if t.max_steps is not None and (not _int(t.max_steps) or t.max_steps < 1):
        raise ConfigError("train.max_steps", f"must be a positive integer or null, got {t.max_steps!r}")
    if not _int(t.length_window) or t.length_window < 1:
        raise ConfigError("train.length_window", f"must be a positive integer, got {t.length_window!r}")
    if not _num(t.context_pad_tolerance) or t.context_pad_tolerance < 0:
        raise ConfigError("train.context_pad_tolerance", f"must be >= 0 (1 or more: one padded batch), "
                                                         f"got {t.context_pad_tolerance!r}")
    if not _int(t.context_group_overhead) or t.context_group_overhead < 0:
        raise ConfigError("train.context_group_overhead", f"must be a non-negative integer (tokens), "
                                                          f"got {t.context_group_overhead!r}")
    if t.preflight not in (None, True, False):
        raise ConfigError("train.preflight", f"must be true, false or null (on GPUs), got {t.preflight!r}")
    if not isinstance(t.compile, bool):
        raise ConfigError("train.compile", f"must be true or false, got {t.compile!r}")
    if not isinstance(t.context_packing, bool):
        raise ConfigError("train.context_packing", f"must be true or false, got {t.context_packing!r}")
    if not isinstance(t.packing, bool):
        raise ConfigError("train.packing", f"must be true or false, got {t.packing!r}")
    if not _int(t.shape_buckets) or t.shape_buckets < 0:
        raise ConfigError("train.shape_buckets", f"must be a non-negative integer, got {t.shape_buckets!r}")
    if t.shape_buckets and not t.packing:
        raise ConfigError("train.shape_buckets", "rounds the sizes of packed batches: set train.packing: true too")
    if not isinstance(t.cuda_graphs, bool):
        raise ConfigError("train.cuda_graphs", f"must be true or false, got {t.cuda_graphs!r}")
    if t.cuda_graphs and not (t.packing and t.shape_buckets):
        raise ConfigError("train.cuda_graphs", "a captured step needs fixed shapes: set train.packing: true and "
                                               "train.shape_buckets (e.g. 8) too")
    if t.batch_tokens is not None and (not _int(t.batch_tokens) or t.batch_tokens < 1):
        raise ConfigError("train.batch_tokens", f"must be a positive integer (tokens per optimiser step) or null, "
                                                f"got {t.batch_tokens!r}")
    if not _int(t.seed) or not 0 <= t.seed < 2**32:
        raise ConfigError("train.seed", f"must be an integer in [0, 2**32) (numpy's seed range), got {t.seed!r}")
    if not _int(t.hook_layer) or t.hook_layer < 0:
        raise ConfigError("train.hook_layer", f"must be a non-negative integer, got {t.hook_layer!r}")
    if not _num(t.coefficient):
        raise ConfigError("train.coefficient", f"must be a number, got {t.coefficient!r}")
    if t.injection_grad not in ("detached", "through_norm"):
        raise ConfigError("train.injection_grad", f"{t.injection_grad!r} is not one of detached, through_norm")
    if t.autocast not in (None, "bf16"):
        raise ConfigError("train.autocast", f"{t.autocast!r} is not one of bf16 or null")
    if t.distributed not in ("ddp", "fsdp"):
        raise ConfigError("train.distributed", f"{t.distributed!r} is not one of ddp, fsdp")
    if t.distributed == "fsdp" and m.quantization:
        raise ConfigError("train.distributed", f"fsdp cannot shard the 8/4-bit weights of model.quantization="
                                               f"{m.quantization} (bitsandbytes); use distributed: ddp, the paper's "
                                               "setup for Llama-3.3-70B (DDP with 8-bit weights on 4 GPUs), or "
                                               "drop the quantization and shard bf16 weights with fsdp")


def _validate_eval_output(cfg: TrainConfig) -> None:
    e, out = cfg.eval, cfg.output
    for name in ("every", "max_examples", "max_loss_examples"):
        v = getattr(e, name)
        if not _int(v) or v < 0:
            raise ConfigError(f"eval.{name}", f"must be a non-negative integer, got {v!r}")
    for name in ("max_new_tokens", "batch_size"):
        v = getattr(e, name)
        if not _int(v) or v < 1:
            raise ConfigError(f"eval.{name}", f"must be a positive integer, got {v!r}")
    if not isinstance(out.dir, str) or not out.dir:
        raise ConfigError("output.dir", "must be a directory path")
    if not _int(out.save_every) or out.save_every < 0:
        raise ConfigError("output.save_every", f"must be a non-negative integer, got {out.save_every!r}")
    if out.keep_last is not None and (not _int(out.keep_last) or out.keep_last < 1):
        raise ConfigError("output.keep_last", f"must be a positive integer or null, got {out.keep_last!r}")
    if not _int(out.log_every) or out.log_every < 1:
        raise ConfigError("output.log_every", f"must be a positive integer, got {out.log_every!r}")
    if not isinstance(out.report_to, list) or any(r not in ("tensorboard", "wandb") for r in out.report_to):
        raise ConfigError("output.report_to", f"must be a list drawn from tensorboard, wandb; got {out.report_to!r}")


def load_config(name_or_path: str | Path | dict | TrainConfig | None = None,
                overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A preset name, a YAML path, a dict or a TrainConfig -> validated TrainConfig with overrides applied."""
    if isinstance(name_or_path, TrainConfig):
        cfg = name_or_path
    elif isinstance(name_or_path, dict) or name_or_path is None:
        cfg = from_dict(name_or_path)
    else:
        p = Path(name_or_path).expanduser()
        if p.suffix in (".yaml", ".yml") or p.exists():
            if not p.is_file():
                raise ConfigError("config", f"no such config file: {p}")
        else:
            p = preset_file(str(name_or_path))
            if p is None:
                raise ConfigError("config", f"unknown preset {name_or_path!r} and no such file; "
                                            f"presets: {', '.join(list_presets())}")
        try:
            raw = yaml.safe_load(read_text(p)) or {}
        except TextEncodingError as err:
            raise ConfigError("config", str(err)) from None
        except yaml.YAMLError as err:
            raise ConfigError("config", f"{p} is not valid YAML: {err}") from None
        if not isinstance(raw, dict):
            raise ConfigError("config", f"{p} must hold a mapping of sections")
        raw.setdefault("name", p.stem)
        cfg = from_dict(raw)
    cfg = apply_overrides(cfg, overrides)
    return validate(cfg)
