"""What a training step costs the host: our step against the reference-style loop, on the same batches (CPU).

    PYTHONPATH=src python benchmarks/host_cost.py [--steps 6] [--json]
    PYTHONPATH=src python benchmarks/host_cost.py --smoke --json     # seconds (the test suite's)

On a GPU the host has to issue every op of a step; when that takes longer than the GPU needs to run them,
the GPU waits (benchmarks/README.md: busy 11-24 % of an H200 step). This measures the host's part alone:
the preset's model shape (default paper-qwen3-8b: 36 Qwen3 blocks) at hidden size 16 with LoRA r 4 and
attention replaced by a same-shape stand-in, on one CPU thread, so the compute is negligible and what is
timed is Python, dispatch and allocation: what a GPU step costs the host before any kernel runs.

Our step (`train.step.train_step` with the preset's settings, or --set overrides) and
`reference_loop.reference_step` alternate on the same batches of paper-length rows (random ids with the
lengths of `builtin/paper_lengths.json`). Printed per loop:
- host ms per step: CPU time of the one thread that runs the step (so other processes on the machine
  barely move it; wall time is printed beside it), mean over --steps after --warmup, and per phase
  (collate and transfer, context collection, oracle forward, backward, optimizer: the `ao.*` ranges both
  loops mark);
- aten ops dispatched per step and per phase;
- context forwards per step (model forwards run without gradients);
- synchronising ops in a step that does not log (what would make a GPU wait for its host: `SyncGuard`),
  each with the line of code that asks for it.
With --json the last line is one JSON object: ours_host_ms, reference_host_ms, ratio (ours / reference,
of the means), ratio_median (of the per-batch ratios), context_forwards_per_step, syncs_per_step (ours),
and the per-phase figures.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]

import reference_loop  # noqa: E402
from reference_loop import reference_step  # noqa: E402

from activation_oracles.train import batching  # noqa: E402
from activation_oracles.train.config import load_config, parse_set  # noqa: E402
from activation_oracles.train.step import apply_lora, make_objective, make_optimizer, train_step  # noqa: E402
from activation_oracles.train.sync_guard import SyncGuard  # noqa: E402
from activation_oracles.train.synthetic import load_lengths, synthetic_batches  # noqa: E402

STANDIN = "ao_host_standin"
PHASES = ("ao.collate", "ao.to_device", "ao.collect", "ao.forward", "ao.backward", "ao.optimizer")


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper-qwen3-8b")
    ap.add_argument("--steps", type=int, default=6, help="measured steps per loop")
    ap.add_argument("--warmup", type=int, default=2, help="unmeasured steps first (allocator, lazy state)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--hidden", type=int, default=16, help="hidden size of the stand-in model")
    ap.add_argument("--lora-r", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=2048, help="vocabulary of the stand-in (the reference computes "
                                                            "logits over all of it at every position)")
    ap.add_argument("--attention", choices=["standin", "sdpa"], default="standin",
                    help="standin: a same-shape stand-in for attention (pure host work); sdpa: the real one")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for our step, e.g. train.packing=false")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--smoke", action="store_true", help="4 blocks, batch 4, one warm-up and one measured step, --json")
    return ap.parse_args()


# ----------------------------------------------------------------------------- the stand-in model


def standin_attention(module, query, key, value, attention_mask, **kwargs):
    """Attention's output shape from the query alone: one copy, no scores (what remains is host work)."""
    return query.transpose(1, 2).contiguous(), None


def register_standin() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(STANDIN, standin_attention)
    AttentionMaskInterface.register(STANDIN, sdpa_mask)  # masks are built as for SDPA, checks and all


def standin_config(spec: str, *, hidden: int, vocab: int, layers: int | None):
    from activation_oracles.models import model_config

    c = model_config(spec)
    heads = 2
    c.hidden_size, c.num_attention_heads, c.vocab_size = hidden, heads, vocab
    for key, value in (("num_key_value_heads", 1), ("head_dim", hidden // heads), ("intermediate_size", 2 * hidden)):
        if hasattr(c, key):
            setattr(c, key, value)
    if layers:
        c.num_hidden_layers = layers
        if getattr(c, "layer_types", None):
            c.layer_types = c.layer_types[:layers]
    c.tie_word_embeddings = False
    return c


def build(cfg, config, attention: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation=attention)
    return apply_lora(model, cfg)


# ----------------------------------------------------------------------------- instruments


class Phases:
    """Host time and aten ops per `ao.*` range (innermost range wins), from a patched record_function."""

    def __init__(self):
        self.stack: list[str] = []
        self.ms = collections.Counter()
        self.ops = collections.Counter()
        self._real = torch.profiler.record_function

    @contextlib.contextmanager
    def _range(self, name, *args, **kwargs):
        if not name.startswith("ao."):
            with self._real(name, *args, **kwargs):
                yield
            return
        self.stack.append(name)
        t0 = time.thread_time()
        try:
            yield
        finally:
            dt = (time.thread_time() - t0) * 1e3
            self.stack.pop()
            self.ms[name] += dt
            if self.stack:  # the outer range's own time excludes this one
                self.ms[self.stack[-1]] -= dt

    def __enter__(self):
        torch.profiler.record_function = self._range
        return self

    def __exit__(self, *exc):
        torch.profiler.record_function = self._real

    def current(self) -> str:
        return self.stack[-1] if self.stack else "other"


class OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self, phases: Phases):
        super().__init__()
        self.phases = phases

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.phases.ops[self.phases.current()] += 1
        return func(*args, **(kwargs or {}))


class ForwardCounter:
    """Model forwards run without gradients (context collections), from a pre-hook on the embeddings."""

    def __init__(self, model):
        from activation_oracles.models import unwrap

        self.n = 0
        self.handle = unwrap(model).get_input_embeddings().register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        if not torch.is_grad_enabled():
            self.n += 1


# ----------------------------------------------------------------------------- the two loops


class Ours:
    def __init__(self, model, cfg, acc, shapes=None):
        self.cfg, self.acc, self.shapes = cfg, acc, shapes
        self.objective = make_objective(model, cfg)
        self.opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, acc.device)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: 1.0)

    def __call__(self, rows, *, log: bool = False):
        from activation_oracles.prompt import IGNORE_INDEX

        denom = float(sum(sum(1 for x in r["labels"][1:] if x != IGNORE_INDEX) for r in rows))
        stats = train_step(self.acc, self.objective, self.opt, self.sched, [rows], 0, self.cfg, denom,
                           shapes=self.shapes)
        if log and hasattr(stats, "read"):
            return stats.read()
        return stats


class Reference:
    """The reference-style loop as it runs on a GPU: PyTorch's default AdamW and clipping there are the
    foreach implementations (on a CPU they would loop over the tensors in Python), so they are asked for."""

    def __init__(self, model, cfg):
        self.model, self.cfg = model, cfg
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                                     weight_decay=cfg.optim.weight_decay, foreach=True)

    def __call__(self, rows, *, log: bool = False):
        return reference_step(self.model, self.opt, rows, 0, hook_layer=self.cfg.train.hook_layer, foreach=True)


def shapes_for(cfg, batches, layers):
    """The preset's shape buckets (train.shape_buckets), made from these batches as the trainer makes them
    from its data."""
    import numpy as np

    from activation_oracles.prompt import IGNORE_INDEX
    from activation_oracles.train.shapes import ShapeBuckets, micro_batch_sizes

    if not (cfg.train.packing and cfg.train.shape_buckets):
        return None
    rows = [r for b in batches for r in b]
    per_row = {"oracle": np.array([len(r["input_ids"]) for r in rows]),
               "context": np.array([len(r["context_input_ids"]) for r in rows]),
               "placeholders": np.array([len(r["positions"]) for r in rows]),
               "labels": np.array([sum(1 for x in r["labels"][1:] if x != IGNORE_INDEX) for r in rows])}
    bounds = np.cumsum([0] + [len(b) for b in batches])
    sizes = micro_batch_sizes(per_row, [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])], 1)
    return ShapeBuckets.from_sizes(sizes, cfg.train.shape_buckets, layers)


def measure(loops: dict, batches, warmup: int, models: dict) -> dict:
    """Each loop on each batch in turn (interleaved, so that a slow minute of the machine hits both)."""
    res = {name: {"ms": [], "wall_ms": [], "phase_ms": collections.Counter()} for name in loops}
    for i, rows in enumerate(batches):
        for name, step in loops.items():
            with Phases() as ph:
                t0, w0 = time.thread_time(), time.perf_counter()
                step(rows)
                dt, wall = (time.thread_time() - t0) * 1e3, (time.perf_counter() - w0) * 1e3
            if i >= warmup:
                res[name]["ms"].append(dt)
                res[name]["wall_ms"].append(wall)
                res[name]["phase_ms"].update(ph.ms)
    for name in loops:  # ops and forwards from one more step each, counted (counting slows it)
        with Phases() as ph, OpCounter(ph):
            fc = ForwardCounter(models[name])
            try:
                loops[name](batches[-1])
            finally:
                fc.handle.remove()
        res[name]["ops"] = dict(ph.ops)
        res[name]["context_forwards"] = fc.n
    return res


def count_syncs(loops: dict, rows, models: dict) -> dict:
    """Synchronising ops of one step of each loop that does not log, with the lines that ask for them."""
    out = {}
    real_ref, real_ours = reference_loop._left_pad, batching.to_device
    for name, step in loops.items():
        guard = SyncGuard(fail=False)
        guard.mark_module(models[name])
        opt = step.opt
        guard.mark_optimizer(opt)
        reference_loop._left_pad = guard.marked_transfer(real_ref)
        batching.to_device = guard.marked_transfer(real_ours)
        try:
            with guard:
                step(rows)
        finally:
            reference_loop._left_pad, batching.to_device = real_ref, real_ours
        where = collections.Counter(f"{v.op} at {v.where}" for v in guard.violations)
        out[name] = {"syncs": len(guard.violations), "where": dict(where.most_common())}
    return out


def main():
    args = parse()
    torch.set_num_threads(args.threads)
    from accelerate import Accelerator

    ov = {"output.progress": False, "lora.r": args.lora_r, "lora.alpha": 2 * args.lora_r, "model.dtype": "float32"}
    if args.smoke:
        args.steps, args.warmup, args.json = 1, 1, True
        ov["train.batch_size"] = args.batch_size or 4
    elif args.batch_size:
        ov["train.batch_size"] = args.batch_size
    ov.update(parse_set(args.set))
    cfg = load_config(args.preset, ov)
    attention = STANDIN if args.attention == "standin" else "sdpa"
    if attention == STANDIN:
        register_standin()
    config = standin_config(cfg.model.spec, hidden=args.hidden, vocab=args.vocab, layers=4 if args.smoke else None)
    model = build(cfg, config, attention)
    ref_model = build(cfg, config, attention)  # (its own copy: our objective changes how LoRA layers run)
    acc = Accelerator(cpu=True)
    from activation_oracles.models import layer_from_percent

    n = config.num_hidden_layers
    layers = [layer_from_percent(n, p) for p in cfg.data.layer_percents]
    batches = synthetic_batches(load_lengths(), args.warmup + args.steps, cfg.train.batch_size, config.vocab_size,
                                layers, args.seed)
    loops = {"ours": Ours(model, cfg, acc, shapes_for(cfg, batches, layers)), "reference": Reference(ref_model, cfg)}
    models = {"ours": model, "reference": ref_model}
    res = measure(loops, batches, args.warmup, models)
    syncs = count_syncs(loops, batches[-1], models)
    steps = len(res["ours"]["ms"])
    summary = {"preset": args.preset, "blocks": n, "hidden": args.hidden, "lora_r": args.lora_r,
               "batch_size": cfg.train.batch_size, "attention": args.attention, "threads": args.threads,
               "steps": steps, "overrides": args.set}
    for name, r in res.items():
        ms = statistics.mean(r["ms"])
        phases = {p: round(r["phase_ms"][p] / steps, 1) for p in PHASES if r["phase_ms"][p]}
        ops = r["ops"]
        wall = statistics.mean(r["wall_ms"])
        print(f"{name:9s} host {ms:8.1f} ms/step (median {statistics.median(r['ms']):.1f}, wall {wall:.1f}); "
              f"ops {sum(ops.values())}; context forwards {r['context_forwards']}; syncs {syncs[name]['syncs']}")
        print(f"          ms per phase {phases}")
        print(f"          ops per phase {ops}")
        for line, k in syncs[name]["where"].items():
            print(f"          sync x{k}: {line}")
        summary[f"{name}_host_ms"] = round(ms, 1)
        summary[f"{name}_host_ms_median"] = round(statistics.median(r["ms"]), 1)
        summary[f"{name}_wall_ms"] = round(wall, 1)
        summary[f"{name}_phase_ms"] = phases
        summary[f"{name}_ops"] = sum(ops.values())
        summary[f"{name}_ops_per_phase"] = ops
        summary[f"{name}_context_forwards_per_step"] = r["context_forwards"]
        summary[f"{name}_syncs_per_step"] = syncs[name]["syncs"]
        summary[f"{name}_syncs"] = syncs[name]["where"]
    summary["ratio"] = round(summary["ours_host_ms"] / summary["reference_host_ms"], 3)
    # (per batch, ours against the reference on the same batch moments apart: robust to a busy machine)
    summary["ratio_median"] = round(statistics.median(a / b for a, b in zip(res["ours"]["ms"], res["reference"]["ms"])), 3)
    summary["context_forwards_per_step"] = summary["ours_context_forwards_per_step"]
    summary["syncs_per_step"] = summary["ours_syncs_per_step"]
    print(f"ours / reference host time: {summary['ratio']:.3f} (median of the per-batch ratios {summary['ratio_median']:.3f})")
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
