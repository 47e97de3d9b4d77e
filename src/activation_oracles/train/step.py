"""One optimiser step, shared by the trainer and the benchmarks: micro-batches through the objective,
backward, clipping, AdamW and the schedule.

On a GPU the host queues kernels far ahead of the device as long as nothing reads a result back; the
step therefore keeps its statistics on the device and reads them back once, after the optimizer step.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from .batching import TASKS, collate
from .objective import OracleObjective, batch_kwargs


def apply_lora(model, cfg):
    """The base model prepared for training (k-bit preparation, gradient checkpointing) and wrapped in the
    config's LoRA adapter, in train mode; its decoder blocks compiled when train.compile is set."""
    from peft import LoraConfig, get_peft_model

    if cfg.model.quantization:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.model.gradient_checkpointing)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    lcfg = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(model, lcfg)
    model.train()
    if cfg.train.compile:
        compile_blocks(model)
    return model


def make_optimizer(params, cfg, device) -> torch.optim.AdamW:
    """AdamW with the config's settings; the fused CUDA kernel on a GPU (one launch for all tensors)."""
    fused = torch.device(device).type == "cuda"
    return torch.optim.AdamW(params, lr=cfg.optim.lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                             weight_decay=cfg.optim.weight_decay, **({"fused": True} if fused else {}))


def make_objective(model, cfg) -> OracleObjective:
    t = cfg.train
    return OracleObjective(model, hook_layer=t.hook_layer, coefficient=t.coefficient, autocast=t.autocast,
                           injection_grad=t.injection_grad)


COMPILE_GRAPH_LIMIT = 64


def compile_blocks(model, backend: str = "inductor") -> None:
    """torch.compile each decoder block's forward (regional compilation: one graph shared by all blocks,
    dynamic sequence lengths). The forward hooks (injection, early stop) stay outside the graphs."""
    from ..models import decoder_layers

    # One code object serves every block, so each (grad mode, mask kind, autocast, train/eval) variant is one
    # more graph of it; past dynamo's default limit of 8 it would fall back to eager without a word.
    cfg = torch._dynamo.config
    name = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    setattr(cfg, name, max(getattr(cfg, name), COMPILE_GRAPH_LIMIT))
    for block in decoder_layers(model):
        if not hasattr(block, "_ao_eager_forward"):
            block._ao_eager_forward = block.forward
            block.forward = torch.compile(block.forward, dynamic=True, backend=backend)


def uncompile_blocks(model) -> None:
    from ..models import decoder_layers

    for block in decoder_layers(model):
        if hasattr(block, "_ao_eager_forward"):
            block.forward = block._ao_eager_forward
            del block._ao_eager_forward


PACKING_TOLERANCE = 0.05  # relative; bf16 rounding stays far below, a leak between sequences far above


def check_context_packing(model, cfg, *, sharded: bool = False) -> float | None:
    """When train.context_packing is on, compare packed with padded activations once (`packing_error`) and
    turn packing off with a warning if this model's forward does not honour packed position ids. Under FSDP
    packing is not used (every rank must run the same forwards). Returns the measured error."""
    from ..steering import packing_error

    if not cfg.train.context_packing or sharded:
        return None
    with torch.no_grad():
        err = packing_error(model)
    if not err <= PACKING_TOLERANCE:
        warnings.warn(f"train.context_packing: packed and padded activations of this model differ by {err:.3g} "
                      f"(relative; tolerance {PACKING_TOLERANCE}), so its forward does not keep packed sequences "
                      "apart; training on with padded context groups instead", stacklevel=2)
        cfg.train.context_packing = False
    return err


def collate_for(cfg, rows, pad_id, *, sharded: bool = False, deepest: int | None = None):
    """collate with the config's context grouping. `sharded` (FSDP): every rank must run the same
    forwards, so the contexts go in one padded group and the context forward runs to `deepest`, the
    deepest source layer of the whole global batch (not just of this rank's share)."""
    t = cfg.train
    if sharded:
        batch = collate(rows, pad_id, context_pad_tolerance=1.0)
        if deepest is not None:
            batch.layers = sorted(set(batch.layers) | {int(deepest)})
            batch.ctx_layers = [batch.layers]
        return batch
    return collate(rows, pad_id, context_pad_tolerance=t.context_pad_tolerance,
                   context_group_overhead=t.context_group_overhead, context_packing=t.context_packing)


def _sharded(objective) -> bool:
    from .fsdp import is_sharded

    return is_sharded(objective)


def _phase(name: str):
    """A named range for torch.profiler (host time per phase of a step; next to nothing when not profiling)."""
    return torch.profiler.record_function(name)


def train_step(acc, objective, opt, sched, micro_rows: list[list[dict]], pad_id: int, cfg, denom: float,
               deepest: int | None = None) -> dict:
    """One optimiser step over this rank's micro-batches (lists of data rows). `denom`: labelled targets
    of the whole global batch (the loss is their mean over all ranks); `deepest`: its deepest source
    layer (needed under FSDP). Returns the step's numbers, summed over ranks: loss, per-task loss,
    oracle/context/pad/total tokens, grad norm, lr."""
    world, dev = acc.num_processes, acc.device
    sharded = _sharded(objective)
    n = len(TASKS) + 1  # the last slot: rows of any other task
    sums = torch.zeros(n, dtype=torch.float64, device=dev)
    counts = torch.zeros(n, dtype=torch.float64, device=dev)
    tokens = torch.zeros(4, dtype=torch.float64)  # oracle, context, pad, total
    for j, rows in enumerate(micro_rows):
        with _phase("ao.collate"):
            batch = collate_for(cfg, rows, pad_id, sharded=sharded, deepest=deepest)
        with _phase("ao.to_device"):
            batch = batch.to(dev)
        sync = contextlib.nullcontext() if j == len(micro_rows) - 1 else acc.no_sync(objective)
        with sync:
            with _phase("ao.forward"):
                ce, label_rows = objective(**batch_kwargs(batch))
            with _phase("ao.backward"):
                acc.backward(ce.sum() * (world / denom))
        k = batch.task_ids[label_rows]
        sums.index_add_(0, k, ce.detach().double())
        counts.index_add_(0, k, torch.ones_like(ce, dtype=torch.float64))
        tokens += torch.tensor([batch.real_tokens, batch.context_tokens, batch.pad_tokens, batch.total_tokens],
                               dtype=torch.float64)
    gnorm = None
    if cfg.optim.max_grad_norm > 0:
        gnorm = acc.clip_grad_norm_(objective.parameters(), cfg.optim.max_grad_norm)
    lr = sched.get_last_lr()[0]
    with _phase("ao.optimizer"):
        opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    stats = torch.cat([sums, counts, tokens.to(dev)])
    if world > 1:
        stats = acc.reduce(stats, reduction="sum")
    stats = stats.cpu()  # the step's one read-back
    sums, counts, tokens = stats[:n], stats[n : 2 * n], stats[2 * n :]
    out = {"loss": float(sums.sum()) / denom, "lr": lr, "tokens": int(tokens[0]), "context_tokens": int(tokens[1]),
           "pad_tokens": int(tokens[2]), "total_tokens": int(tokens[3])}
    if gnorm is not None:  # (a DTensor under FSDP)
        out["grad_norm"] = float(gnorm.full_tensor() if hasattr(gnorm, "full_tensor") else gnorm)
    for i, t in enumerate(TASKS):
        if counts[i] > 0:
            out[f"loss/{t}"] = float(sums[i] / counts[i])
    return out


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and any(s in str(err) for s in ("out of memory", "can't allocate memory")))


def preflight(acc, objective, rows: list[dict], pad_id: int, cfg, advice=None, deepest: int | None = None) -> None:
    """Forward and backward on the longest batch before the first step, so that a run that cannot fit
    fails in seconds with advice instead of hours later. Takes no optimizer step and leaves gradients and
    every RNG as they were. `advice()` -> text (the memory plan's), asked for only on failure."""
    from .checkpoint import rng_state, set_rng_state
    from .config import ConfigError

    rng = rng_state()
    failure = None
    try:
        batch = collate_for(cfg, rows, pad_id, sharded=_sharded(objective), deepest=deepest).to(acc.device)
        ce, _ = objective(**batch_kwargs(batch))
        acc.backward(ce.sum() * 0.0)  # every gradient buffer is allocated; the values do not matter
        del ce, batch
    except Exception as err:  # noqa: BLE001 - only out-of-memory errors are ours to explain
        if not _is_oom(err):
            raise
        failure = str(err).splitlines()[0][:300]
    finally:
        for p in objective.parameters():
            p.grad = None
        set_rng_state(rng)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if failure is not None:
        n = max(len(r["input_ids"]) for r in rows)
        c = max(len(r["context_input_ids"]) for r in rows)
        text = advice() if advice is not None else ""
        raise ConfigError("train.batch_size", f"a forward and backward on the longest batch ({len(rows)} examples "
                                              f"per process, oracle prompts up to {n} tokens, contexts up to {c}) ran "
                                              f"out of memory before training started ({failure}). "
                                              f"What would fit, from `ao plan`:\n{text}")
