"""Benchmark one oracle training step against the sum of its parts and a reference-style loop.

    .venv/bin/python benchmarks/train_step.py [--steps 4] [--autocast bf16] [--reference] [--check-bf16]

On the same batches (cpu-smollm2 settings: SmolLM2-135M, LoRA r 64 all-linear, batch 16, built-in mixture):

* step   - our full training step: collate, context forward (adapter off, stopped at the deepest layer,
           each distinct context once, length-grouped), injected LoRA forward, CE at labelled positions,
           backward, clip at 1.0, AdamW, scheduler.
* parts  - the same work through plain transformers/peft calls: the base model truncated to the deepest
           needed block over the same context tokens (no hooks), plus the LoRA forward and backward on the
           same oracle tokens with logits only at labelled positions (no injection).
* reference (--reference) - a loop written the way the paper's reference loop works (our own code): every
           context re-run for each source layer of the batch through the whole model, the injection hook
           looping over the batch in Python, and full-vocabulary logits at every position.

The last line printed is one JSON object: step_s, parts_s, ratio (= step_s / parts_s), padding_share,
tokens_per_s, and the details.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from activation_oracles.hooks import _adapters_off  # noqa: E402
from activation_oracles.models import decoder_layers, unwrap  # noqa: E402
from activation_oracles.prompt import IGNORE_INDEX  # noqa: E402
from activation_oracles.train.batching import BatchStream, collate, position_ids  # noqa: E402
from activation_oracles.train.config import load_config  # noqa: E402
from activation_oracles.train.dataset import build_builtin_mixture, open_train_data  # noqa: E402
from activation_oracles.train.loop import _build_model, lr_lambda  # noqa: E402
from activation_oracles.train.objective import OracleObjective, autocast_ctx, backbone_of, batch_kwargs  # noqa: E402


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-smollm2")
    ap.add_argument("--data", default=None, help="mixture dir (default: built-in mixture, scale 0.05)")
    ap.add_argument("--steps", type=int, default=4, help="measured steps")
    ap.add_argument("--warmup", type=int, default=2,
                    help="unmeasured warm-up steps (the first steps of a fresh process are slow: allocator)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--autocast", choices=["none", "bf16"], default="none")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reference", action="store_true", help="also time the reference-style loop")
    ap.add_argument("--check-bf16", action="store_true", help="compare loss and gradients under bf16 autocast")
    return ap.parse_args()


def sync_time():
    return time.perf_counter()


# ----------------------------------------------------------------------------- our step


def our_step(objective, opt, sched, rows, pad_id, tol):
    t0 = sync_time()
    b = collate(rows, pad_id, context_pad_tolerance=tol)
    denom = max(1, b.label_tokens)
    ce, _ = objective(**batch_kwargs(b))
    (ce.sum() / denom).backward()
    torch.nn.utils.clip_grad_norm_([p for p in objective.parameters() if p.requires_grad], 1.0)
    t_opt = sync_time()
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    t1 = sync_time()
    return t1 - t0, t1 - t_opt, b


# ----------------------------------------------------------------------------- parts (plain calls)


def plain_context_forward(model, b, autocast):
    """Base model truncated to the deepest needed block, adapter off, on the same context tokens."""
    dec = backbone_of(model)
    blocks = decoder_layers(model)
    deepest = max(b.layers)
    full = dec.layers
    t0 = sync_time()
    dec.layers = torch.nn.ModuleList(list(blocks)[: deepest + 1])
    try:
        with _adapters_off(model), torch.no_grad(), autocast_ctx(autocast, torch.device("cpu")):
            for ids, mask in zip(b.ctx_ids, b.ctx_mask):
                dec(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), use_cache=False)
    finally:
        dec.layers = full
    return sync_time() - t0


def plain_lora_fwd_bwd(model, b, autocast):
    """LoRA forward + backward on the same oracle tokens, logits only at labelled positions, no hooks."""
    head = unwrap(model).get_output_embeddings()
    model.train()
    t0 = sync_time()
    with autocast_ctx(autocast, torch.device("cpu")):
        h = backbone_of(model)(input_ids=b.input_ids, attention_mask=b.attention_mask,
                               position_ids=position_ids(b.attention_mask), use_cache=False).last_hidden_state
        tgt = b.labels[:, 1:]
        sel = tgt != IGNORE_INDEX
        logits = head(h[:, :-1][sel])
    loss = F.cross_entropy(logits.float(), tgt[sel])
    loss.backward()
    dt = sync_time() - t0
    model.zero_grad(set_to_none=True)
    return dt


# ----------------------------------------------------------------------------- reference-style loop


def reference_step(model, opt, rows, pad_id, hook_layer=1):
    """Written after the description of the paper's loop: per-layer full re-runs of every context,
    a Python loop over the batch inside the hook, full-vocabulary logits everywhere (model(labels=))."""
    t0 = sync_time()
    base = unwrap(model)
    layers_needed = sorted({int(r["layer"]) for r in rows})
    vectors = [None] * len(rows)
    with _adapters_off(model), torch.no_grad():
        for layer in layers_needed:
            ctxs = [r["context_input_ids"] for r in rows]  # every context, once per layer
            n = max(len(c) for c in ctxs)
            ids = torch.full((len(ctxs), n), pad_id)
            mask = torch.zeros((len(ctxs), n), dtype=torch.long)
            for i, c in enumerate(ctxs):
                ids[i, n - len(c):] = torch.tensor(c)
                mask[i, n - len(c):] = 1
            hs = base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer + 1]
            for i, r in enumerate(rows):
                if int(r["layer"]) == layer:
                    off = n - len(r["context_input_ids"])
                    vectors[i] = hs[i, [p + off for p in r["context_positions"]]]
    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), n), pad_id)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, IGNORE_INDEX)
    positions = []
    for i, r in enumerate(rows):
        off = n - len(r["input_ids"])
        ids[i, off:] = torch.tensor(r["input_ids"])
        mask[i, off:] = 1
        labels[i, off:] = torch.tensor(r["labels"])
        positions.append([p + off for p in r["positions"]])

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        h = h.clone()
        for i in range(h.shape[0]):  # a Python loop over the batch
            pos = positions[i]
            orig = h[i, pos]
            v = vectors[i].to(h.dtype)
            h[i, pos] = orig + orig.norm(dim=-1, keepdim=True) * v / v.norm(dim=-1, keepdim=True)
        return (h, *output[1:]) if isinstance(output, tuple) else h

    model.train()
    handle = decoder_layers(model)[hook_layer].register_forward_hook(hook)
    try:
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss  # full-vocabulary logits
    finally:
        handle.remove()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return sync_time() - t0


# ----------------------------------------------------------------------------- bf16 accuracy check


def bf16_check(model, rows, pad_id, tol):
    model.eval()  # no dropout: the two passes must see the same network
    params = [p for p in model.parameters() if p.requires_grad]
    out = {}
    grads = {}
    for mode in (None, "bf16"):
        obj = OracleObjective(model, autocast=mode)
        b = collate(rows, pad_id, context_pad_tolerance=tol)
        ce, _ = obj(**batch_kwargs(b))
        loss = ce.mean()
        loss.backward()
        grads[mode] = torch.cat([p.grad.flatten() for p in params])
        out[mode] = float(loss.detach())
        model.zero_grad(set_to_none=True)
    g32, g16 = grads[None], grads["bf16"]
    model.train()
    return {
        "loss_fp32": out[None], "loss_bf16": out["bf16"],
        "loss_rel_diff": abs(out["bf16"] - out[None]) / abs(out[None]),
        "grad_cosine": float(F.cosine_similarity(g32.double(), g16.double(), dim=0)),
        "grad_rel_norm_diff": float((g16 - g32).norm() / g32.norm()),
    }


def main():
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    ov = {"output.progress": False}
    if args.batch_size:
        ov["train.batch_size"] = args.batch_size
    if args.data:
        ov["data.path"] = args.data
    else:
        ov["data.builtin_scale"] = 0.05
    cfg = load_config(args.preset, ov)
    autocast = None if args.autocast == "none" else "bf16"
    data_dir = Path(args.data) if args.data else build_builtin_mixture(cfg)
    tdata = open_train_data(cfg, data_dir)
    torch.manual_seed(0)
    model, tok = _build_model(cfg, "cpu")
    pad_id = tok.pad_token_id
    tol = cfg.train.context_pad_tolerance
    objective = OracleObjective(model, hook_layer=cfg.train.hook_layer, autocast=autocast)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(1000, 0.1, "linear"))
    ref_opt = torch.optim.AdamW(params, lr=0.0) if args.reference else None
    stream = BatchStream(tdata.lengths, cfg.train.batch_size, seed=cfg.train.seed)
    batches = [tdata.get(stream.next()) for _ in range(args.steps + args.warmup)]

    res = {"step": [], "opt": [], "ctx": [], "lora": [], "ref": [], "real": [], "pad": [], "total": []}
    for i, rows in enumerate(batches):
        step_s, opt_s, b = our_step(objective, opt, sched, rows, pad_id, tol)
        ctx_s = plain_context_forward(model, b, autocast)
        lora_s = plain_lora_fwd_bwd(model, b, autocast)
        ref_s = reference_step(model, ref_opt, rows, pad_id) if args.reference else None
        if i < args.warmup:
            continue
        res["step"].append(step_s)
        res["opt"].append(opt_s)
        res["ctx"].append(ctx_s)
        res["lora"].append(lora_s)
        res["real"].append(b.real_tokens)
        res["pad"].append(b.pad_tokens)
        res["total"].append(b.total_tokens)
        if ref_s is not None:
            res["ref"].append(ref_s)
        print(f"batch {i}: step {step_s:.3f}s (optimizer {opt_s:.3f}s)  parts {ctx_s + lora_s:.3f}s "
              f"(context {ctx_s:.3f}s + LoRA fwd/bwd {lora_s:.3f}s)"
              + (f"  reference {ref_s:.3f}s" if ref_s is not None else "")
              + f"  tokens {b.real_tokens}", flush=True)
    step_s = sum(res["step"]) / len(res["step"])
    parts_s = (sum(res["ctx"]) + sum(res["lora"])) / len(res["step"])
    out = {
        "step_s": round(step_s, 4),
        "parts_s": round(parts_s, 4),
        "ratio": round(step_s / parts_s, 4),
        "padding_share": round(sum(res["pad"]) / sum(res["total"]), 4),
        "tokens_per_s": round(sum(res["real"]) / sum(res["step"]), 1),
        "real_tokens_per_step": sum(res["real"]) / len(res["real"]),
        "context_s": round(sum(res["ctx"]) / len(res["ctx"]), 4),
        "lora_fwd_bwd_s": round(sum(res["lora"]) / len(res["lora"]), 4),
        "optimizer_s": round(sum(res["opt"]) / len(res["opt"]), 4),
        "step_median_s": round(statistics.median(res["step"]), 4),
        "autocast": args.autocast, "threads": torch.get_num_threads(), "batch_size": cfg.train.batch_size,
        "lora_r": cfg.lora.r, "steps": len(res["step"]),
    }
    if res["ref"]:
        ref_s = sum(res["ref"]) / len(res["ref"])
        out.update(reference_step_s=round(ref_s, 4), speedup_vs_reference=round(ref_s / step_s, 2),
                   reference_tokens_per_s=round(sum(res["real"]) / sum(res["ref"]), 1))
    if args.check_bf16:
        out["bf16_check"] = bf16_check(model, batches[0], pad_id, tol)
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
