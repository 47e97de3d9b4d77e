"""Benchmark one oracle training step against the sum of its parts and a reference-style loop.

    .venv/bin/python benchmarks/train_step.py [--steps 4] [--autocast bf16] [--reference] [--check-bf16]
    .venv/bin/python benchmarks/train_step.py --smoke     # tiny model, one step of each (the test suite's)

On the same batches and settings (cpu-smollm2 unless --preset: SmolLM2-135M, its LoRA rank, batch size,
dtype and autocast, built-in mixture):

* step   - the trainer's own step (`train.step.train_step`): collate, context forward (adapter off, stopped
           at the deepest layer, each distinct context once, length-grouped), injected LoRA forward, CE at
           labelled positions, backward, clip at 1.0, AdamW, scheduler.
* parts  - the same work through plain transformers/peft calls: the base model truncated to the deepest
           needed block over the same context tokens (no hooks), plus the LoRA forward and backward on the
           same oracle tokens with logits only at labelled positions (no injection).
* reference (--reference) - `reference_loop.reference_step`: the paper's reference loop as its code does it
           (every context padded into one forward, a Python loop over the batch in the hook,
           full-vocabulary logits at every position).

The last line printed is one JSON object: step_s, parts_s, ratio (= step_s / parts_s), padding_share,
tokens_per_s (non-pad oracle tokens per second; `context_tokens_per_s` adds the distinct contexts), and
with --reference the reference's step time and our speedup over it.
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

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]

from reference_loop import reference_step  # noqa: E402

from activation_oracles.hooks import _adapters_off, position_ids_from_mask  # noqa: E402
from activation_oracles.models import decoder_layers, unwrap  # noqa: E402
from activation_oracles.precision import autocast_ctx  # noqa: E402
from activation_oracles.prompt import IGNORE_INDEX  # noqa: E402
from activation_oracles.train.batching import BatchStream, collate  # noqa: E402
from activation_oracles.train.config import load_config  # noqa: E402
from activation_oracles.train.dataset import build_configured_mixture, open_train_data  # noqa: E402
from activation_oracles.train.loop import _build_model  # noqa: E402
from activation_oracles.train.objective import OracleObjective, backbone_of, batch_kwargs  # noqa: E402
from activation_oracles.train.step import (  # noqa: E402
    collate_for, make_objective, make_optimizer, make_schedule, train_step,
)


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="cpu-smollm2")
    ap.add_argument("--data", default=None, help="mixture dir (default: built-in mixture, scale 0.05)")
    ap.add_argument("--steps", type=int, default=4, help="measured steps")
    ap.add_argument("--warmup", type=int, default=2,
                    help="unmeasured warm-up steps (the first steps of a fresh process are slow: allocator)")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--autocast", choices=["preset", "none", "bf16"], default="preset",
                    help="the preset's train.autocast (default), or force it off / bf16")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reference", action="store_true", help="also time the reference-style loop")
    ap.add_argument("--check-bf16", action="store_true", help="compare loss and gradients under bf16 autocast")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny random model and mixture, one warm-up and one measured step, --reference on")
    return ap.parse_args()


def sync_time():
    return time.perf_counter()


# ----------------------------------------------------------------------------- our step


def our_step(acc, objective, opt, sched, rows, pad_id, cfg):
    """The trainer's step on one global batch (one micro-batch); returns (seconds, its collated batch)."""
    t0 = sync_time()
    b = collate_for(cfg, rows, pad_id)
    train_step(acc, objective, opt, sched, [rows], pad_id, cfg, denom=float(max(1, b.label_tokens)))
    return sync_time() - t0, b


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
                dec(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False)
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
                               position_ids=position_ids_from_mask(b.attention_mask), use_cache=False).last_hidden_state
        tgt = b.labels[:, 1:]
        sel = tgt != IGNORE_INDEX
        logits = head(h[:, :-1][sel])
    loss = F.cross_entropy(logits.float(), tgt[sel])
    loss.backward()
    dt = sync_time() - t0
    model.zero_grad(set_to_none=True)
    return dt


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


def tiny_setup(tmp: Path) -> dict:
    """--smoke: a 4-block random Llama with SmolLM2's tokenizer and a tiny built-in mixture for it."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from activation_oracles.models import embedded_model_dir

    tok = AutoTokenizer.from_pretrained(embedded_model_dir())
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(tmp / "tiny")
    tok.save_pretrained(tmp / "tiny")
    return {"model.spec": str(tmp / "tiny"), "data.builtin_scale": 0.01, "train.batch_size": 4,
            "data.curriculum": "[]", "data.task_weights": "{}"}


def main():
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    ov = {"output.progress": False}
    if args.smoke:
        import tempfile

        ov.update(tiny_setup(Path(tempfile.mkdtemp(prefix="ao-bench-"))))
        args.steps, args.warmup, args.reference = 1, 1, True
    if args.batch_size:
        ov["train.batch_size"] = args.batch_size
    if args.data:
        ov["data.path"] = args.data
    elif not args.smoke:
        ov["data.builtin_scale"] = 0.05
    if args.autocast != "preset":
        ov["train.autocast"] = None if args.autocast == "none" else "bf16"
    cfg = load_config(args.preset, ov)
    autocast = cfg.train.autocast
    data_dir = Path(args.data) if args.data else build_configured_mixture(cfg)
    tdata = open_train_data(cfg, data_dir)
    torch.manual_seed(0)
    model, tok = _build_model(cfg, "cpu")
    pad_id = tok.pad_token_id
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    objective = make_objective(model, cfg)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, "cpu")
    sched = make_schedule(opt, 1000, 0.1)
    ref_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                weight_decay=cfg.optim.weight_decay) if args.reference else None
    stream = BatchStream(tdata.lengths, cfg.train.batch_size, seed=cfg.train.seed)
    batches = [tdata.get(stream.next()) for _ in range(args.steps + args.warmup)]

    res = {"step": [], "ctx": [], "lora": [], "ref": [], "real": [], "context": [], "pad": [], "total": []}
    for i, rows in enumerate(batches):
        step_s, b = our_step(acc, objective, opt, sched, rows, pad_id, cfg)
        ctx_s = plain_context_forward(model, b, autocast)
        lora_s = plain_lora_fwd_bwd(model, b, autocast)
        ref_s = None
        if args.reference:
            t = sync_time()
            reference_step(model, ref_opt, rows, pad_id, hook_layer=cfg.train.hook_layer,
                           autocast_dtype=torch.bfloat16 if autocast == "bf16" else None)
            ref_s = sync_time() - t
        if i < args.warmup:
            continue
        res["step"].append(step_s)
        res["ctx"].append(ctx_s)
        res["lora"].append(lora_s)
        res["real"].append(b.real_tokens)
        res["context"].append(b.context_tokens)
        res["pad"].append(b.pad_tokens)
        res["total"].append(b.total_tokens)
        if ref_s is not None:
            res["ref"].append(ref_s)
        print(f"batch {i}: step {step_s:.3f}s  parts {ctx_s + lora_s:.3f}s "
              f"(context {ctx_s:.3f}s + LoRA fwd/bwd {lora_s:.3f}s)"
              + (f"  reference {ref_s:.3f}s" if ref_s is not None else "")
              + f"  tokens {b.real_tokens} (+{b.context_tokens} context)", flush=True)
    step_s = sum(res["step"]) / len(res["step"])
    parts_s = (sum(res["ctx"]) + sum(res["lora"])) / len(res["step"])
    out = {
        "step_s": round(step_s, 4),
        "parts_s": round(parts_s, 4),
        "ratio": round(step_s / parts_s, 4),
        "padding_share": round(sum(res["pad"]) / sum(res["total"]), 4),
        "tokens_per_s": round(sum(res["real"]) / sum(res["step"]), 1),
        "context_tokens_per_s": round((sum(res["real"]) + sum(res["context"])) / sum(res["step"]), 1),
        "real_tokens_per_step": sum(res["real"]) / len(res["real"]),
        "context_s": round(sum(res["ctx"]) / len(res["ctx"]), 4),
        "lora_fwd_bwd_s": round(sum(res["lora"]) / len(res["lora"]), 4),
        "step_median_s": round(statistics.median(res["step"]), 4),
        "autocast": autocast, "threads": torch.get_num_threads(), "batch_size": cfg.train.batch_size,
        "lora_r": cfg.lora.r, "steps": len(res["step"]), "preset": args.preset, "smoke": args.smoke,
    }
    if res["ref"]:
        ref_s = sum(res["ref"]) / len(res["ref"])
        out.update(reference_step_s=round(ref_s, 4), speedup_vs_reference=round(ref_s / step_s, 2),
                   reference_tokens_per_s=round(sum(res["real"]) / sum(res["ref"]), 1))
    if args.check_bf16:
        out["bf16_check"] = bf16_check(model, batches[0], pad_id, cfg.train.context_pad_tolerance)
    print(json.dumps(out))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
