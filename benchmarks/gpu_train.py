"""Training throughput on a GPU: our step against a reference-style loop on a Qwen3-8B-shaped model.

    python benchmarks/gpu_train.py                                  # defaults below, one H100
    python benchmarks/gpu_train.py --grid "attn=sdpa,overhead=0;attn=sdpa;attn=sdpa,compile=1"  # see README.md
    python benchmarks/gpu_train.py --smoke                          # CPU, tiny Qwen3, seconds (test suite)
    python benchmarks/gpu_train.py --write-lengths src/activation_oracles/builtin/paper_lengths.json  # CPU

The model is built from Qwen3-8B's real configuration (shipped in the package) with random weights,
directly on the GPU in bf16: speed does not depend on the weights, and no weights have to travel.
It is wrapped like the `paper-qwen3-8b` preset (LoRA r 64 / alpha 128 / dropout 0.05 on all linear
layers, AdamW lr 1e-5, batch 16). Batches are synthetic rows of the data schema: random token ids whose
lengths (oracle prompt, context, placeholders, labelled targets, source layer) are drawn from
`builtin/paper_lengths.json`, a sample of the paper mixture (see `--write-lengths`), batched by the trainer's own
group-by-length order. Needs only torch, transformers, peft, accelerate, numpy and this repository's src.

For every variant of --grid, the trainer's own step (`train.step.train_step`) runs --warmup + --steps
batches; the reference-style loop (`reference_loop.py`) then runs the same batches. Printed per run:
- examples/s, and oracle tokens/s = non-pad tokens of the oracle prompts per second (what the trainer logs
  as tokens_per_s); all tokens/s adds the non-pad tokens of the distinct contexts;
- step time (mean over the measured steps, each timed between CUDA synchronisations), peak GPU memory;
- MFU = model FLOPs / step time / the GPU's dense bf16 peak, with model FLOPs counted on non-pad tokens:
  2 x (non-embedding matmul params of the blocks run) per token and 2 x s^2 x heads x head_dim per
  sequence and block for attention (causal half of 4 s^2 hd H), forward; the context forward runs the
  blocks up to the deepest source layer; the oracle runs all blocks forward and again as much backward
  (input gradients only: the base is frozen; the LoRA terms are negligible and left out), attention
  backward twice its forward, plus the LM head (2 x d x vocab) at labelled positions forward and backward.
The last line is one JSON object with every run.
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
from activation_oracles.train.config import load_config  # noqa: E402
from activation_oracles.train.synthetic import PAPER_LENGTHS, load_lengths, synthetic_row  # noqa: E402
from activation_oracles.train.step import (  # noqa: E402
    apply_lora, check_context_packing, collate_for, compile_blocks, make_objective, make_optimizer, train_step,
    uncompile_blocks,
)

PEAK_BF16 = {"H100 PCIe": 756e12, "H100": 989.4e12, "H200": 989.4e12, "GH200": 989.4e12, "A100": 312e12}
TINY_QWEN3 = dict(vocab_size=4096, hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=2048)


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper-qwen3-8b", help="training preset whose model and recipe to use")
    ap.add_argument("--steps", type=int, default=10, help="measured steps per run")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured steps first (allocator, autotuning, compile)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's (16)")
    ap.add_argument("--grid", default="attn=sdpa",
                    help="runs separated by ';', each comma-separated settings (unset: the preset's): "
                         "attn=sdpa|eager|flash_attention_2, compile=0|1, overhead=N (train.context_group_overhead), "
                         "tol=F (train.context_pad_tolerance), autocast=none|bf16, pack=0|1 (train.context_packing)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after each ours-run, N more steps under torch.profiler: GPU busy share and top kernels")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="skip the remaining runs once this many seconds have passed (a device lease is short)")
    ap.add_argument("--no-reference", action="store_true", help="skip the reference-style loop")
    ap.add_argument("--plan-check", action="store_true",
                    help="first, `ao plan`'s peak against a real step on its worst-case batch (99.9th-pct lengths)")
    ap.add_argument("--lengths", default=str(PAPER_LENGTHS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="tiny Qwen3 on the CPU, 1 warm-up + 1 step per run")
    ap.add_argument("--write-lengths", metavar="OUT", help="build a paper-mixture sample and write its lengths")
    ap.add_argument("--data-root", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--scale", type=float, default=0.01, help="--write-lengths: share of the 1M-example mixture")
    return ap.parse_args()


# ----------------------------------------------------------------------------- batches


def synthetic_batches(lengths, n_batches: int, batch_size: int, vocab: int, layers: list[int], seed: int,
                      percentile: float = 99.9) -> list[list[dict]]:
    """`n_batches` global batches of data-schema rows with the sampled lengths, in the trainer's
    group-by-length order (length filter, windows of 20 batches sorted by oracle length)."""
    rng = np.random.default_rng(seed)
    keep = length_filter(lengths["oracle"], percentile)
    order = epoch_batches(lengths["oracle"][keep], batch_size, seed=seed, epoch=0, window=20)
    if len(order) < n_batches:
        raise SystemExit(f"the length sample holds {len(order)} batches of {batch_size}, fewer than {n_batches}")
    return [[synthetic_row(rng, oracle=int(lengths["oracle"][i]), context=int(lengths["context"][i]),
                           k=int(lengths["k"][i]), labels=int(lengths["labels"][i]),
                           layer=layers[int(lengths["layer"][i])], vocab=vocab, task=str(lengths["task"][i]))
             for i in keep[b]] for b in order[:n_batches]]


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
    labelled = sum(sum(1 for x in r["labels"][1:] if x != IGNORE_INDEX) for r in batch_rows)
    head = 2 * c.hidden_size * c.vocab_size * labelled * 2
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
        run = {"attn": "sdpa", "compile": 0, "overhead": None, "tol": None, "autocast": None, "pack": None}
        for kv in part.split(","):
            k, _, v = kv.strip().partition("=")
            if k not in run:
                raise SystemExit(f"--grid: unknown setting {k!r} in {part!r}; use {sorted(run)}")
            run[k] = v
        run["compile"] = int(run["compile"])
        runs.append(run)
    return runs


def run_ours(model, cfg, batches, pad_id, device, warmup, acc) -> dict:
    objective = make_objective(model, cfg)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, device)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    objective, opt = acc.prepare(objective, opt)
    times, examples, oracle, context = [], 0, 0, 0
    for i, rows in enumerate(batches):
        denom = float(sum(sum(1 for x in r["labels"][1:] if x != IGNORE_INDEX) for r in rows))
        sync(device)
        t0 = time.perf_counter()
        out = train_step(acc, objective, opt, sched, [rows], pad_id, cfg, denom)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            examples += len(rows)
            oracle += out["tokens"]
            context += out["context_tokens"]
    acc.free_memory()
    return {"times": times, "examples": examples, "oracle": oracle, "context": context,
            "padding_share": None, "loss": out["loss"]}


def run_reference(model, cfg, batches, pad_id, device, warmup) -> dict:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                            weight_decay=cfg.optim.weight_decay)
    times, examples, oracle, context = [], 0, 0, 0
    autocast = torch.bfloat16 if cfg.train.autocast == "bf16" else None
    for i, rows in enumerate(batches):
        sync(device)
        t0 = time.perf_counter()
        loss = reference_step(model, opt, rows, pad_id, hook_layer=cfg.train.hook_layer, device=device,
                              autocast_dtype=autocast)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            examples += len(rows)
            oracle += sum(len(r["input_ids"]) for r in rows)
            context += sum(len(r["context_input_ids"]) for r in rows)  # (distinct: all rows' contexts differ)
    return {"times": times, "examples": examples, "oracle": oracle, "context": context, "loss": loss}


def profile_steps(model, cfg, batches, pad_id, device, acc, name) -> None:
    """Steps under torch.profiler: how much of the wall time the GPU is busy, and the kernels that fill it
    (printed as one JSON line and a table)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        run_ours(model, cfg, batches, pad_id, device, 0, acc)
        sync(device)
    wall = time.perf_counter() - t0
    events = prof.key_averages()
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    busy = sum(getattr(e, attr, 0) for e in events if device.type != "cuda" or e.device_type.name == "CUDA") / 1e6
    top = sorted(events, key=lambda e: -getattr(e, attr, 0))[:12]
    # host side: the step's phases (record_function ranges in train.step / objective) and the costliest host
    # calls by self time (CUDA runtime calls such as cudaHostAlloc or cudaStreamSynchronize show up here)
    phases = {e.key: round(e.cpu_time_total / 1e3, 1) for e in events if e.key.startswith("ao.")}
    host = sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]
    print(json.dumps({"profile": name, "steps": len(batches), "wall_s": round(wall, 3),
                      "device_busy_s": round(busy, 3), "busy_share": round(busy / wall, 3),
                      "top": [[e.key[:60], round(getattr(e, attr, 0) / 1e3, 1), e.count] for e in top],
                      "host_phases_ms": phases,
                      "host_top_ms": [[e.key[:60], round(e.self_cpu_time_total / 1e3, 1), e.count] for e in host]}),
          flush=True)


def summarise(name, res, flops, peak, device) -> dict:
    t = sum(res["times"])
    n = len(res["times"])
    out = {"run": name, "step_s": round(t / n, 4), "step_median_s": round(statistics.median(res["times"]), 4),
           "examples_per_s": round(res["examples"] / t, 2), "oracle_tokens_per_s": round(res["oracle"] / t, 1),
           "all_tokens_per_s": round((res["oracle"] + res["context"]) / t, 1),
           "oracle_tokens_per_step": res["oracle"] / n, "context_tokens_per_step": res["context"] / n,
           "hours_per_1M_examples": round(1e6 / (res["examples"] / t) / 3600, 2)}
    if device.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1e9, 2)
    if peak:
        out["mfu"] = round(flops / (t / n) / peak, 4)
    out["tflops_per_s"] = round(flops / (t / n) / 1e12, 2)
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
    ov = {"output.progress": False}
    if args.batch_size:
        ov["train.batch_size"] = args.batch_size
    if args.smoke:
        args.steps, args.warmup = 1, 1
        ov["train.batch_size"] = args.batch_size or 4
    cfg0 = load_config(args.preset, ov)
    if args.smoke:
        config = AutoConfig.for_model("qwen3", **TINY_QWEN3)
    else:
        config = model_config(cfg0.model.spec)
    acc = Accelerator(cpu=not torch.cuda.is_available())
    device = acc.device
    n_layers = config.num_hidden_layers
    layers = [layer_from_percent(n_layers, p) for p in cfg0.data.layer_percents]
    lengths = load_lengths(args.lengths)
    batches = synthetic_batches(lengths, args.warmup + args.steps, cfg0.train.batch_size, config.vocab_size, layers,
                                args.seed)
    peak, gpu = peak_flops(device)
    flops = statistics.mean(flops_per_step(config, rows, max(layers) + 1) for rows in batches[args.warmup:])
    runs = parse_grid(args.grid)
    have_fa2 = importlib.util.find_spec("flash_attn") is not None
    print(json.dumps({"device": gpu, "torch": torch.__version__, "model": cfg0.model.spec if not args.smoke else
                      "tiny qwen3", "batch_size": cfg0.train.batch_size, "lora_r": cfg0.lora.r,
                      "flash_attn_installed": have_fa2, "model_tflops_per_step": round(flops / 1e12, 3)}), flush=True)
    t0 = t_start = time.perf_counter()
    model = build_model(cfg0, config, device, runs[0]["attn"])
    print(f"model built in {time.perf_counter() - t0:.1f}s", flush=True)
    pad_id = 0
    if args.plan_check:
        plan_check(model, cfg0, config, layers, device, acc, args)
    results, ref_done = [], set()
    for run in runs:
        if run["attn"] == "flash_attention_2" and not have_fa2:
            print(json.dumps({"run": run, "skipped": "flash-attn is not installed"}), flush=True)
            continue
        sov = dict(ov)
        if run["overhead"] is not None:
            sov["train.context_group_overhead"] = int(run["overhead"])
        if run["tol"] is not None:
            sov["train.context_pad_tolerance"] = float(run["tol"])
        if run["autocast"] is not None:
            sov["train.autocast"] = None if run["autocast"] == "none" else run["autocast"]
        if run["pack"] is not None:
            sov["train.context_packing"] = bool(int(run["pack"]))
        if args.budget_s is not None and time.perf_counter() - t_start > args.budget_s:
            print(json.dumps({"run": run, "skipped": f"over --budget-s {args.budget_s}"}), flush=True)
            continue
        cfg = load_config(args.preset, sov)
        if cfg.train.context_packing:
            err = check_context_packing(model, cfg)
            print(json.dumps({"context_packing_error": err, "packing_on": cfg.train.context_packing}), flush=True)
        set_attention(model, run["attn"])
        if run["compile"]:
            torch._dynamo.reset()  # each compiled run starts from no graphs (no cache carried from the last)
            compile_blocks(model)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        name = ",".join(f"{k}={v}" for k, v in run.items() if v is not None)
        try:
            res = run_ours(model, cfg, batches, pad_id, device, args.warmup, acc)
            results.append({**summarise(f"ours[{name}]", res, flops, peak, device), "settings": run})
            if args.profile:
                profile_steps(model, cfg, batches[-args.profile:], pad_id, device, acc, name)
        except torch.cuda.OutOfMemoryError as e:  # (report and go on with the next variant)
            print(json.dumps({"run": f"ours[{name}]", "error": f"out of memory: {e}"[:300]}), flush=True)
        finally:
            uncompile_blocks(model)
        key = (run["attn"], cfg.train.autocast)
        if not args.no_reference and key not in ref_done:
            ref_done.add(key)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                res = run_reference(model, cfg, batches, pad_id, device, args.warmup)
                results.append({**summarise(f"reference[attn={run['attn']},autocast={cfg.train.autocast}]", res,
                                            flops, peak, device), "settings": {"attn": run["attn"]}})
            except torch.cuda.OutOfMemoryError as e:
                print(json.dumps({"run": "reference", "error": f"out of memory: {e}"[:300]}), flush=True)
    best = max((r for r in results if r["run"].startswith("ours")), key=lambda r: r["oracle_tokens_per_s"], default=None)
    ref = [r for r in results if r["run"].startswith("reference")]
    summary = {"device": gpu, "runs": results}
    if best and ref:
        summary["best_ours"] = best["run"]
        summary["speedup_vs_reference"] = round(best["oracle_tokens_per_s"] / ref[0]["oracle_tokens_per_s"], 2)
    print(json.dumps(summary))


def plan_check(model, cfg, config, layers, device, acc, args) -> dict:
    """`ao plan`'s numbers for this model and recipe next to what a step on the same worst-case batch
    really allocates (torch.cuda.max_memory_allocated: tensors only, so the plan's CUDA-context line is
    left out of the comparison)."""
    from activation_oracles.plan import CUDA_CONTEXT, plan_memory

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
        run_ours(model, cfg, [rows, rows], 0, device, 1, acc)
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
