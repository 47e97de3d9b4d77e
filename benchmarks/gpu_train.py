"""Training throughput on a GPU: our step (eager and captured as CUDA graphs) against a reference-style loop.

    python benchmarks/gpu_train.py                                     # paper-qwen3-8b, the default grid
    python benchmarks/gpu_train.py --model HuggingFaceTB/SmolLM2-135M-Instruct \
        --grid "packing=1,buckets=8,graphs=1,tokens=16384;packing=1,buckets=8,graphs=1,tokens=65536"
    python benchmarks/gpu_train.py --smoke                             # CPU, tiny Qwen3, seconds (test suite)
    python benchmarks/gpu_train.py --write-lengths src/activation_oracles/builtin/paper_lengths.json  # CPU

The model is built from a real configuration shipped in the package (default: the preset's, Qwen3-8B) with
random weights, directly on the GPU in bf16: speed does not depend on the weights, and no weights have to
travel. It is wrapped like the preset (paper-qwen3-8b: LoRA r 64 / alpha 128 / dropout 0.05 on all linear
layers, AdamW lr 1e-5, batch 16). Batches are synthetic rows of the data schema whose lengths (oracle
prompt, context, placeholders, labelled targets, source layer) are drawn from `builtin/paper_lengths.json`,
a sample of the paper mixture, in the trainer's group-by-length order (by example count, or by tokens for
a `tokens=` run). Needs only torch, transformers, peft, accelerate, numpy and this repository's src.

Every run goes twice over the same --steps batches: a warm-up pass (allocator, cuBLAS, compiled kernels,
every shape's CUDA graph captured) and the timed pass, with one device synchronisation at each end, so the
host may queue work ahead as the trainer does. The reference-style loop (`reference_loop.py`, warmed and
timed the same way on the same batches) follows. Printed per run (one JSON line each, then a summary line):
- examples/s, oracle tokens/s (non-pad oracle prompt tokens; what the trainer logs as tokens_per_s),
  all tokens/s (adds the distinct contexts), hours (minutes) per 1M examples;
- step_s (timed pass / steps), peak memory, MFU = model FLOPs / step time / the card's dense bf16 peak
  (FLOPs on non-pad tokens: 2 x matmul parameters of the blocks run per token, causal attention, the oracle
  forward and backward (input gradients; the base is frozen), the context forward up to the deepest source
  layer, the LM head at labelled positions);
- recompiles: graphs dynamo compiled during the timed pass (should be 0), and for graphs=1 the shapes
  captured; with --profile N, GPU busy share over N more steps (kernel time / wall time) and host time per
  phase of the step.
--compare N (default 20; 0 to skip) then runs the first N batches eagerly and as CUDA graphs from the same
weights, optimizer state and random state, and prints the largest loss difference.

Grid settings (comma-separated key=value, runs separated by ';'; unset ones keep the preset's):
attn (sdpa | eager | flash_attention_2), packing (0|1: train.packing), buckets (train.shape_buckets),
graphs (0|1: train.cuda_graphs), tokens (train.batch_tokens), compile (0|1: train.compile), autocast
(none | bf16), pack (0|1: train.context_packing, the padded path's), overhead (train.context_group_overhead),
tol (train.context_pad_tolerance).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]

from reference_loop import reference_step  # noqa: E402

from activation_oracles.prompt import IGNORE_INDEX  # noqa: E402
from activation_oracles.train.batching import epoch_batches, length_filter  # noqa: E402
from activation_oracles.train.config import load_config, parse_set  # noqa: E402
from activation_oracles.train.step import (  # noqa: E402
    apply_lora, check_context_packing, compile_blocks, make_objective, make_optimizer, train_step, uncompile_blocks,
)
from activation_oracles.train.synthetic import PAPER_LENGTHS, load_lengths, synthetic_row  # noqa: E402

PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989.4e12, "H200": 989.4e12, "GH200": 989.4e12, "A100": 312e12}
TINY_QWEN3 = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=2048)
DEFAULT_GRID = ("attn=sdpa,packing=0;packing=1,buckets=8;packing=1,buckets=8,graphs=1;"
                "packing=1,buckets=8,graphs=1,autocast=bf16")
GRID_KEYS = {"attn": None, "packing": "train.packing", "buckets": "train.shape_buckets", "graphs": "train.cuda_graphs",
             "tokens": "train.batch_tokens", "compile": "train.compile", "autocast": "train.autocast",
             "pack": "train.context_packing", "overhead": "train.context_group_overhead",
             "tol": "train.context_pad_tolerance"}


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper-qwen3-8b", help="training preset whose model and recipe to use")
    ap.add_argument("--model", default=None, help="hub id of a shipped model config (default: the preset's)")
    ap.add_argument("--steps", type=int, default=12, help="batches per pass (a warm-up pass, then the timed one)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's (16)")
    ap.add_argument("--grid", default=DEFAULT_GRID, help="runs separated by ';' (see the module docstring)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    ap.add_argument("--compare", type=int, default=20, metavar="N",
                    help="eager against CUDA graphs over the first N batches (0: skip; needs a GPU)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after each ours-run, N more steps under torch.profiler: GPU busy share and top kernels")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip the remaining runs once this many seconds have passed (a device lease is short)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference-style loop")
    ap.add_argument("--plan-check", action="store_true",
                    help="first, `ao plan`'s peak against a real step on its worst-case batch (99.9th-pct lengths)")
    ap.add_argument("--lengths", default=str(PAPER_LENGTHS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny Qwen3 on the CPU, 2 batches per pass")
    ap.add_argument("--write-lengths", metavar="OUT", help="build a paper-mixture sample and write its lengths")
    ap.add_argument("--data-root", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--scale", type=float, default=0.01, help="--write-lengths: share of the 1M-example mixture")
    return ap.parse_args()


# ----------------------------------------------------------------------------- batches


def row_pool(lengths, vocab: int, layers: list[int], seed: int, n: int, percentile: float = 99.9) -> list[dict]:
    """`n` synthetic rows with the sampled lengths (the length filter applied, the sample recycled)."""
    rng = np.random.default_rng(seed)
    keep = length_filter(lengths["oracle"], percentile)
    idx = keep[rng.integers(0, len(keep), size=n)]
    return [synthetic_row(rng, oracle=int(lengths["oracle"][i]), context=int(lengths["context"][i]),
                          k=int(lengths["k"][i]), labels=int(lengths["labels"][i]), layer=layers[int(lengths["layer"][i])],
                          vocab=vocab, task=str(lengths["task"][i])) for i in idx]


def make_batches(pool: list[dict], cfg, n_batches: int, seed: int) -> list[list[dict]]:
    """The trainer's batches over the pool: group-by-length, by example count or by tokens (batch_tokens)."""
    oracle = np.array([len(r["input_ids"]) for r in pool])
    costs = oracle + np.array([len(r["context_input_ids"]) for r in pool])
    t = cfg.train
    order = epoch_batches(oracle, t.batch_size, seed=seed, epoch=0, window=t.length_window,
                          costs=costs if t.batch_tokens else None, budget=t.batch_tokens)
    if len(order) < n_batches:
        raise SystemExit(f"{len(pool)} rows make {len(order)} batches, fewer than {n_batches}")
    return [[pool[i] for i in b] for b in order[:n_batches]]


def shapes_of(cfg, batches, layers):
    """The run's shape buckets from its own batches (as the trainer makes them from its data), or None."""
    from activation_oracles.train.shapes import ShapeBuckets, micro_batch_sizes

    if not (cfg.train.packing and cfg.train.shape_buckets):
        return None
    rows = [r for b in batches for r in b]
    per_row = {"oracle": np.array([len(r["input_ids"]) for r in rows]),
               "context": np.array([len(r["context_input_ids"]) for r in rows]),
               "placeholders": np.array([len(r["positions"]) for r in rows]),
               "labels": np.array([labelled(r) for r in rows])}
    bounds = np.cumsum([0] + [len(b) for b in batches])
    sizes = micro_batch_sizes(per_row, [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])],
                              cfg.train.grad_accum)
    return ShapeBuckets.from_sizes(sizes, cfg.train.shape_buckets, layers)


def labelled(row) -> int:
    return sum(1 for x in row["labels"][1:] if x != IGNORE_INDEX)


# ----------------------------------------------------------------------------- model


def build_model(cfg, config, device, attn: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
    return apply_lora(model, cfg)


def set_attention(model, attn: str) -> None:
    from activation_oracles.models import unwrap

    unwrap(model).set_attn_implementation(attn)


def flops_per_step(config, batch_rows: list[dict], layers_run: int) -> float:
    """Model FLOPs of one step on non-pad tokens (see the module docstring)."""
    c = config
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    per_block = c.hidden_size * (2 * q + 2 * kv) + 3 * c.hidden_size * c.intermediate_size
    attn = lambda s: 2 * s * s * q  # noqa: E731  (per sequence and block, forward)
    contexts = {tuple(r["context_input_ids"]) for r in batch_rows}
    ctx = sum(2 * per_block * len(x) + attn(len(x)) for x in contexts) * layers_run
    oracle_tokens = sum(len(r["input_ids"]) for r in batch_rows)
    fwd = (2 * per_block * oracle_tokens + sum(attn(len(r["input_ids"])) for r in batch_rows)) * c.num_hidden_layers
    bwd = (2 * per_block * oracle_tokens + 2 * sum(attn(len(r["input_ids"])) for r in batch_rows)) * c.num_hidden_layers
    head = 2 * c.hidden_size * c.vocab_size * sum(labelled(r) for r in batch_rows) * 2
    return ctx + fwd + bwd + head


def peak_flops(device) -> tuple[float | None, str]:
    if device.type != "cuda":
        return None, "cpu"
    name = torch.cuda.get_device_name(device)
    for key, peak in PEAK_BF16.items():  # "H100 PCIe" before "H100"
        if key in name:
            return peak, name
    return None, name


# ----------------------------------------------------------------------------- runs


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def parse_grid(text: str) -> list[dict]:
    runs = []
    for part in [p for p in text.split(";") if p.strip()]:
        run = {"attn": "sdpa"}
        for kv in part.split(","):
            k, _, v = kv.strip().partition("=")
            if k not in GRID_KEYS:
                raise SystemExit(f"--grid: unknown setting {k!r} in {part!r}; use {sorted(GRID_KEYS)}")
            run[k] = v
        runs.append(run)
    return runs


def run_overrides(run: dict) -> dict:
    out = {}
    for k, v in run.items():
        if GRID_KEYS[k] is None:
            continue
        if k in ("packing", "graphs", "compile", "pack"):
            v = bool(int(v))
        elif k in ("buckets", "tokens", "overhead"):
            v = int(v)
        elif k == "tol":
            v = float(v)
        elif k == "autocast":
            v = None if v == "none" else v
        out[GRID_KEYS[k]] = v
    return out


def dynamo_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


class Ours:
    """Our trainer's step as the loop runs it: train_step, or GraphedStep with train.cuda_graphs on a GPU."""

    def __init__(self, model, cfg, acc, shapes):
        from activation_oracles.train.graphs import make_stepper

        self.acc, self.cfg, self.shapes = acc, cfg, shapes
        self.objective = make_objective(model, cfg)
        self.opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, acc.device)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0)
        self.stepper = make_stepper(cfg, acc, self.objective, self.opt, self.sched, shapes)

    def __call__(self, rows):
        denom = float(sum(labelled(r) for r in rows))
        per = np.array_split(np.arange(len(rows)), self.cfg.train.grad_accum)
        micro = [rows[a[0] : a[-1] + 1] for a in per if len(a)]
        if self.stepper is not None:
            return self.stepper(micro, 0, denom)
        return train_step(self.acc, self.objective, self.opt, self.sched, micro, 0, self.cfg, denom, shapes=self.shapes)

    def close(self):
        if hasattr(self.objective, "close"):
            self.objective.close()


def timed_pass(step, batches, device) -> tuple[float, list]:
    """One pass over the batches, timed between two synchronisations (the host queues ahead in between)."""
    sync(device)
    t0 = time.perf_counter()
    out = [step(rows) for rows in batches]
    sync(device)
    return time.perf_counter() - t0, out


def run_ours(model, cfg, batches, device, acc, shapes) -> dict:
    ours = Ours(model, cfg, acc, shapes)
    try:
        timed_pass(ours, batches, device)  # warm-up: allocator, kernels, compiles, every shape captured
        before = dynamo_graphs()
        wall, stats = timed_pass(ours, batches, device)
        res = {"wall": wall, "steps": len(batches), "examples": sum(len(b) for b in batches),
               "oracle": sum(s.tokens[0] for s in stats), "context": sum(s.tokens[1] for s in stats),
               "pad": sum(s.tokens[2] for s in stats), "total": sum(s.tokens[3] for s in stats),
               "loss": stats[-1].read()["loss"], "recompiles": dynamo_graphs() - before}
        if ours.stepper is not None:
            res["graphs_captured"] = ours.stepper.captures
        return res, ours
    except BaseException:
        ours.close()
        raise


def run_reference(model, cfg, batches, device) -> dict:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay)
    autocast = torch.bfloat16 if cfg.train.autocast == "bf16" else None

    def step(rows):
        return reference_step(model, opt, rows, 0, hook_layer=cfg.train.hook_layer, device=device,
                              autocast_dtype=autocast)

    timed_pass(step, batches, device)
    wall, losses = timed_pass(step, batches, device)
    return {"wall": wall, "steps": len(batches), "examples": sum(len(b) for b in batches),
            "oracle": sum(len(r["input_ids"]) for b in batches for r in b),
            "context": sum(len(r["context_input_ids"]) for b in batches for r in b), "loss": losses[-1]}


def profile_steps(ours, batches, device, name) -> None:
    """Steps under torch.profiler: how much of the wall time the GPU is busy, the kernels that fill it, and
    the host time of each `ao.*` phase (printed as one JSON line)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for rows in batches:
            ours(rows)
        sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    busy = sum(getattr(e, attr, 0) for e in events if device.type != "cuda" or e.device_type.name == "CUDA") / 1e6
    top = sorted(events, key=lambda e: -getattr(e, attr, 0))[:12]
    phases = {e.key: round(e.cpu_time_total / 1e3, 1) for e in events if e.key.startswith("ao.")}
    host = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    print(json.dumps({"profile": name, "steps": len(batches), "wall_s": round(wall, 3),
                      "device_busy_s": round(busy, 3), "busy_share": round(busy / wall, 3),
                      "top": [[e.key[:60], round(getattr(e, attr, 0) / 1e3, 1), e.count] for e in top],
                      "host_phases_ms": phases,
                      "host_top_ms": [[e.key[:60], round(e.self_cpu_time_total / 1e3, 1), e.count] for e in host]}),
          flush=True)


def summarise(name, res, flops, peak, device) -> dict:
    t, n = res["wall"], res["steps"]
    out = {"run": name, "step_s": round(t / n, 4), "examples_per_s": round(res["examples"] / t, 2),
           "oracle_tokens_per_s": round(res["oracle"] / t, 1),
           "all_tokens_per_s": round((res["oracle"] + res["context"]) / t, 1),
           "oracle_tokens_per_step": res["oracle"] / n, "context_tokens_per_step": res["context"] / n,
           "examples_per_step": res["examples"] / n,
           "hours_per_1M_examples": round(1e6 / (res["examples"] / t) / 3600, 3),
           "minutes_per_1M_examples": round(1e6 / (res["examples"] / t) / 60, 1), "last_loss": res["loss"]}
    for k in ("recompiles", "graphs_captured"):
        if k in res:
            out[k] = res[k]
    if res.get("total"):
        out["padding_share"] = round(res["pad"] / res["total"], 4)
    if device.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    if peak:
        out["mfu"] = round(flops / (t / n) / peak, 4)
    out["tflops_per_s"] = round(flops / (t / n) / 1e12, 2)
    print(json.dumps(out), flush=True)
    return out


def compare_graphed(model, cfg, batches, acc, shapes) -> dict:
    """The same batches from the same weights, optimizer state and random state: eager, then captured."""
    from activation_oracles.train.checkpoint import rng_state, set_rng_state

    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    rng = rng_state()
    losses = {}
    for graphs in (False, True):
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in lora:
                    p.copy_(lora[n])
        set_rng_state(rng)
        cfg.train.cuda_graphs = graphs
        ours = Ours(model, cfg, acc, shapes)
        try:
            losses[graphs] = [ours(rows).read()["loss"] for rows in batches]
        finally:
            ours.close()
    diff = [abs(a - b) for a, b in zip(losses[False], losses[True])]
    rel = [d / max(abs(a), 1e-9) for d, a in zip(diff, losses[False])]
    out = {"compare": len(batches), "max_abs_loss_diff": max(diff), "max_rel_loss_diff": max(rel),
           "eager_losses": [round(x, 5) for x in losses[False]], "graphed_losses": [round(x, 5) for x in losses[True]]}
    print(json.dumps(out), flush=True)
    return out


def main():
    args = parse()
    if args.write_lengths:
        return write_lengths(args)
    from accelerate import Accelerator
    from transformers import AutoConfig

    from activation_oracles.models import layer_from_percent, model_config

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ov = {"output.progress": False, **parse_set(args.set)}
    if args.batch_size:
        ov["train.batch_size"] = args.batch_size
    if args.smoke:
        args.steps, args.compare = 2, 0
        ov["train.batch_size"] = args.batch_size or 4
    cfg0 = load_config(args.preset, ov)
    spec = args.model or cfg0.model.spec
    config = AutoConfig.for_model("qwen3", **TINY_QWEN3) if args.smoke else model_config(spec)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    device = acc.device
    layers = [layer_from_percent(config.num_hidden_layers, p) for p in cfg0.data.layer_percents]
    pool = row_pool(load_lengths(args.lengths), config.vocab_size, layers, args.seed, n=20000 if not args.smoke else 400)
    peak, gpu = peak_flops(device)
    runs = parse_grid(args.grid)
    print(json.dumps({"device": gpu, "torch": torch.__version__, "model": "tiny qwen3" if args.smoke else spec,
                      "batch_size": cfg0.train.batch_size, "lora_r": cfg0.lora.r, "steps": args.steps,
                      "flash_attn_installed": importlib.util.find_spec("flash_attn") is not None}), flush=True)
    t_start = time.perf_counter()
    model = build_model(cfg0, config, device, runs[0]["attn"])
    print(f"model built in {time.perf_counter() - t_start:.1f}s", flush=True)
    if args.plan_check:
        plan_check(model, cfg0, config, layers, device, acc, args)
    results, ref_done, graphed_cfg = [], set(), None
    for run in runs:
        name = ",".join(f"{k}={v}" for k, v in run.items())
        if run["attn"] == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
            print(json.dumps({"run": name, "skipped": "flash-attn is not installed"}), flush=True)
            continue
        if args.budget_s is not None and time.perf_counter() - t_start > args.budget_s:
            print(json.dumps({"run": name, "skipped": f"over --budget-s {args.budget_s}"}), flush=True)
            continue
        cfg = load_config(args.preset, {**ov, **run_overrides(run)})
        if cfg.train.context_packing:
            print(json.dumps({"context_packing_error": check_context_packing(model, cfg)}), flush=True)
        batches = make_batches(pool, cfg, args.steps, args.seed)
        shapes = shapes_of(cfg, batches, layers)
        flops = statistics.mean(flops_per_step(config, rows, max(layers) + 1) for rows in batches)
        set_attention(model, run["attn"])
        if cfg.train.compile:
            torch._dynamo.reset()  # each compiled run starts from no graphs (no cache carried from the last)
            compile_blocks(model)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        ours = None
        try:
            res, ours = run_ours(model, cfg, batches, device, acc, shapes)
            results.append({**summarise(f"ours[{name}]", res, flops, peak, device), "settings": run})
            if args.profile:
                profile_steps(ours, batches[: args.profile], device, name)
            if cfg.train.cuda_graphs and device.type == "cuda":
                graphed_cfg = (cfg, batches, shapes)
        except torch.cuda.OutOfMemoryError as e:  # (report and go on with the next variant)
            print(json.dumps({"run": f"ours[{name}]", "error": f"out of memory: {e}"[:300]}), flush=True)
        finally:
            if ours is not None:
                ours.close()
            uncompile_blocks(model)
        key = (run["attn"], cfg.train.autocast, cfg.train.batch_tokens)
        if not args.no_reference and key not in ref_done:
            ref_done.add(key)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                res = run_reference(model, cfg, batches, device)
                results.append({**summarise(f"reference[attn={run['attn']},autocast={cfg.train.autocast},"
                                            f"tokens={cfg.train.batch_tokens}]", res, flops, peak, device),
                                "settings": {"attn": run["attn"]}})
            except torch.cuda.OutOfMemoryError as e:
                print(json.dumps({"run": "reference", "error": f"out of memory: {e}"[:300]}), flush=True)
    summary = {"device": gpu, "runs": results}
    if args.compare and graphed_cfg is not None:
        cfg, batches, shapes = graphed_cfg
        summary["compare"] = compare_graphed(model, cfg, (batches * (1 + args.compare // len(batches)))[: args.compare],
                                             acc, shapes)
    best = max((r for r in results if r["run"].startswith("ours")), key=lambda r: r["oracle_tokens_per_s"], default=None)
    ref = [r for r in results if r["run"].startswith("reference")]
    if best and ref:
        same = [r for r in ref if r["oracle_tokens_per_step"] == best["oracle_tokens_per_step"]] or ref
        summary["best_ours"] = best["run"]
        summary["speedup_vs_reference"] = round(best["oracle_tokens_per_s"] / same[0]["oracle_tokens_per_s"], 2)
    print(json.dumps(summary))


def plan_check(model, cfg, config, layers, device, acc, args) -> dict:
    """`ao plan`'s numbers for this model and recipe next to what a step on the same worst-case batch
    really allocates (torch.cuda.max_memory_allocated: tensors only, so the plan's CUDA-context line is
    left out of the comparison)."""
    from activation_oracles.train.plan import CUDA_CONTEXT, plan_memory

    t0 = time.perf_counter()
    plan = plan_memory(cfg, gpus=1, gpu_memory_gb=None, cuda=device.type == "cuda")
    plan_s = time.perf_counter() - t0
    print(plan.report(), flush=True)
    L = plan.lengths
    rng = np.random.default_rng(1)
    rows = [synthetic_row(rng, oracle=L["oracle"], context=L["context"], k=L["k"], labels=L["labels"],
                          layer=layers[i % len(layers)], vocab=config.vocab_size) for i in range(plan.micro_batch)]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    out = {"run": "plan_check", "plan_seconds": round(plan_s, 1), "plan_gb": round(plan.total / 1e9, 2)}
    try:
        _, ours = run_ours(model, cfg, [rows], device, acc, None)
        ours.close()
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device)
            out.update(measured_peak_allocated_gb=round(peak / 1e9, 2),
                       measured_peak_reserved_gb=round(torch.cuda.max_memory_reserved(device) / 1e9, 2),
                       plan_without_cuda_context_gb=round((plan.total - CUDA_CONTEXT) / 1e9, 2),
                       plan_over_measured=round((plan.total - CUDA_CONTEXT) / peak, 3))
    except torch.cuda.OutOfMemoryError as e:
        out["error"] = f"out of memory: {e}"[:300]
    print(json.dumps(out), flush=True)
    return out


# ----------------------------------------------------------------------------- the length sample


def write_lengths(args) -> None:
    """Build a sample of the paper mixture (its counts x --scale, same task shares) for a Qwen3-8B-shaped
    model and write per-example lengths. The tokenizer is SmolLM2's byte-level BPE with the Qwen3 chat
    format (tests/chat_templates.py: the template, ChatML specials and the Qwen2/3 pre-tokenizer split),
    since Qwen3's own tokenizer cannot be downloaded here; its 49k vocabulary splits English text into
    somewhat more pieces than Qwen3's 152k one, so these lengths err on the long side."""
    import tempfile

    sys.path.insert(0, str(HERE.parent / "tests"))
    from chat_templates import family_tokenizer
    from transformers import AutoTokenizer

    from activation_oracles.data import MixtureConfig, build_mixture
    from activation_oracles.train.dataset import _list_lengths
    from activation_oracles.models import embedded_model_dir, model_config

    tmp = Path(tempfile.mkdtemp(prefix="ao-lengths-"))
    model_dir = tmp / "qwen3-8b-format"
    model_config("Qwen/Qwen3-8B").save_pretrained(model_dir)  # (its depth sets the source layers)
    family_tokenizer(AutoTokenizer.from_pretrained(embedded_model_dir()), "qwen3").save_pretrained(model_dir)
    cfg = MixtureConfig.standins(args.data_root, model=str(model_dir))
    cfg.allow_recycle = True
    for part in (cfg.spqa, cfg.classification, cfg.context_prediction):
        part.count = max(1, int(round(part.count * args.scale)))
    dd = build_mixture(cfg, out_dir=tmp / "mix", log=lambda m: print(m, file=sys.stderr))
    train = dd["train"]
    col = lambda name: train.data.column(name).to_pylist()  # noqa: E731
    layers = sorted(set(col("layer")))
    cols = {
        "oracle": _list_lengths(train, "input_ids").tolist(),
        "context": _list_lengths(train, "context_input_ids").tolist(),
        "k": _list_lengths(train, "positions").tolist(),
        "labels": [sum(1 for x in lab[1:] if x != IGNORE_INDEX) for lab in col("labels")],
        "layer": [layers.index(x) for x in col("layer")],
    }
    tasks = sorted(set(col("task")))
    cols["task"] = [tasks.index(t) for t in col("task")]
    meta = {"what": "per-example lengths of a paper-mixture sample (train split)", "examples": len(train),
            "scale": args.scale, "tokenizer": "SmolLM2 BPE + Qwen3 chat format (see gpu_train.write_lengths)",
            "layers": "index into the source layers (25/50/75 % depth)",
            "data_root": os.path.relpath(args.data_root, HERE.parent),
            "tasks": tasks}
    Path(args.write_lengths).write_text(json.dumps({"meta": meta, "columns": cols}, separators=(",", ":")))
    print(json.dumps({k: (float(np.mean(v)) if k != "task" else len(v)) for k, v in cols.items()}))


if __name__ == "__main__":
    main()
