"""The training recipe: build everything from a TrainConfig, then step.

    train(config) -> run directory
        validate config + open data       (no model yet: config errors come first)
        Accelerator (DDP/FSDP when launched with several processes)
        load base model, wrap in LoRA, AdamW, warmup/decay schedule, maybe resume a checkpoint
        for each optimiser step:
            global batch from the group-by-length stream; this rank takes its slice
            for each micro-batch: context forward (adapter off) -> inject -> CE at labels -> backward
            clip, AdamW, schedule; metrics.jsonl row; maybe eval; maybe checkpoint
        final checkpoint + adapter/
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..oracle_config import ADAPTER_WEIGHTS
from .batching import StagedStream, deepest_layer
from .checkpoint import (
    MANIFEST, CheckpointError, ao_config, atomic_dir, disk_errors, latest_complete, prune, rng_state, save_adapter,
    set_rng_state, verify, write_manifest,
)
from .config import ConfigError, TrainConfig, load_config
from .dataset import (
    build_configured_mixture, check_data_tokenizer, multi_layers, open_split, open_train_data, recipe_note,
    resolve_data_dir,
)
from .graphs import make_stepper
from .rundir import check_resume_steps, own_run_dir
from .step import apply_lora, check_context_packing, make_objective, make_optimizer, train_step


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def lr_lambda(total: int, warmup_ratio: float, schedule: str):
    """Linear warmup over int(total x warmup_ratio) steps from 0, then linear decay to 0 (or flat)."""
    warm = int(total * warmup_ratio)

    def f(step: int) -> float:
        if step < warm:
            return step / max(1, warm)
        if schedule == "constant":
            return 1.0
        return max(0.0, (total - step) / max(1, total - warm))

    return f


def total_steps(cfg: TrainConfig, batches_per_epoch: int) -> int:
    if cfg.train.max_steps is not None:
        return cfg.train.max_steps
    return max(1, int(math.floor(cfg.train.epochs * batches_per_epoch)))


class MetricsWriter:
    """metrics.jsonl (always), plus TensorBoard / W&B when asked for and installed."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, *, keep_until: int | None, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = self.wandb = None
        if not enabled:
            return
        if keep_until is not None and self.path.exists():  # resume: drop rows past the checkpoint
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= keep_until]
            self.path.write_text("".join(k + "\n" for k in kept))
        elif keep_until is None:
            self.path.write_text("")
        self.f = open(self.path, "a")
        if "tensorboard" in cfg.output.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("output.report_to", "tensorboard is not installed: pip install tensorboard") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in cfg.output.report_to:
            try:
                import wandb
            except ImportError:
                raise ConfigError("output.report_to", "wandb is not installed: pip install wandb") from None
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "activation-oracles"),
                                    name=run_dir.name, config=cfg.to_dict(), dir=str(run_dir))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        step = row.get("step", 0)
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.f.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


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


def _packed_objective(model, cfg: TrainConfig, fsdp: bool, run_dir: Path, main: bool):
    """The training objective, after checking that the packed path (train.packing) computes this model's
    function; if not, or under FSDP, training goes on padded, with a warning, and config.yaml says so."""
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
        warnings.warn(f"train.packing: {reason}; training on with padded batches instead", stacklevel=3)
        t.packing, t.shape_buckets, t.cuda_graphs = False, 0, False
        objective = make_objective(model, cfg)
        if main:
            (run_dir / "config.yaml").write_text(cfg.to_yaml())  # (the saved config is the one that runs)
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


def train(config: str | Path | dict | TrainConfig | None = None, *, data: str | None = None,
          out: str | None = None, resume: str | None = None, overrides: dict | None = None,
          overwrite: bool = False) -> Path:
    """Train an oracle adapter; returns the run directory (metrics.jsonl, checkpoints/, adapter/).
    The run owns its directory while it writes it (train.rundir): a directory holding another run is refused
    unless `overwrite` (which deletes that run first)."""
    if resume is not None and overwrite:
        raise ConfigError("resume", "overwrite starts afresh and resume continues: give one of them")
    cfg, run_dir, ckpt_dir, data_dir = prepare(config, data=data, out=out, resume=resume, overrides=overrides)
    acc = _make_accelerator(cfg)
    with own_run_dir(run_dir, cfg, resumed=ckpt_dir is not None, overwrite=overwrite, main=acc.is_main_process):
        return _run(cfg, acc, run_dir, ckpt_dir, data_dir)


def _run(cfg: TrainConfig, acc, run_dir: Path, ckpt_dir: Path | None, data_dir: Path | None) -> Path:
    world, rank = acc.num_processes, acc.process_index
    if data_dir is None:  # data.mixture: rank 0 builds (or reuses) it, the others then read it
        with acc.main_process_first():
            data_dir = build_configured_mixture(cfg, progress=acc.is_main_process and cfg.output.progress)
    check_data_tokenizer(cfg, data_dir)  # before the model: token ids of another tokenizer mean other tokens
    tdata = open_train_data(cfg, data_dir)  # checks the batch size against the data, before any model
    eval_ds = open_split(data_dir, cfg.data.eval_split, "data.eval_split")

    per_step = cfg.train.batch_size
    budget = cfg.train.batch_tokens
    if budget is None and per_step % (world * cfg.train.grad_accum):
        raise ConfigError("train.batch_size", f"{per_step} must be divisible by processes x grad_accum = "
                                              f"{world} x {cfg.train.grad_accum}")
    costs = _row_tokens(tdata) if budget else None
    stream = StagedStream(tdata.lengths, per_step, seed=cfg.train.seed, window=cfg.train.length_window,
                          stages=tdata.stages, costs=costs, budget=budget)
    total = total_steps(cfg, stream.main.batches_per_epoch() if budget else len(tdata) // per_step)
    check_resume_steps(ckpt_dir, total)
    stage_steps = sum(steps for steps, _ in tdata.stages)
    if stage_steps and stage_steps >= total:  # e.g. a preset cut short with --max-steps for a smoke test
        warnings.warn(f"data.curriculum: the stages take {stage_steps} steps and the run only {total}, so it "
                      "ends inside the curriculum and never reaches the whole data", stacklevel=2)
    main = acc.is_main_process
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml())
    seed_everything(cfg.train.seed)

    model, tok = _build_model(cfg, str(acc.device))
    layers = _check_layers(cfg, model, tdata)
    pad_id = tok.pad_token_id
    fsdp = world > 1 and cfg.train.distributed == "fsdp"
    check_context_packing(model, cfg, sharded=fsdp)
    if ckpt_dir is not None:
        _load_weights(ckpt_dir, model)  # before sharding: every rank loads the full adapter
    elif cfg.lora.init_from:
        _load_weights(Path(cfg.lora.init_from).expanduser(), model, field="lora.init_from")
    objective = _packed_objective(model, cfg, fsdp, run_dir, main)
    shapes = _shape_buckets(cfg, tdata, world, layers)
    if fsdp:
        from .fsdp import shard

        objective = shard(objective)  # the optimizer must see the sharded parameters
    opt = make_optimizer([p for p in objective.parameters() if p.requires_grad], cfg, acc.device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(total, cfg.optim.warmup_ratio, cfg.optim.schedule))
    if fsdp:
        opt = acc.prepare(opt)
    else:
        objective, opt = acc.prepare(objective, opt)
    raw_objective = acc.unwrap_model(objective)
    start = 0
    if ckpt_dir is not None:
        start = _load_state(ckpt_dir, raw_objective, opt, sched, stream, rank, fsdp)
    if cfg.train.preflight or (cfg.train.preflight is None and acc.device.type == "cuda"):
        worst = per_step if not budget else int(np.searchsorted(np.cumsum(np.sort(costs)[::-1]), budget, "right"))
        _preflight(cfg, acc, objective, tdata, pad_id, max(1, worst // world))
    stepper = make_stepper(cfg, acc, objective, opt, sched, shapes)

    writer = MetricsWriter(run_dir, cfg, keep_until=start if ckpt_dir is not None else None, enabled=main)
    bar = None
    if main and cfg.output.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    kill_after = int(os.environ.get("AO_TRAIN_KILL_AFTER_STEP", "0") or 0)  # test hook: simulate a crash

    per_rank = per_step // world
    step = start
    since, t_log = 0, time.perf_counter()  # steps and time since the last read-back
    try:
        if cfg.eval.initial and start == 0 and eval_ds is not None:
            writer.write({"step": 0, **_evaluate(cfg, acc, raw_objective, tok, eval_ds, pad_id, fsdp)})
        while step < total:
            gidx = stream.next()
            denom = float(tdata.label_counts[gidx].sum())
            rows = tdata.get(gidx)
            mine = rows[rank * per_rank : (rank + 1) * per_rank] if not budget else _share(rows, rank, world)
            micro = [mine[a[0] : a[-1] + 1] for a in np.array_split(np.arange(len(mine)), cfg.train.grad_accum)]
            deepest = deepest_layer(rows)
            if stepper is not None:
                stats = stepper(micro, pad_id, denom, deepest=deepest)
            else:
                stats = train_step(acc, objective, opt, sched, micro, pad_id, cfg, denom, deepest=deepest,
                                   shapes=shapes)
            step += 1
            since += 1
            if bar is not None:
                bar.update(1)
            do_eval = eval_ds is not None and ((cfg.eval.every and step % cfg.eval.every == 0)
                                               or (cfg.eval.final and step == total))
            if step % cfg.output.log_every == 0 or step == total or do_eval:  # (between them, nothing is read back)
                row = _metrics_row(stats.read(), step, stream.cursor.epoch, (time.perf_counter() - t_log) / since)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", tok_s=f"{row['tokens_per_s']:.0f}")
                if do_eval:
                    row.update(_evaluate(cfg, acc, raw_objective, tok, eval_ds, pad_id, fsdp))
                    if bar is not None and "eval/classification/acc" in row:
                        bar.write(f"step {step}: eval acc {row['eval/classification/acc']:.3f}")
                writer.write(row)
                since, t_log = 0, time.perf_counter()
            if (cfg.output.save_every and step % cfg.output.save_every == 0) or step == total:
                with disk_errors(run_dir):
                    _save_checkpoint(cfg, acc, raw_objective, opt, sched, stream, step, run_dir, layers, fsdp)
                t_log = time.perf_counter() if since == 0 else t_log  # (a logged step: saving is not step time)
            if kill_after and step == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        with disk_errors(run_dir):
            _save_final(cfg, acc, raw_objective, run_dir, layers, step, fsdp)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
    acc.wait_for_everyone()
    return run_dir


def _row_tokens(tdata) -> np.ndarray:
    """Oracle prompt + context tokens of each kept training row (what train.batch_tokens counts)."""
    from .dataset import _list_lengths

    return tdata.lengths + _list_lengths(tdata.ds, "context_input_ids")[tdata.rows]


def _share(rows: list, rank: int, world: int) -> list:
    """This rank's part of a global batch of any size (train.batch_tokens), as even as it can be."""
    bounds = np.linspace(0, len(rows), world + 1).astype(int)
    return rows[bounds[rank] : bounds[rank + 1]]


def _metrics_row(s: dict, step: int, epoch: int, step_time: float) -> dict[str, Any]:
    """A metrics.jsonl row from a step's read-back numbers; `step_time`: the mean over the steps since the
    last logged one (each step alone is not timed: that would need the GPU to finish it first)."""
    return {
        "step": step, "epoch": epoch, "loss": s["loss"], "lr": s["lr"], "tokens": s["tokens"],
        "context_tokens": s["context_tokens"], "step_time_s": step_time, "tokens_per_s": s["tokens"] / step_time,
        "padding_share": s["pad_tokens"] / max(1, s["total_tokens"]),
        **{k: v for k, v in s.items() if k == "grad_norm" or k.startswith("loss/")},
    }


def _preflight(cfg, acc, objective, tdata, pad_id, per_rank: int) -> None:
    """The OOM preflight on this rank's share of the batch with the longest oracle prompts."""
    from .step import preflight

    def advice() -> str:
        from .plan import plan_memory

        total = torch.cuda.get_device_properties(acc.device).total_memory / 1e9 if acc.device.type == "cuda" else None
        try:
            return plan_memory(cfg, gpus=acc.num_processes, gpu_memory_gb=total, cuda=acc.device.type == "cuda").report()
        except Exception as err:  # noqa: BLE001 - advice is best effort; the failure itself is reported anyway
            return f"(no plan: {err})"

    longest = tdata.get(np.argsort(-tdata.lengths, kind="stable")[: per_rank * acc.num_processes])
    mine = longest[acc.process_index * per_rank : (acc.process_index + 1) * per_rank]
    preflight(acc, objective, mine, pad_id, cfg, advice, deepest=deepest_layer(longest))


def _evaluate(cfg, acc, raw_objective, tok, eval_ds, pad_id, fsdp) -> dict:
    from .evaluate import generation_eval, validation_loss

    out: dict = {}
    rng = rng_state()
    if fsdp:
        # every rank runs the same evaluation (each unit's weights are gathered by all ranks together)
        from .fsdp import run_in_root

        out.update(validation_loss(raw_objective, eval_ds, cfg, pad_id, acc.device))
        out.update(generation_eval(raw_objective.model, tok, eval_ds, cfg, acc.device,
                                   enter=lambda fn: run_in_root(raw_objective, fn)))
    elif acc.is_main_process:
        # rank 0 alone, on the unwrapped module: no collective runs, so the others simply wait below
        out.update(validation_loss(raw_objective, eval_ds, cfg, pad_id, acc.device))
        out.update(generation_eval(raw_objective.model, tok, eval_ds, cfg, acc.device))
    set_rng_state(rng)  # eval must not shift the training RNG stream (exact resume)
    acc.wait_for_everyone()
    return out


def _adapter_state(raw_objective, fsdp):
    """Under FSDP, the full LoRA weights gathered from the shards (every rank calls it); else None."""
    if not fsdp:
        return None
    from peft import get_peft_model_state_dict

    from .fsdp import full_lora_state

    return get_peft_model_state_dict(raw_objective.model, state_dict=full_lora_state(raw_objective))


def _save_checkpoint(cfg, acc, raw_objective, opt, sched, stream, step, run_dir, layers, fsdp) -> None:
    """Every rank writes its own RNG state (and under FSDP its optimizer shard) into rank 0's staging
    directory; rank 0 adds the adapter, scheduler and cursor, seals it and renames it into place."""
    import contextlib

    from accelerate.utils import broadcast_object_list

    from ..fsutil import atomic_directory

    main = acc.is_main_process
    final = run_dir / "checkpoints" / f"step_{step}"
    with atomic_directory(final, fsync=True) if main else contextlib.nullcontext() as tmp:
        where = [str(tmp) if main else None]
        if acc.num_processes > 1:
            broadcast_object_list(where)
        tmp = Path(where[0])
        torch.save(rng_state(), tmp / f"rng_rank{acc.process_index}.pt")
        if fsdp:
            from .fsdp import save_optimizer

            save_optimizer(raw_objective, opt, tmp / "optimizer")
        state = _adapter_state(raw_objective, fsdp)
        if main:
            save_adapter(raw_objective.model, tmp, ao_config(cfg, layers=layers, step=step), state_dict=state)
            if not fsdp:
                torch.save(opt.state_dict(), tmp / "optimizer.pt")  # DDP: identical on every rank
            torch.save(sched.state_dict(), tmp / "scheduler.pt")
            (tmp / "trainer_state.json").write_text(json.dumps({
                "step": step, **stream.state_dict(), "world_size": acc.num_processes,
                "seed": cfg.train.seed, "batch_size": cfg.train.batch_size, "fsdp": fsdp,
                "batch_tokens": cfg.train.batch_tokens,
            }, indent=1))
        acc.wait_for_everyone()  # every rank's files are in before the manifest seals them
        if main:
            write_manifest(tmp, {"step": step})
    if main:
        prune(run_dir, cfg.output.keep_last)
    acc.wait_for_everyone()


def _save_final(cfg, acc, raw_objective, run_dir, layers, step, fsdp) -> None:
    state = _adapter_state(raw_objective, fsdp)
    if acc.is_main_process:
        atomic_dir(run_dir / "adapter",
                   lambda d: save_adapter(raw_objective.model, d, ao_config(cfg, layers=layers, step=step),
                                          state_dict=state),
                   manifest_meta={"step": step})
    acc.wait_for_everyone()


def _load_weights(ckpt: Path, peft_model, field: str | None = None) -> None:
    """A checkpoint's adapter (verified against its manifest), or with `field` a saved adapter to start from
    (verified when it has a manifest; published adapters have none). Every LoRA weight must be set."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if field is None or (ckpt / MANIFEST).is_file():
        verify(ckpt)  # again, right before loading
    weights = load_file(str(ckpt / ADAPTER_WEIGHTS), device=str(next(peft_model.parameters()).device))
    try:
        result = set_peft_model_state_dict(peft_model, weights)
    except RuntimeError as err:  # size mismatch: another rank or another model
        if field is None:
            raise
        raise ConfigError(field, f"{ckpt}: its weights do not fit this model's LoRA (set lora.r and "
                                 f"lora.target_modules as the adapter was trained): {str(err)[:300]}") from None
    if getattr(result, "unexpected_keys", None):
        raise ConfigError(field or "resume", f"{ckpt}: adapter has unexpected keys {result.unexpected_keys[:5]}")
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise ConfigError(field or "resume", f"{ckpt}: adapter lacks {len(missing)} LoRA weights of this model "
                                             f"(e.g. {missing[0]}); set lora.target_modules as it was trained")


def _load_state(ckpt: Path, raw_objective, opt, sched, stream, rank: int, fsdp: bool) -> int:
    """Optimizer, schedule, data cursor and this rank's RNG from a checkpoint; returns its step."""
    state = json.loads((ckpt / "trainer_state.json").read_text())
    if state.get("batch_tokens") != stream.main.budget:
        raise ConfigError("train.batch_tokens", f"the checkpoint {ckpt} was written with batch_tokens "
                                                f"{state.get('batch_tokens')}, not {stream.main.budget}")
    if state.get("batch_size") != stream.batch_size:
        raise ConfigError("train.batch_size", f"the checkpoint {ckpt} was written with batch size "
                                              f"{state.get('batch_size')}, not {stream.batch_size}")
    if bool(state.get("fsdp")) != fsdp:
        raise CheckpointError(f"{ckpt}: written {'with' if state.get('fsdp') else 'without'} FSDP "
                              f"({state.get('world_size')} processes); resume it the same way")
    if fsdp:
        if state.get("world_size") != torch.distributed.get_world_size():
            raise CheckpointError(f"{ckpt}: its optimizer is sharded over {state.get('world_size')} FSDP processes; "
                                  "resume with as many")
        from .fsdp import load_optimizer

        load_optimizer(raw_objective, opt, ckpt / "optimizer")
    else:
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
    sched.load_state_dict(torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=True))
    try:
        stream.load_state_dict(state, int(state["step"]))
    except ValueError as err:
        raise ConfigError("data.curriculum", f"{ckpt}: {err}") from None
    rng_file = ckpt / f"rng_rank{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    else:
        warnings.warn(f"{ckpt} has no RNG state for rank {rank} (saved with {state.get('world_size')} processes); "
                      "dropout masks will differ from an uninterrupted run", stacklevel=2)
    return int(state["step"])
