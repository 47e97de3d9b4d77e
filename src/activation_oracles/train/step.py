"""One optimiser step, shared by the trainer and the benchmarks: micro-batches through the objective,
backward, clipping, AdamW and the schedule.

On a GPU the host queues kernels far ahead of the device as long as nothing reads a result back; the
step therefore keeps its statistics on the device and reads them back once, after the optimizer step.
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from ..data.schema import TASKS
from .batching import OracleBatch, collate
from .objective import OracleObjective, PackedObjective, batch_kwargs
from .packed import STAT_SLOTS, collate_packed


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
    """AdamW with the config's settings; the fused kernel where torch has one for the device (one launch for
    all tensors instead of several per tensor), on a GPU capturable, with the learning rate a device tensor, when the step is captured as a CUDA graph
    (train.cuda_graphs)."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    dev_type = torch.device(device).type
    cuda = dev_type == "cuda"
    kw = {"fused": True} if dev_type in _get_fused_kernels_supported_devices() else {}
    lr = cfg.optim.lr
    if cuda and cfg.train.cuda_graphs:
        kw["capturable"] = True
        lr = torch.tensor(float(lr), device=device)  # (set in place by the schedule, read by the graph)
    opt = torch.optim.AdamW(params, lr=lr, betas=tuple(cfg.optim.betas), eps=cfg.optim.eps,
                            weight_decay=cfg.optim.weight_decay, **kw)
    opt.ao_base_lr = float(cfg.optim.lr)  # (host copy: a tensor lr is never read back)
    return opt


def make_schedule(opt, total: int, warmup_ratio: float, schedule: str = "linear"):
    """Linear warmup over int(total x warmup_ratio) steps from 0, then linear decay to 0 at `total` (or, for
    "constant", flat): transformers' schedules, a LambdaLR (`host_lr` reads its lambda)."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    warm = int(total * warmup_ratio)
    if schedule == "constant":
        return get_constant_schedule_with_warmup(opt, warm)
    return get_linear_schedule_with_warmup(opt, warm, total)


def host_lr(sched) -> float:
    """The schedule's current learning rate as a host number. A tensor lr (train.cuda_graphs) is not read
    back: it is the schedule's lambda times the configured lr, which the optimizer keeps as `ao_base_lr`."""
    lr = sched.get_last_lr()[0]
    if not isinstance(lr, torch.Tensor):
        return float(lr)
    return sched.optimizer.ao_base_lr * sched.lr_lambdas[0](sched.last_epoch)


def make_objective(model, cfg) -> OracleObjective | PackedObjective:
    """The training objective: PackedObjective with train.packing, else the padded OracleObjective."""
    t = cfg.train
    cls = PackedObjective if t.packing else OracleObjective
    return cls(model, hook_layer=t.hook_layer, coefficient=t.coefficient, autocast=t.autocast,
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


def check_packing(objective, cfg) -> float:
    """train.packing: compare the packed objective's context forward (one row, the trainer's device-built
    masks and position ids) with left-padded sequences through transformers' own masks, once, on short
    random sequences and, for a model with a sliding window, one longer than the window, at a block after
    every kind of attention layer. Returns the error; above PACKING_TOLERANCE the packed path is not this
    model's function."""
    from ..attention import sliding_windows
    from ..steering import packing_error

    p = objective._p
    windows = [w for w in sliding_windows(p.config).values() if w]
    lengths = (5, 3, 7) + tuple(w + 3 for w in windows if w <= 4096)
    types = list(getattr(p.config.get_text_config() if hasattr(p.config, "get_text_config") else p.config,
                         "layer_types", None) or [])
    layer = min(len(p.blocks) - 1, max([1] + [types.index(t) for t in set(types)]))
    with torch.no_grad():
        return packing_error(objective.model, lengths=lengths, layer=layer,
                             collect=lambda ids, pos, seq, at: objective.collect(ids, pos, seq, [at])[at][0])


def collate_for(cfg, rows, pad_id, *, sharded: bool = False, deepest: int | None = None, scale: float = 1.0,
                shapes=None):
    """The batch the config's objective takes: packed (train.packing; `scale` is each target's loss weight,
    `shapes` the run's ShapeBuckets), or padded with the config's context grouping. `sharded` (FSDP): every
    rank must run the same forwards, so the contexts go in one padded group and the context forward runs to
    `deepest`, the deepest source layer of the whole global batch (not just of this rank's share)."""
    if getattr(cfg.train, "packing", False) and not sharded:
        return collate_packed(rows, scale=scale, shapes=shapes, pad_id=pad_id)
    return collate_padded(cfg, rows, pad_id, sharded=sharded, deepest=deepest)


def collate_padded(cfg, rows, pad_id, *, sharded: bool = False, deepest: int | None = None):
    """The padded OracleBatch with the config's context grouping (what the in-training generation
    evaluation reads its context groups from, whatever the step's batches are); `sharded`: as collate_for."""
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


class StepStats:
    """A step's numbers, on the device until `read()`: the one read-back, made only when the loop logs (on a
    GPU any earlier read would stall the host until the device caught up). Indexing reads too."""

    def __init__(self, acc, sums, gnorm, counts: list[int], tokens: list[int], lr: float, denom: float):
        self.acc, self.sums, self.gnorm = acc, sums, gnorm
        self.counts, self.tokens, self.lr, self.denom = counts, tokens, lr, denom
        self._read = None

    def read(self) -> dict:
        """loss, per-task loss, oracle/context/pad/total tokens (summed over ranks), grad norm, lr."""
        if self._read is not None:
            return self._read
        dev = self.sums.device
        parts = [self.sums.double(), torch.tensor(self.counts + self.tokens, dtype=torch.float64, device=dev)]
        if self.gnorm is not None:  # (a DTensor under FSDP)
            g = self.gnorm.full_tensor() if hasattr(self.gnorm, "full_tensor") else self.gnorm
            parts.append(g.detach().double().reshape(1))
        stats = torch.cat(parts)
        if self.acc.num_processes > 1:
            stats = self.acc.reduce(stats, reduction="sum")
            if self.gnorm is not None:  # (every rank holds the same norm: not a sum)
                stats[-1] /= self.acc.num_processes
        stats = stats.cpu().tolist()  # the one read-back
        n = len(self.counts)
        sums, counts, tokens = stats[:n], stats[n : 2 * n], stats[2 * n : 2 * n + 4]
        real = sums[: len(TASKS) + 1]  # (the last slot holds the padding targets of bucketed batches)
        out = {"loss": sum(real) / self.denom, "lr": self.lr, "tokens": int(tokens[0]),
               "context_tokens": int(tokens[1]), "pad_tokens": int(tokens[2]), "total_tokens": int(tokens[3])}
        if self.gnorm is not None:
            out["grad_norm"] = stats[-1]
        for i, t in enumerate(TASKS):
            if counts[i] > 0:
                out[f"loss/{t}"] = sums[i] / counts[i]
        self._read = out
        return out

    def __getitem__(self, key):
        return self.read()[key]


def train_step(acc, objective, opt, sched, micro_rows: list[list[dict]], pad_id: int, cfg, denom: float,
               deepest: int | None = None, shapes=None) -> StepStats:
    """One optimiser step over this rank's micro-batches (lists of data rows). `denom`: labelled targets
    of the whole global batch (the loss is their mean over all ranks); `deepest`: its deepest source
    layer (needed under FSDP); `shapes`: the run's ShapeBuckets (packed batches of a few fixed shapes).
    Nothing is read back from the device: the numbers come from the returned StepStats' `read()`."""
    world, dev = acc.num_processes, acc.device
    sharded = _sharded(objective)
    sums = torch.zeros(STAT_SLOTS, dtype=torch.float64, device=dev)
    counts = [0] * STAT_SLOTS
    tokens = [0, 0, 0, 0]  # oracle, context, pad, total
    for j, rows in enumerate(micro_rows):
        with _phase("ao.collate"):
            batch = collate_for(cfg, rows, pad_id, sharded=sharded, deepest=deepest, scale=world / denom,
                                shapes=shapes)
        with _phase("ao.to_device"):
            batch = batch.to(dev)
        sync = contextlib.nullcontext() if j == len(micro_rows) - 1 else acc.no_sync(objective)
        with sync:
            with _phase("ao.forward"):
                ce, which = objective(**batch_kwargs(batch))
            with _phase("ao.backward"):
                if isinstance(batch, OracleBatch):
                    acc.backward(ce.sum() * (world / denom))
                else:
                    acc.backward((ce * batch.label_weight).sum())
        slots = batch.task_ids[which] if isinstance(batch, OracleBatch) else which  # (padded: which = target's row)
        counts = [c + k for c, k in zip(counts, batch.task_counts)]
        sums.index_add_(0, slots, ce.detach().double())
        tokens = [a + b for a, b in zip(tokens, (batch.real_tokens, batch.context_tokens, batch.pad_tokens,
                                                 batch.total_tokens))]
    gnorm = None
    if cfg.optim.max_grad_norm > 0:
        if sharded:  # (FSDP: accelerate finds the sharded module from its parameters)
            gnorm = acc.clip_grad_norm_(objective.parameters(), cfg.optim.max_grad_norm)
        else:  # the optimizer's own list: no walk of the model, one foreach op per kind
            gnorm = torch.nn.utils.clip_grad_norm_(_trainable(opt), cfg.optim.max_grad_norm, foreach=True)
    lr = host_lr(sched)
    with _phase("ao.optimizer"):
        opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return StepStats(acc, sums, gnorm, counts, tokens, lr, denom)


def _trainable(opt) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


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
