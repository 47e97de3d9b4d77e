"""`ao demo` / `make demo`: build the offline mixture, train an oracle on CPU, evaluate it honestly.

Every stage is reused on a rerun: the mixture lives in the cache keyed by its content hash, training
resumes from the run's latest complete checkpoint (or is skipped once the final adapter exists).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .fsutil import atomic_directory

PRESET = "cpu-smollm2"


def _stage(msg: str, t0: float) -> None:
    print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)


def _copy_tree(src: Path, dst: Path) -> None:
    with atomic_directory(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def train_or_resume(preset: str, data_dir: Path, run_dir: Path, overrides: dict) -> Path:
    from .train import latest_complete, train

    if (run_dir / "adapter" / "adapter_config.json").is_file():
        print(f"training already finished: reusing {run_dir / 'adapter'}", flush=True)
        return run_dir
    if run_dir.is_dir() and latest_complete(run_dir) is not None:
        print(f"resuming the interrupted run in {run_dir}", flush=True)
        return train(None, resume=str(run_dir))
    return train(preset, data=str(data_dir), out=str(run_dir), overrides=overrides)


def run_demo(out: str | Path = "demo_out", *, preset: str = PRESET, model: str = "smollm2-135m",
             max_steps: int | None = None, data_scale: float | None = None, max_per_group: int = 100,
             overrides: dict | None = None, eval_tasks: list[str] | None = None) -> dict:
    from transformers.utils import logging as hf_logging

    from .data import build_mixture
    from .data.mixture import saved_dir
    from .eval.run import run_eval
    from .oracle import Oracle
    from .train import load_config

    hf_logging.disable_progress_bar()
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(preset, {})
    mix = demo_mixture(cfg, model, data_scale)
    _stage("1/4 building the built-in offline mixture (all three task families)", t0)
    dd = build_mixture(mix)
    data_dir = saved_dir(dd)
    print(f"      train {len(dd['train']):,} / test {len(dd['test']):,} examples in {data_dir}", flush=True)

    _stage(f"2/4 training an oracle with the {preset} preset", t0)
    ov = dict(overrides or {})
    if max_steps is not None:
        ov["train.max_steps"] = max_steps
    run_dir = train_or_resume(preset, data_dir, out / "run", ov)
    _copy_tree(run_dir / "adapter", out / "adapter")
    if (run_dir / "metrics.jsonl").is_file():
        shutil.copyfile(run_dir / "metrics.jsonl", out / "metrics.jsonl")

    _stage("3/4 evaluating on held-out data against three baselines", t0)
    oracle = Oracle.from_pretrained(model, str(out / "adapter"), device="cpu")
    # The tasks trained on (held-out contexts) by default: the unseen ones cost minutes and have no
    # probe training split; `eval_tasks` or `ao eval --tasks` reach them.
    eval_tasks = eval_tasks or list(mix.classification.train_tasks)
    results, summary, samples, report = run_eval(
        oracle, dd, out, tasks=eval_tasks, max_per_group=max_per_group, metrics_path=out / "metrics.jsonl",
        title="Activation oracle demo: SmolLM2-135M-Instruct on CPU", bar_tasks=list(mix.classification.train_tasks),
        meta={"preset": preset, "base_model": model, "adapter": str(out / "adapter"),
              "train_examples": len(dd["train"]), "test_examples": len(dd["test"])},
    )
    _stage("4/4 done", t0)
    print_summary(results, summary, samples, out)
    summary["wall_seconds"] = round(time.time() - t0, 1)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def demo_mixture(cfg, model: str, data_scale: float | None):
    """The built-in offline mixture as the preset trains on it (layers, data.builtin_mixture settings)."""
    from .train.dataset import builtin_mixture_config

    return builtin_mixture_config(cfg, scale=data_scale, model=model)


def print_summary(results, summary, samples, out: Path) -> None:
    print("\nHeld-out yes/no accuracy (trained oracle | untrained | no injection | linear probe):")
    for r in results:
        s = {m: v.acc for m, v in r.scores.items()}
        print(f"  {r.dataset:>24s} {r.variant:6s}  {s.get('oracle', float('nan')):.2f} | "
              f"{s.get('untrained', float('nan')):.2f} | {s.get('no_injection', float('nan')):.2f} | "
              f"{s.get('probe', float('nan')):.2f}   (n={r.n})")
    if "bar" in summary:
        print(f"\nOver the {len(summary['eligible_groups'])} groups whose probe reaches "
              f"{summary['probe_threshold']:.0%}: oracle {summary['mean_oracle']:.3f}, untrained "
              f"{summary['mean_untrained']:.3f}, no injection {summary['mean_no_injection']:.3f}, "
              f"probe {summary['mean_probe']:.3f}  -> bar {'MET' if summary['bar']['met'] else 'NOT met'}")
    if samples:
        print("\nSample answers (held-out):")
        for s in samples:
            print(f"  [{s.task}] Q: {s.question}\n      oracle: {s.answer!r}\n      truth:  {s.target!r}")
    print(f"\nReport: {out / 'report.md'}  adapter: {out / 'adapter'}")
