"""`ao demo` / `make demo`: build the offline mixture, train an oracle (on CPU unless a GPU is there),
evaluate it honestly.

Every stage is reused on a rerun: the mixture lives in the cache keyed by its content hash, training
resumes from the run's latest complete checkpoint (or is skipped once the final adapter exists).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from .fsutil import atomic_directory, atomic_write_text

PRESET = "cpu-smollm2"


def busy_cores(seconds: float = 0.5) -> float | None:
    """How many cores other processes keep busy right now (from /proc/stat; None where unavailable)."""
    def sample():
        with open("/proc/stat") as f:
            vals = [int(x) for x in f.readline().split()[1:]]
        return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return (1 - (i1 - i0) / max(1, t1 - t0)) * (os.cpu_count() or 1)


def warn_if_cpu_busy() -> None:
    """Several torch threads on a CPU that other processes keep busy wait on each other at every
    parallel region: on our 2-core machines matrix products fell from ~300 to ~3 GFLOP/s with one other
    busy process (docs/demo.md). Say so before a run that would take hours instead of minutes."""
    import torch

    busy, threads = busy_cores(), torch.get_num_threads()
    if busy is not None and busy > 0.5 and threads > 1:
        print(f"note: other processes keep {busy:.1f} of {os.cpu_count()} cores busy and torch uses {threads} "
              "threads; under contention training can be 10-100x slower. Stop the other jobs, or run with "
              "OMP_NUM_THREADS=1.", flush=True)


def _stage(msg: str, t0: float) -> None:
    print(f"[{time.time() - t0:6.0f}s] {msg}", flush=True)


def _copy_tree(src: Path, dst: Path) -> None:
    with atomic_directory(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


def train_or_resume(preset: str, data_dir: Path, run_dir: Path, overrides: dict) -> Path:
    from .train import CheckpointError, latest_complete, train

    if (run_dir / "adapter" / "adapter_config.json").is_file():
        print(f"training already finished: reusing {run_dir / 'adapter'}", flush=True)
        return run_dir
    if run_dir.is_dir():
        try:
            latest_complete(run_dir)
        except CheckpointError:  # stopped before its first complete checkpoint: nothing to resume
            pass
        else:
            print(f"resuming the interrupted run in {run_dir}", flush=True)
            return train(None, resume=str(run_dir))
    # the demo owns its run directory: what an interrupted attempt left there is replaced
    return train(preset, data=str(data_dir), out=str(run_dir), overrides=overrides, overwrite=True)


def run_demo(out: str | Path = "demo_out", *, preset: str = PRESET, model: str = "smollm2-135m",
             max_steps: int | None = None, data_scale: float | None = None, max_per_group: int = 60,
             overrides: dict | None = None, tasks: list[str] | None = None,
             heldout_tasks: list[str] | None = None, data: str | Path | None = None) -> dict:
    """`tasks`: trained tasks to evaluate (default all), `heldout_tasks`: tasks never trained on (default the
    mixture's eval-only tasks). `data`: a mixture directory built by `ao data build` to train and evaluate
    on instead of the built-in offline mixture (e.g. the paper-size one)."""
    from transformers.utils import logging as hf_logging

    from .data import build_mixture
    from .data.mixture import saved_dir
    from .eval.classification import ALL_METHODS
    from .eval.run import run_eval
    from .models import default_device
    from .oracle import Oracle
    from .train import load_config

    from .checks import check_int, check_number

    if max_steps is not None:
        check_int(max_steps, "max_steps", 1)
    if data_scale is not None:
        check_number(data_scale, "data_scale", above=0)
    check_int(max_per_group, "max_per_group", 1)
    hf_logging.disable_progress_bar()
    device = default_device()  # the trainer's choice too, so training and evaluation share one device
    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(preset, dict(overrides or {}))  # (autocast as the training ran)
    warn_if_cpu_busy()
    if data is None:
        mix = demo_mixture(cfg, model, data_scale)
        _stage("1/4 building the built-in offline mixture (all three task families)", t0)
        dd = build_mixture(mix)
    else:
        if data_scale is not None:
            raise ValueError("data_scale scales the built-in mixture; with data=DIR build DIR at the size you want")
        mix, dd = given_mixture(data, model)
        _stage(f"1/4 reading the mixture in {data}", t0)
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
    oracle = Oracle.from_pretrained(model, str(out / "adapter"), device=device)
    trained = list(tasks if tasks is not None else mix.classification.train_tasks)
    heldout = list(heldout_tasks if heldout_tasks is not None else mix.classification.eval_tasks)
    asked = ask_handwritten(oracle, trained)
    results, summary, samples, report = run_eval(
        oracle, dd, out, tasks=trained + heldout, max_per_group=max_per_group,
        max_per_task={t: max(1, max_per_group // 2) for t in heldout}, metrics_path=out / "metrics.jsonl",
        title=f"Activation oracle demo: SmolLM2-135M-Instruct on {'GPU' if device == 'cuda' else 'CPU'}",
        bar_tasks=trained, heldout_tasks=heldout, methods=ALL_METHODS, bar=True,
        cp_per_direction=max_per_group, autocast=cfg.train.autocast, extra_md=handwritten_markdown(asked),
        meta={"preset": preset, "base_model": model, "adapter": str(out / "adapter"),
              "train_examples": len(dd["train"]), "test_examples": len(dd["test"])},
    )
    _stage("4/4 done", t0)
    print_summary(results, summary, samples, out, asked)
    summary["wall_seconds"] = round(time.time() - t0, 1)
    summary["handwritten"] = asked
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    return summary


# Part 4 of the report: sentences written for this demo (in no training or test set), each asked about
# both classes of its task, answered as a user gets answers from `ao ask` (whole prompt, greedy text).
HANDWRITTEN = {
    "sst2": (["The soup was cold and the waiter ignored us all evening.",
              "What a delightful little film; I smiled the whole way through."],
             ["Is the sentiment of this text positive?", "Is the sentiment of this text negative?"]),
    "md_gender": (["My grandmother knitted a warm scarf for her neighbour.",
                   "The old fisherman mended his nets before dawn."],
                  ["Is this text about a woman?", "Is this text about a man?"]),
    "ner": (["Angela Merkel met the mayor of Lisbon on Tuesday.",
             "The kettle whistled softly in the empty kitchen."],
            ["Does this text mention a person?", "Does this text mention a place?"]),
    "tense": (["We walked along the river after dinner.", "They will open the new library next spring."],
              ["Is this sentence in the past tense?", "Is this sentence in the future tense?"]),
}


def ask_handwritten(oracle, tasks, max_new_tokens: int = 6) -> list[dict]:
    out = []
    for task in tasks:
        if task not in HANDWRITTEN:
            continue
        texts, questions = HANDWRITTEN[task]
        for text in texts:
            for a in oracle.ask(text, questions, max_new_tokens=max_new_tokens):
                out.append({"task": task, "context": text, "question": a.question, "answer": a.text})
    return out


def handwritten_markdown(asked: list[dict]) -> str:
    if not asked:
        return ""
    lines = ["## 4. Hand-written sentences, both classes asked", "",
             "Sentences written for this demo, in no training or test set; the whole prompt is read "
             "(`ao ask --include-template`: the chat template's tokens too), the answer is the oracle's greedy "
             "text as it came.", "",
             "| task | context | question | oracle |", "|---|---|---|---|"]
    lines += [f"| {a['task']} | {a['context']} | {a['question']} | {a['answer']} |" for a in asked]
    return "\n".join(lines)


def demo_mixture(cfg, model: str, data_scale: float | None):
    """The built-in offline mixture as the preset trains on it (layers, data.builtin_mixture settings)."""
    from .train.dataset import builtin_mixture_config

    return builtin_mixture_config(cfg, scale=data_scale, model=model)


def given_mixture(data: str | Path, model: str):
    """A mixture built by `ao data build` (its config, its splits), refused when built for another tokenizer."""
    from .data.config import MixtureConfig
    from .data.mixture import load_mixture, mixture_info

    dd = load_mixture(data, model=model)
    return MixtureConfig.from_dict(mixture_info(data)["config"], where=f"{data}/ao_data.json"), dd


def print_summary(results, summary, samples, out: Path, asked=()) -> None:
    print("\nHeld-out yes/no accuracy, questions about every class (trained oracle | untrained | no injection | "
          "linear probe | the model reading the text):")
    for r in results:
        s = {m: v.acc for m, v in r.scores.items()}
        fmt = lambda m: f"{s[m]:.2f}" if m in s else "  – "  # noqa: E731
        print(f"  {r.dataset:>24s} {r.variant:6s}  {fmt('oracle')} | {fmt('untrained')} | {fmt('no_injection')} | "
              f"{fmt('probe')} | {fmt('text')}   (n={r.n})")
    if "bar" in summary:
        from .eval.report import bar_markdown

        print()
        for line in bar_markdown(summary)[2:]:
            print(line.replace("**", ""))
    if asked:
        print("\nHand-written sentences (whole prompt, greedy answers):")
        for a in asked:
            print(f"  [{a['task']}] {a['context']}\n      Q: {a['question']}  ->  {a['answer']!r}")
    if samples:
        print("\nSample answers (held-out):")
        for s in samples:
            print(f"  [{s.task}] Q: {s.question}\n      oracle: {s.answer!r}\n      truth:  {s.target!r}")
    print(f"\nReport: {out / 'report.md'}  adapter: {out / 'adapter'}")
