"""The training recipe: build everything from a TrainConfig, then step.

    train(config) -> run directory
        validate config + open data       (no model yet: config errors come first)
        Accelerator (DDP/FSDP when launched with several processes)
        load base model, wrap in LoRA, AdamW, warmup/decay schedule, maybe resume a checkpoint
        config.yaml                       (once, after every setting the build may change)
        for each optimiser step:
            global batch from the group-by-length stream; this rank takes its slice
            for each micro-batch: context forward (adapter off) -> inject -> CE at labels -> backward
            clip, AdamW, schedule; metrics.jsonl row; maybe eval; maybe checkpoint
        final checkpoint + adapter/
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..fsutil import atomic_write_text
from .batching import StagedStream, deepest_layer
from .checkpoint import (
    MANIFEST, disk_errors, latest_complete, load_adapter_weights, load_training_state, rng_state, save_checkpoint,
    save_final_adapter, set_rng_state,
)
from .config import ConfigError, TrainConfig, load_config
from .dataset import (
    build_configured_mixture, check_data_tokenizer, multi_layers, open_split, open_train_data, recipe_note,
    resolve_data_dir,
)
from .graphs import make_stepper
from .metrics import MetricsWriter, metrics_row
from .rundir import CONFIG_FILE, check_resume_steps, own_run_dir
from .step import apply_lora, check_context_packing, make_objective, make_optimizer, make_schedule, train_step


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)  # python, numpy, torch (CPU and every GPU)


def total_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    return max(1, int(math.floor(cfg.train.epochs * batches_per_epoch)))


@dataclass
class Run:
    """One run's parts, built once by `train` and read by the loop."""

    cfg: TrainConfig
    acc: Any  # accelerate.Accelerator
    run_dir: Path
    tdata: Any = None  # dataset.TrainData
    eval_ds: Any = None
    stream: StagedStream | None = None
    total: int = 0  # optimiser steps of the whole run
    tok: Any = None
    layers: list[int] = field(default_factory=list)
    fsdp: bool = False
    shapes: Any = None  # shapes.ShapeBuckets or None
    objective: Any = None  # as the accelerator prepared it
    raw: Any = None  # the unwrapped objective (evaluation, checkpoints)
    opt: Any = None
    sched: Any = None
    stepper: Any = None  # graphs.make_stepper's captured step, or None
    start: int = 0  # the resumed checkpoint's step

    @property
    def pad_id(self) -> int:
        return self.tok.pad_token_id

    @property
    def budget(self) -> int | None:
        return self.cfg.train.batch_tokens


def train(config: str | Path | dict | TrainConfig | None = None, *, data: str | None = None,
          out: str | None = None, resume: str | None = None, overrides: dict | None = None,
          overwrite: bool = False, callbacks: Iterable[Callable[[int], None]] = ()) -> Path:
    """Train an oracle adapter; returns the run directory (metrics.jsonl, checkpoints/, adapter/).
    The run owns its directory while it writes it (train.rundir): a directory holding another run is refused
    unless `overwrite` (which deletes that run first). Each of `callbacks` is called with the step number
    after every optimiser step, once its metrics row and checkpoint are written."""
    if resume is not None and overwrite:
        raise ConfigError("resume", "overwrite starts afresh and resume continues: give one of them")
    cfg, run_dir, ckpt_dir, data_dir = prepare(config, data=data, out=out, resume=resume, overrides=overrides)
    acc = _make_accelerator(cfg)
    main = acc.is_main_process
    with own_run_dir(run_dir, cfg, resumed=ckpt_dir is not None, overwrite=overwrite, main=main):
        run = _open_data(Run(cfg, acc, run_dir), ckpt_dir, data_dir)  # data errors before any model
        seed_everything(cfg.train.seed)
        _build_objective(run, ckpt_dir)  # base model + LoRA; packing checked (it may be turned off)
        _build_optimizer(run, ckpt_dir)  # AdamW + schedule, resumed state, preflight, captured step
        if main:
            atomic_write_text(run_dir / CONFIG_FILE, cfg.to_yaml())  # the settings that run, all decided
        writer = MetricsWriter(run_dir, cfg, keep_until=run.start if ckpt_dir is not None else None, enabled=main)
        try:
            _steps(run, writer, list(callbacks))
            with disk_errors(run_dir):
                save_final_adapter(cfg, acc, run.raw, run_dir, run.layers, run.total, run.fsdp)
        finally:
            writer.close()
        acc.wait_for_everyone()
    return run_dir


def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def _open_data(run: Run, ckpt_dir: Path | None, data_dir: Path | None) -> Run:
    """The mixture (built first when the config names a recipe), its batch stream and the run's length."""
    cfg, acc = run.cfg, run.acc
    if data_dir is None:  # data.mixture: rank 0 builds (or reuses) it, the others then read it
        with acc.main_process_first():
            data_dir = build_configured_mixture(cfg, progress=acc.is_main_process and cfg.output.progress)
    check_data_tokenizer(cfg, data_dir)  # before the model: token ids of another tokenizer mean other tokens
    run.tdata = tdata = open_train_data(cfg, data_dir)  # checks the batch size against the data, before any model
    run.eval_ds = open_split(data_dir, cfg.data.eval_split, "data.eval_split")
    per_step, world = cfg.train.batch_size, acc.num_processes
    if run.budget is None and per_step % (world * cfg.train.grad_accum):
        raise ConfigError("train.batch_size", f"{per_step} must be divisible by processes x grad_accum = "
                                              f"{world} x {cfg.train.grad_accum}")
    run.stream = StagedStream(tdata.lengths, per_step, seed=cfg.train.seed, window=cfg.train.length_window,
                              stages=tdata.stages, costs=_row_tokens(tdata) if run.budget else None,
                              budget=run.budget)
    run.total = total_steps(cfg, run.stream.main.batches_per_epoch() if run.budget else len(tdata) // per_step)
    check_resume_steps(ckpt_dir, run.total)
    stage_steps = sum(steps for steps, _ in tdata.stages)
    if stage_steps and stage_steps >= run.total:  # e.g. a preset cut short with --max-steps for a smoke test
        warnings.warn(f"data.curriculum: the stages take {stage_steps} steps and the run only {run.total}, so it "
                      "ends inside the curriculum and never reaches the whole data", stacklevel=3)
    return run


def _build_objective(run: Run, ckpt_dir: Path | None) -> None:
    """Base model + LoRA (the checkpoint's or lora.init_from's weights loaded), and the objective that trains
    it; the packing checks may turn train.context_packing / train.packing off (config.yaml says so)."""
    cfg, acc = run.cfg, run.acc
    model, run.tok = _build_model(cfg, str(acc.device))
    run.layers = _check_layers(cfg, model, run.tdata)
    run.fsdp = acc.num_processes > 1 and cfg.train.distributed == "fsdp"
    check_context_packing(model, cfg, sharded=run.fsdp)
    if ckpt_dir is not None:
        load_adapter_weights(ckpt_dir, model)  # before sharding: every rank loads the full adapter
    elif cfg.lora.init_from:
        load_adapter_weights(Path(cfg.lora.init_from).expanduser(), model, field="lora.init_from")
    run.objective = _packed_objective(model, cfg, run.fsdp)
    run.shapes = _shape_buckets(cfg, run.tdata, acc.num_processes, run.layers)


def _build_optimizer(run: Run, ckpt_dir: Path | None) -> None:
    """AdamW and the warmup/decay schedule on the (maybe sharded) objective, the checkpoint's state, the OOM
    preflight and the captured step."""
    cfg, acc, objective = run.cfg, run.acc, run.objective
    if run.fsdp:
        from .fsdp import shard

        objective = shard(objective)  # the optimizer must see the sharded parameters
    run.opt = make_optimizer([p for p in objective.parameters() if p.requires_grad], cfg, acc.device)
    run.sched = make_schedule(run.opt, run.total, cfg.optim.warmup_ratio, cfg.optim.schedule)
    if run.fsdp:
        run.objective, run.opt = objective, acc.prepare(run.opt)
    else:
        run.objective, run.opt = acc.prepare(objective, run.opt)
    run.raw = acc.unwrap_model(run.objective)
    if ckpt_dir is not None:
        run.start = load_training_state(ckpt_dir, run.raw, run.opt, run.sched, run.stream, acc.process_index,
                                        run.fsdp)
    if cfg.train.preflight or (cfg.train.preflight is None and acc.device.type == "cuda"):
        _preflight(run)
    run.stepper = make_stepper(cfg, acc, run.objective, run.opt, run.sched, run.shapes)


def _steps(run: Run, writer: MetricsWriter, callbacks: list) -> None:
    """The optimiser steps from the resumed one to the last: metrics, evaluations and checkpoints on schedule."""
    cfg = run.cfg
    bar = _progress_bar(run)
    step, since, t_log = run.start, 0, time.perf_counter()  # steps and time since the last read-back
    try:
        if cfg.eval.initial and run.start == 0 and run.eval_ds is not None:
            writer.write({"step": 0, **_evaluate(run)})
        while step < run.total:
            stats = _step(run)
            step, since = step + 1, since + 1
            if bar is not None:
                bar.update(1)
            do_eval = run.eval_ds is not None and ((cfg.eval.every and step % cfg.eval.every == 0)
                                                   or (cfg.eval.final and step == run.total))
            if step % cfg.output.log_every == 0 or step == run.total or do_eval:  # (between them, nothing is read back)
                row = metrics_row(stats.read(), step, run.stream.cursor.epoch, (time.perf_counter() - t_log) / since)
                writer.write(_report(run, row, do_eval, bar))
                since, t_log = 0, time.perf_counter()
            if (cfg.output.save_every and step % cfg.output.save_every == 0) or step == run.total:
                with disk_errors(run.run_dir):
                    save_checkpoint(cfg, run.acc, run.raw, run.opt, run.sched, run.stream, step, run.run_dir,
                                    run.layers, run.fsdp)
                t_log = time.perf_counter() if since == 0 else t_log  # (a logged step: saving is not step time)
            for callback in callbacks:
                callback(step)
    finally:
        if bar is not None:
            bar.close()


def _step(run: Run):
    """One optimiser step on the next global batch, of which this rank takes its share."""
    cfg, acc = run.cfg, run.acc
    world, rank = acc.num_processes, acc.process_index
    gidx = run.stream.next()
    denom = float(run.tdata.label_counts[gidx].sum())
    rows = run.tdata.get(gidx)
    per_rank = cfg.train.batch_size // world
    mine = rows[rank * per_rank : (rank + 1) * per_rank] if not run.budget else _share(rows, rank, world)
    micro = [mine[a[0] : a[-1] + 1] for a in np.array_split(np.arange(len(mine)), cfg.train.grad_accum)]
    deepest = deepest_layer(rows)
    if run.stepper is not None:
        return run.stepper(micro, run.pad_id, denom, deepest=deepest)
    return train_step(acc, run.objective, run.opt, run.sched, micro, run.pad_id, cfg, denom, deepest=deepest,
                      shapes=run.shapes)


def _progress_bar(run: Run):
    if not (run.acc.is_main_process and run.cfg.output.progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=run.total, initial=run.start, desc="train", unit="step", dynamic_ncols=True)


def _report(run: Run, row: dict, do_eval: bool, bar) -> dict:
    """A logged step's row, with the evaluation when one is due; the progress bar shows both."""
    if bar is not None:
        bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
    if do_eval:
        row.update(_evaluate(run))
        if bar is not None and "eval/classification/acc" in row:
            bar.write(f"step {row['step']}: eval acc {row['eval/classification/acc']:.3f}")
    return row


def _attn_implementation(cfg: TrainConfig, device: str) -> str | None:
    """The configured attention; with train.packing and none configured, one that takes the step's 4D masks:
    SDPA (or eager where the family needs it), not flash-attention (which would build its own from the
    position ids, reading them back)."""
    if cfg.model.attn_implementation is not None or not cfg.train.packing:
        return cfg.model.attn_implementation
    from ..families import default_attn_implementation
    from ..models import model_config

    try:
        default = default_attn_implementation(model_config(cfg.model.spec, revision=cfg.model.revision,
                                                           trust_remote_code=cfg.model.trust_remote_code), device)
    except (OSError, ValueError):
        default = None
    return "eager" if default == "eager" else "sdpa"


def _build_model(cfg: TrainConfig, device: str):
    from ..models import load_model

    model, tok = load_model(cfg.model.spec, dtype=cfg.model.dtype, device=device,
                            quantization=cfg.model.quantization, revision=cfg.model.revision,
                            trust_remote_code=cfg.model.trust_remote_code,
                            attn_implementation=_attn_implementation(cfg, device))
    return apply_lora(model, cfg), tok


def _packed_objective(model, cfg: TrainConfig, fsdp: bool):
    """The training objective, after checking that the packed path (train.packing) computes this model's
    function; if not, or under FSDP, training goes on padded, with a warning (and config.yaml says so)."""
    from .objective import PackedObjective
    from .step import PACKING_TOLERANCE, check_packing

    t = cfg.train
    reason = None
    if t.packing and fsdp:
        reason = "FSDP runs the same forwards on every rank, which packed batches of different sizes do not"
    objective = make_objective(model, cfg) if reason is None else None
    if isinstance(objective, PackedObjective):
        err = check_packing(objective, cfg)
        if not err <= PACKING_TOLERANCE:
            reason = (f"packed and padded activations of this model differ by {err:.3g} (relative; tolerance "
                      f"{PACKING_TOLERANCE}), so its forward does not keep packed sequences apart")
            objective.close()
    if reason is not None:
        warnings.warn(f"train.packing: {reason}; training on with padded batches instead", stacklevel=4)
        t.packing, t.shape_buckets, t.cuda_graphs = False, 0, False
        objective = make_objective(model, cfg)
    return objective


def _shape_buckets(cfg: TrainConfig, tdata, world: int, layers: list[int]):
    """train.shape_buckets: the run's buckets from its own first epoch's batches (printed with the padding
    they add), or None."""
    from .batching import epoch_batches
    from .dataset import _list_lengths
    from .shapes import ShapeBuckets, micro_batch_sizes

    k = cfg.train.shape_buckets
    if not (cfg.train.packing and k):
        return None
    ds = tdata.ds
    per_row = {"oracle": tdata.lengths, "labels": tdata.label_counts,
               "context": _list_lengths(ds, "context_input_ids")[tdata.rows],
               "placeholders": _list_lengths(ds, "positions")[tdata.rows]}
    budget = cfg.train.batch_tokens
    batches = epoch_batches(tdata.lengths, cfg.train.batch_size, seed=cfg.train.seed, epoch=0,
                            window=cfg.train.length_window, costs=_row_tokens(tdata) if budget else None,
                            budget=budget)
    sizes = micro_batch_sizes(per_row, batches, world * cfg.train.grad_accum)
    shapes = ShapeBuckets.from_sizes(sizes, k, layers)
    pad = shapes.padding(sizes)
    print(f"shape buckets ({shapes.distinct(sizes)} shapes over the first epoch): {shapes.describe()}; padding "
          + ", ".join(f"{name} {100 * v:.1f} %" for name, v in pad.items()), flush=True)
    return shapes


def _check_layers(cfg: TrainConfig, model, data) -> list[int]:
    from ..models import layer_from_percent, num_layers

    n = num_layers(model)
    if cfg.train.hook_layer >= n:
        raise ConfigError("train.hook_layer", f"{cfg.train.hook_layer} is out of range for a {n}-block model")
    multi = multi_layers(data.ds)
    layers = multi or (data.ds.unique("layer") if hasattr(data.ds, "unique") else [])
    bad = [x for x in layers if not 0 <= int(x) < n]
    if bad:
        raise ConfigError("data.path", f"the mixture uses source layers {sorted(bad)} but the model has blocks 0..{n - 1}; "
                                       "was it built for another model?")
    return multi or [layer_from_percent(n, p) for p in cfg.data.layer_percents]


def prepare(config, *, data: str | None = None, out: str | None = None, resume: str | None = None,
            overrides: dict | None = None) -> tuple[TrainConfig, Path, Path | None, Path]:
    """Resolve the config, run dir, resume checkpoint and data dir, validating all of it (no model)."""
    ov = dict(overrides or {})
    if data is not None:
        ov["data.path"] = data
    if out is not None:
        ov["output.dir"] = out
    ckpt = None
    if resume is not None:
        rd = Path(resume)
        if not rd.exists():
            raise ConfigError("resume", f"no such run directory: {rd}")
        ckpt = latest_complete(rd)
        run_dir = rd if not (rd / MANIFEST).exists() else rd.parent.parent
        if config is None:
            saved = run_dir / "config.yaml"
            if not saved.is_file():
                raise ConfigError("resume", f"{run_dir} holds no config.yaml; pass the config too")
            config = saved
        ov.setdefault("output.dir", str(run_dir))
    if config is None:
        raise ConfigError("config", "give a config file or a preset name")
    cfg = load_config(config, ov)
    run_dir = Path(cfg.output.dir)
    data_dir = resolve_data_dir(cfg)
    if data is not None and data_dir is not None and (note := recipe_note(cfg, data_dir)):
        warnings.warn(note, stacklevel=2)  # said plainly: --data is not the preset's recipe
    return cfg, run_dir, ckpt, data_dir


def _row_tokens(tdata) -> np.ndarray:
    """Oracle prompt + context tokens of each kept training row (what train.batch_tokens counts)."""
    from .dataset import _list_lengths

    return tdata.lengths + _list_lengths(tdata.ds, "context_input_ids")[tdata.rows]


def _share(rows: list, rank: int, world: int) -> list:
    """This rank's part of a global batch of any size (train.batch_tokens), as even as it can be."""
    bounds = np.linspace(0, len(rows), world + 1).astype(int)
    return rows[bounds[rank] : bounds[rank + 1]]


def _preflight(run: Run) -> None:
    """The OOM preflight on this rank's share of the batch with the longest oracle prompts (with
    train.batch_tokens: as many of the longest rows as the budget holds)."""
    from .step import preflight

    cfg, acc, tdata = run.cfg, run.acc, run.tdata
    worst = cfg.train.batch_size
    if run.budget:
        worst = int(np.searchsorted(np.cumsum(np.sort(_row_tokens(tdata))[::-1]), run.budget, "right"))
    per_rank = max(1, worst // acc.num_processes)

    def advice() -> str:
        from .plan import plan_memory

        total = torch.cuda.get_device_properties(acc.device).total_memory / 1e9 if acc.device.type == "cuda" else None
        try:
            return plan_memory(cfg, gpus=acc.num_processes, gpu_memory_gb=total, cuda=acc.device.type == "cuda").report()
        except Exception as err:  # noqa: BLE001 - advice is best effort; the failure itself is reported anyway
            return f"(no plan: {err})"

    longest = tdata.get(np.argsort(-tdata.lengths, kind="stable")[: per_rank * acc.num_processes])
    mine = longest[acc.process_index * per_rank : (acc.process_index + 1) * per_rank]
    preflight(acc, run.objective, mine, run.pad_id, cfg, advice, deepest=deepest_layer(longest))


def _evaluate(run: Run) -> dict:
    """Validation loss and generation accuracy on the eval split; the training RNG stream is left as it was."""
    from .evaluate import generation_eval, validation_loss

    cfg, acc, raw = run.cfg, run.acc, run.raw
    out: dict = {}
    rng = rng_state()
    if run.fsdp:
        # every rank runs the same evaluation (each unit's weights are gathered by all ranks together)
        from .fsdp import run_in_root

        out.update(validation_loss(raw, run.eval_ds, cfg, run.pad_id, acc.device))
        out.update(generation_eval(raw.model, run.tok, run.eval_ds, cfg, acc.device,
                                   enter=lambda fn: run_in_root(raw, fn)))
    elif acc.is_main_process:
        # rank 0 alone, on the unwrapped module: no collective runs, so the others simply wait below
        out.update(validation_loss(raw, run.eval_ds, cfg, run.pad_id, acc.device))
        out.update(generation_eval(raw.model, run.tok, run.eval_ds, cfg, acc.device))
    set_rng_state(rng)  # eval must not shift the training RNG stream (exact resume)
    acc.wait_for_everyone()
    return out
