"""Memory planning: the peak memory per GPU of a training config, from the model config alone.

The model is built on the meta device (shapes only: no weights, nothing downloaded but its config, and the
paper presets' configs ship with the package), wrapped in the config's LoRA, and the trainer's own
objective runs one forward on a worst-case micro-batch (every example at the mixture's 99.9th-percentile
oracle and context lengths, the percentile the trainer cuts at). A saved-tensors hook records what
autograd keeps for the backward pass; that, plus the weights, the LoRA weights, their gradients and the
AdamW state, the loss at labelled positions and the CUDA context, is the plan.

    plan = plan_memory(load_config("paper-qwen3-8b"), gpus=1, gpu_memory_gb=80)
    print(plan.report())
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checks import check_int, check_number
from .config import TrainConfig, apply_overrides

GB = 1e9
CUDA_CONTEXT = 1.0 * GB  # CUDA context, cuBLAS/cuDNN workspaces, allocator slack (rule of thumb)
QUANT_BYTES = {"8bit": 1.0, "4bit": 0.5 + 4 / 64}  # NF4: half a byte plus a float32 absmax per 64 values
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class MemoryPlan:
    model: str
    gpus: int
    gpu_memory_gb: float | None
    micro_batch: int
    lengths: dict  # oracle, context, labels, and where they come from
    lines: list[tuple[str, float]] = field(default_factory=list)  # (component, bytes)
    activations_checkpointed: float = 0.0
    activations_plain: float = 0.0
    total: float = 0.0
    advice: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def fits(self) -> bool | None:
        return None if self.gpu_memory_gb is None else self.total <= self.gpu_memory_gb * GB

    def report(self) -> str:
        L = self.lengths
        out = [f"{self.model}: {self.details.get('blocks')} blocks, {self.details.get('params', 0) / 1e9:.2f} B "
               f"parameters; {self.gpus} GPU(s), micro-batch {self.micro_batch} per GPU at oracle {L['oracle']} / "
               f"context {L['context']} tokens, {L['labels']} labelled ({L['source']})"]
        width = max(len(n) for n, _ in self.lines) + 2
        out += [f"  {name:<{width}}{b / GB:8.2f} GB" for name, b in self.lines]
        out.append(f"  {'total (peak per GPU)':<{width}}{self.total / GB:8.2f} GB")
        other = self.activations_plain if self.details.get("checkpointing") else self.activations_checkpointed
        out.append(f"  (activations {'without' if self.details.get('checkpointing') else 'with'} gradient "
                   f"checkpointing: {other / GB:.2f} GB)")
        if self.fits is not None:
            pct = 100 * self.total / (self.gpu_memory_gb * GB)
            out.append(f"{'fits' if self.fits else 'does NOT fit'} in {self.gpu_memory_gb:g} GB per GPU ({pct:.0f} %)")
        out += [f"  - {a}" for a in self.advice]
        return "\n".join(out)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lines"] = {n: round(b / GB, 3) for n, b in self.lines}
        d["total_gb"] = round(self.total / GB, 3)
        d["fits"] = self.fits
        return d


# ----------------------------------------------------------------------------- lengths


def plan_lengths(cfg: TrainConfig, data: str | Path | None = None) -> dict:
    """The data.max_length_percentile lengths (oracle, context, labelled targets, placeholders) of the
    mixture in `data` (or data.path), else of the shipped paper-mixture sample."""
    from .synthetic import load_lengths

    q = cfg.data.max_length_percentile
    path = data or cfg.data.path
    if path is not None:
        from .dataset import _label_counts, _list_lengths, open_split

        ds = open_split(Path(path), cfg.data.train_split, "data.train_split")
        cols = {"oracle": _list_lengths(ds, "input_ids"), "context": _list_lengths(ds, "context_input_ids"),
                "k": _list_lengths(ds, "positions"), "labels": _label_counts(ds)}
        source = f"{q:g}th percentile of {path}"
    else:
        cols = load_lengths()
        source = f"{q:g}th percentile of the paper mixture sample"
    pick = lambda c: int(np.percentile(cols[c], q, method="higher"))  # noqa: E731
    return {"oracle": pick("oracle"), "context": pick("context"), "labels": min(pick("labels"), pick("oracle") - 2),
            "k": min(pick("k"), pick("context")), "source": source}


# ----------------------------------------------------------------------------- measuring on meta


class _FlashLike(torch.autograd.Function):
    """Stands in for SDPA on the meta device, saving what the fused kernels save (q, k, v, output and a
    float32 log-sum-exp per query) rather than the math path's attention probabilities."""

    @staticmethod
    def forward(ctx, q, k, v):
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, _, _ = ctx.saved_tensors
        return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


class _CudaDropout(torch.autograd.Function):
    """Dropout as the fused CUDA kernel does it, saving a one-byte mask (off CUDA, and on meta, PyTorch
    multiplies by a mask in the input's dtype and saves that instead)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(torch.empty(x.shape, dtype=torch.bool, device=x.device))
        return torch.empty_like(x)

    @staticmethod
    def backward(ctx, grad):
        return torch.empty_like(grad)


@contextlib.contextmanager
def _on_meta(fused: bool, cuda: bool):
    """Patches for a forward on the meta device: SDPA saves what the fused kernels save, dropout what the
    CUDA kernel saves (when planning for a GPU), and the mask builder may not read a tensor's value (its
    shortcut for unpadded batches calls .item())."""
    import transformers.masking_utils as mu

    F = torch.nn.functional
    real = F.scaled_dot_product_attention, F.dropout, getattr(mu, "_ignore_causal_mask_sdpa", None)
    if fused:
        F.scaled_dot_product_attention = lambda q, k, v, *a, **kw: _FlashLike.apply(q, k, v)
    if cuda:
        F.dropout = lambda x, p=0.5, training=True, inplace=False: _CudaDropout.apply(x) if training and p > 0 else x
    if real[2] is not None:
        mu._ignore_causal_mask_sdpa = lambda *a, **kw: False
    try:
        yield
    finally:
        F.scaled_dot_product_attention, F.dropout = real[:2]
        if real[2] is not None:
            mu._ignore_causal_mask_sdpa = real[2]


def _meta_model(cfg: TrainConfig, config, dtype: torch.dtype, attn: str | None):
    from transformers import AutoModelForCausalLM

    from .step import apply_lora

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **({"attn_implementation": attn} if attn else {}))
    # bitsandbytes cannot build on meta: the quantised weights are counted by hand instead
    plain = apply_overrides(cfg, {"model.quantization": None, "train.compile": False,
                                  "model.gradient_checkpointing": False})
    return apply_lora(model, plain)


def _saved_bytes(objective, batch) -> float:
    """Bytes of the tensors autograd saves for backward in one forward (parameters excluded, each
    storage counted once)."""
    params = {p.untyped_storage()._cdata for p in objective.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        if s._cdata not in params:
            seen[s._cdata] = max(seen.get(s._cdata, 0), s.nbytes())
        return t

    from .objective import batch_kwargs

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        objective(**batch_kwargs(batch))
    return float(sum(seen.values()))


def _worst_batch(lengths: dict, micro: int, layers: list[int], vocab: int):
    from .batching import collate
    from .synthetic import synthetic_row

    rng = np.random.default_rng(0)
    rows = [synthetic_row(rng, oracle=lengths["oracle"], context=lengths["context"], k=lengths["k"],
                          labels=lengths["labels"], layer=layers[i % len(layers)], vocab=vocab) for i in range(micro)]
    return collate(rows, 0, context_pad_tolerance=1.0).to("meta")


# ----------------------------------------------------------------------------- the plan


def plan_memory(cfg: TrainConfig, *, gpus: int = 1, gpu_memory_gb: float | None = 80.0,
                data: str | Path | None = None, cuda: bool = True) -> MemoryPlan:
    """Peak memory per GPU of training `cfg` on `gpus` GPUs (DDP, or FSDP when train.distributed says so).
    `cuda=False` plans a CPU run: no CUDA context, the model in its configured dtype (float32 by default)."""
    from ..families import default_attn_implementation
    from ..models import layer_from_percent, model_config
    from .objective import OracleObjective

    check_int(gpus, "gpus", 1)
    if gpu_memory_gb is not None:
        check_number(gpu_memory_gb, "gpu_memory_gb", above=0)
    t = cfg.train
    if t.batch_size % (gpus * t.grad_accum):
        raise ValueError(f"train.batch_size={t.batch_size} is not divisible by gpus x grad_accum = {gpus} x {t.grad_accum}")
    micro = t.batch_size // (gpus * t.grad_accum)
    config = model_config(cfg.model.spec, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    dtype_name = cfg.model.dtype or ("bfloat16" if cuda else "float32")
    dtype = getattr(torch, dtype_name)
    attn = cfg.model.attn_implementation or default_attn_implementation(config, "cuda" if cuda else "cpu")
    lengths = plan_lengths(cfg, data)
    n_blocks = text.num_hidden_layers
    layers = [layer_from_percent(n_blocks, p) for p in cfg.data.layer_percents]

    # (autocast cannot run on meta: under bf16 autocast the tensors saved for backward are bf16 copies,
    # which a bf16 model saves too)
    model = _meta_model(cfg, config, torch.bfloat16 if t.autocast == "bf16" else dtype, attn)
    lora_n, lora_bytes, lora_dtype = _lora_sizes(model, t.autocast)
    objective = OracleObjective(model, hook_layer=t.hook_layer, coefficient=t.coefficient,
                                injection_grad=t.injection_grad)
    batch = _worst_batch(lengths, micro, layers, text.vocab_size)
    fused = attn in (None, "sdpa", "flash_attention_2")
    with _on_meta(fused, cuda):
        saved = _saved_bytes(objective, batch)

    weights, n_params = _base_weights(model, cfg.model.quantization, dtype_name)

    # gradient checkpointing keeps each block's input and recomputes one block at a time in backward
    hidden = text.hidden_size
    ckpt = float(n_blocks * micro * lengths["oracle"] * hidden * DTYPE_BYTES[dtype_name]) + saved / n_blocks
    acts = ckpt if cfg.model.gradient_checkpointing else saved
    n_lab = micro * lengths["labels"]
    loss = float(n_lab * text.vocab_size * (DTYPE_BYTES[dtype_name] + 4 + 4))  # logits, float32 copy, its gradient
    # the context forward (no grad) before it: the kept source layers and one block's working set
    ctx_tokens = micro * lengths["context"]
    inter = getattr(text, "intermediate_size", 4 * hidden)
    context = float(ctx_tokens * (len(layers) * hidden + 3 * inter + 4 * hidden) * DTYPE_BYTES[dtype_name])

    fsdp = gpus > 1 and t.distributed == "fsdp"
    shard = gpus if fsdp else 1
    lines = [(f"base weights ({cfg.model.quantization or dtype_name}{', sharded' if fsdp else ''})", weights / shard),
             (f"LoRA weights (r {cfg.lora.r}, {lora_n / 1e6:.1f} M, {lora_dtype})", lora_bytes / shard),
             ("LoRA gradients", lora_bytes / shard),
             ("AdamW state (2 per LoRA weight)", 2 * lora_bytes / shard)]
    if fsdp:  # one block gathered for compute and the next prefetched
        from ..models import decoder_layers

        blocks = decoder_layers(model)
        block_bytes = max(sum(p.numel() for p in b.parameters()) for b in blocks) * DTYPE_BYTES[dtype_name]
        lines.append(("gathered blocks (FSDP, 2 at a time)", 2.0 * block_bytes))
    elif gpus > 1:
        lines.append(("DDP gradient buckets", lora_bytes))
    static = sum(b for _, b in lines)
    if acts + loss >= context:
        lines += [(f"activations kept for backward{' (checkpointed)' if cfg.model.gradient_checkpointing else ''}",
                   acts), ("loss at labelled positions", loss)]
    else:  # the context forward is the larger of the two phases
        lines.append(("context forward (no grad; larger than the backward's activations)", context))
    if cuda:
        lines.append(("CUDA context and workspaces", CUDA_CONTEXT))
    total = static + max(acts + loss, context) + (CUDA_CONTEXT if cuda else 0.0)
    plan = MemoryPlan(model=cfg.model.spec, gpus=gpus, gpu_memory_gb=gpu_memory_gb, micro_batch=micro,
                      lengths=lengths, lines=lines, activations_checkpointed=ckpt, activations_plain=saved,
                      total=total, details={"blocks": n_blocks, "params": n_params, "lora_params": lora_n,
                                            "attn": attn or "sdpa", "checkpointing": cfg.model.gradient_checkpointing,
                                            "dtype": dtype_name, "fsdp": fsdp, "context_phase": context})
    plan.advice = _advice(plan, cfg, saved, ckpt, loss, context, weights, lora_bytes)
    return plan


def _lora_sizes(model, autocast: str | None) -> tuple[int, float, str]:
    """(parameters, bytes, dtype) of the LoRA weights; under bf16 autocast they are cast to bf16 in place
    (PEFT's float32 LoRA layers see bf16 inputs, which they keep)."""
    lora = [p for p in model.parameters() if p.requires_grad]
    sizes = (sum(p.numel() for p in lora), float(sum(p.numel() * p.element_size() for p in lora)),
             str(lora[0].dtype).replace("torch.", "") if lora else "")
    if autocast == "bf16":
        for p in lora:
            p.data = p.data.to(torch.bfloat16)
    return sizes


def _base_weights(model, quantization: str | None, dtype_name: str) -> tuple[float, int]:
    """(bytes, parameters) of the frozen weights: quantised linear layers inside the blocks at their bit
    width, the rest in the model dtype."""
    from ..models import decoder_layers, unwrap

    lora_ids = {id(p) for p in model.parameters() if p.requires_grad}
    block_linear = {id(m.weight) for b in decoder_layers(model) for m in b.modules()
                    if isinstance(m, torch.nn.Linear) and id(m.weight) not in lora_ids}
    qbytes = QUANT_BYTES.get(quantization)
    weights, n_params = 0.0, 0
    for p in unwrap(model).parameters():
        if id(p) in lora_ids:
            continue
        n_params += p.numel()
        if qbytes:  # prepare_model_for_kbit_training casts every weight it did not quantise to float32
            weights += p.numel() * (qbytes if id(p) in block_linear else 4)
        else:
            weights += p.numel() * DTYPE_BYTES[dtype_name]
    return weights, n_params


def _advice(plan: MemoryPlan, cfg: TrainConfig, saved, ckpt, loss, context, weights, lora_bytes) -> list[str]:
    """Which setting to change, cheapest first, each with the total it would give."""
    if plan.fits is not False:
        return []
    cap = plan.gpu_memory_gb * GB
    acts = ckpt if cfg.model.gradient_checkpointing else saved
    rest = plan.total - max(acts + loss, context)
    out = []
    if not cfg.model.gradient_checkpointing:
        with_ckpt = rest + max(ckpt + loss, context)
        out.append(f"model.gradient_checkpointing=true: {with_ckpt / GB:.1f} GB"
                   + (" (fits)" if with_ckpt <= cap else ""))
    for k in (2, 4, 8):
        if plan.micro_batch % k == 0:
            smaller = rest + max((acts + loss) / k, context / k)
            out.append(f"train.grad_accum={cfg.train.grad_accum * k} (micro-batch {plan.micro_batch // k}, same "
                       f"global batch): {smaller / GB:.1f} GB" + (" (fits)" if smaller <= cap else ""))
            if smaller <= cap:
                break
    if not cfg.model.quantization:
        q8 = plan.total - weights / (plan.gpus if plan.details["fsdp"] else 1) * (1 - QUANT_BYTES["8bit"] / 2)
        out.append(f"model.quantization=8bit (bitsandbytes; DDP, not FSDP): {q8 / GB:.1f} GB"
                   + (" (fits)" if q8 <= cap else ""))
    if not plan.details["fsdp"]:
        out.append("more GPUs with train.distributed=fsdp shard the weights: `ao plan ... --gpus N` to size it")
    return out


# ----------------------------------------------------------------------------- ao plan
