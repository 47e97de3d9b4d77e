"""Run several `ao demo` recipes side by side (on a GPU machine, or one at a time on a CPU) and tabulate
the report's four parts for each: the way to try recipe changes for issue 10 in minutes instead of hours.

    PYTHONPATH=src python benchmarks/demo_sweep.py benchmarks/sweeps/heldout.yaml --out sweep_out \
        [--deadline 500] [--parallel 5] [--only A,B]

A sweep file names a base preset and variants; each variant replaces config fields by dotted path, where a
number indexes a list (one past its end appends) and `*` means every element that has the rest of the path:

    base: cpu-smollm2-long
    max_steps: 1400
    variants:
      W: {}
      all7: {max_steps: 1400, set: {data.builtin_mixture.classification.train_tasks: [sst2, ner]}}

Each variant's resolved preset, demo output and log go to OUT/NAME/; OUT/sweep.json holds one row per
variant (also printed as a table). Variants still running at --deadline seconds are stopped and reported
with the steps they reached, so a time-boxed GPU call always returns something. Set-up shared by the
variants (converting the embedded model) runs once, before they start, in the shared AO_CACHE.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def deep_set(node, path: list[str], value, full: str) -> int:
    """Set `value` at `path` inside nested dicts/lists; returns how many places were set."""
    head, rest = path[0], path[1:]
    if head == "*":
        if not isinstance(node, list):
            raise SystemExit(f"{full}: '*' needs a list, found {type(node).__name__}")
        return sum(_set_if_present(item, rest, value, full) for item in node)
    key = int(head) if isinstance(node, list) else head
    if isinstance(node, list) and not rest and key == len(node):  # one past the end appends
        node.append(value)
        return 1
    if isinstance(node, list) and not -len(node) <= key < len(node):
        raise SystemExit(f"{full}: index {key} out of range (the list has {len(node)} items)")
    if not rest:
        node[key] = value
        return 1
    if isinstance(node, dict) and key not in node:
        raise SystemExit(f"{full}: no field {key!r} (fields: {sorted(node)})")
    return deep_set(node[key], rest, value, full)


def _set_if_present(node, path, value, full) -> int:
    try:
        return deep_set(node, path, value, full)
    except SystemExit:  # under '*', elements without the path are skipped
        return 0


def resolve(base: dict, variant: dict, name: str) -> dict:
    cfg = json.loads(json.dumps(base))
    for path, value in (variant.get("set") or {}).items():
        if deep_set(cfg, str(path).split("."), value, f"variant {name}: {path}") == 0:
            raise SystemExit(f"variant {name}: {path} matched nothing in the base preset")
    cfg["description"] = f"demo_sweep variant {name}"
    return cfg


def load_sweep(path: Path) -> tuple[str, dict, dict]:
    from activation_oracles.train.presets import preset_file

    spec = yaml.safe_load(path.read_text()) or {}
    if not isinstance(spec.get("variants"), dict) or not spec["variants"]:
        raise SystemExit(f"{path}: needs 'variants:' (a mapping of name -> {{set: ..., max_steps: ...}})")
    base_name = spec.get("base", "cpu-smollm2-long")
    base_path = preset_file(base_name) or Path(base_name)
    if not base_path.is_file():
        raise SystemExit(f"{path}: base {base_name!r} is neither a preset nor a file")
    return base_name, yaml.safe_load(base_path.read_text()), spec


def launch(name: str, cfg: dict, steps: int | None, out: Path, threads: int, extra: list[str]) -> subprocess.Popen:
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    preset = d / "preset.yaml"
    preset.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-c", "from activation_oracles.cli import main; main()", "demo",
           "--preset", str(preset), "--out", str(d / "demo"), *extra]
    if steps:
        cmd += ["--max-steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    with open(d / "log.txt", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the sweep dies, even by SIGKILL (a test's timeout), so that no
    variant trains on as an orphan (its own session keeps it out of the sweep's signals otherwise)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def row(name: str, d: Path, wall: float, finished: bool) -> dict:
    from activation_oracles.eval.report import read_metrics

    r = {"variant": name, "finished": finished, "wall_s": round(wall, 1)}
    steps = [m for m in read_metrics(d / "demo" / "run" / "metrics.jsonl") if "loss" in m and "step" in m]
    if steps:
        r["steps"] = steps[-1]["step"]
        tail = [m["loss/classification"] for m in steps[-50:] if "loss/classification" in m]
        r["cls_loss_last50"] = round(sum(tail) / len(tail), 4) if tail else None
    summary = d / "demo" / "summary.json"
    if not summary.is_file():
        return r
    s = json.loads(summary.read_text())
    bar = s.get("bar", {})
    held, cp = bar.get("heldout", {}), bar.get("context_prediction", {})
    r.update({
        "trained_oracle": s.get("mean_oracle"), "trained_untrained": s.get("mean_untrained"),
        "trained_no_injection": s.get("mean_no_injection"), "trained_probe": s.get("mean_probe"),
        "part1": bar.get("trained", {}).get("met"),
        "heldout_oracle": held.get("mean_oracle"), "heldout_untrained": held.get("mean_untrained"),
        "heldout_text": held.get("mean_text"),
        "part2": held.get("met"),
        "next_oracle": cp.get("future", {}).get("oracle", {}).get("acc"),
        "prev_oracle": cp.get("past", {}).get("oracle", {}).get("acc"),
        "part3": cp.get("met"), "ece": s.get("ece"),
    })
    results = d / "demo" / "results.json"
    if results.is_file():
        per = {}
        for g in json.loads(results.read_text()).get("groups", []):
            if f"{g['dataset']}/{g['variant']}" in held.get("groups", []):
                per.setdefault(g["dataset"], []).append(g["scores"]["oracle"]["acc"])
        r["heldout_per_task"] = {t: round(sum(v) / len(v), 3) for t, v in per.items()}
    return r


def table(rows: list[dict]) -> str:
    f = lambda v: "  -  " if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))  # noqa: E731
    head = ("variant", "steps", "wall_s", "trained", "untr", "probe", "p1", "heldout", "untr", "text", "p2", "next",
            "prev", "clsloss")
    keys = ("variant", "steps", "wall_s", "trained_oracle", "trained_untrained", "trained_probe", "part1",
            "heldout_oracle", "heldout_untrained", "heldout_text", "part2", "next_oracle", "prev_oracle", "cls_loss_last50")
    lines = [" | ".join(head)] + [" | ".join(f(r.get(k)) for k in keys) for r in rows]
    return "\n".join(lines)


def smoke_sweep(tmp: Path) -> Path:
    # one trained and one held-out task, no curriculum (its one-class stages need more rows than this size
    # has): the evaluation of all seven tasks took most of `make test`'s time on 2 cores
    tasks = {"data.builtin_mixture.classification.train_tasks": ["sst2"],
             "data.builtin_mixture.classification.eval_tasks": ["ag_news"]}
    spec = {"base": "cpu-smollm2", "max_steps": 1,
            "variants": {"base": {}, "lr": {"set": {"optim.lr": 1e-4, "data.curriculum": [], **tasks}}}}
    p = tmp / "smoke.yaml"
    p.write_text(yaml.safe_dump(spec))
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep", nargs="?", help="sweep YAML (base, max_steps, variants)")
    ap.add_argument("--out", default=None, help="output folder (default sweep_out; --smoke: a temporary one)")
    ap.add_argument("--deadline", type=float, default=None, help="stop variants still running after S seconds")
    ap.add_argument("--parallel", type=int, default=None, help="variants at once (default: all on a GPU, 1 on CPU)")
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--max-per-group", type=int, default=None)
    ap.add_argument("--data-scale", type=float, default=None)
    ap.add_argument("--smoke", action="store_true", help="one 1-step variant at the smallest size")
    a = ap.parse_args()
    out = Path(a.out or (tempfile.mkdtemp(prefix="demo_sweep_") if a.smoke else "sweep_out"))
    out.mkdir(parents=True, exist_ok=True)
    if a.smoke:  # one 1-step variant at the smallest data and evaluation
        a.sweep, a.max_per_group, a.data_scale, a.only = smoke_sweep(out), 1, 0.02, "lr"
    if not a.sweep:
        ap.error("give a sweep YAML (or --smoke)")
    import torch

    from activation_oracles.fsutil import atomic_write_text
    from activation_oracles.models import embedded_model_dir

    base_name, base, spec = load_sweep(Path(a.sweep))
    names = [n for n in spec["variants"] if not a.only or n in a.only.split(",")]
    if not names:
        raise SystemExit(f"--only {a.only}: no such variant (have {', '.join(spec['variants'])})")
    embedded_model_dir()  # convert once, before the variants race for it
    gpu = torch.cuda.is_available()
    parallel = a.parallel or (len(names) if gpu else 1)
    # the caller's OMP_NUM_THREADS wins: two threads per variant on a CPU that other jobs keep busy made one
    # training step 150-1,900 s instead of about 5 (threads waiting on each other at every parallel region)
    threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or max(1, (os.cpu_count() or 1) // parallel)
    extra = []
    if a.max_per_group:
        extra += ["--max-per-group", str(a.max_per_group)]
    if a.data_scale:
        extra += ["--data-scale", str(a.data_scale)]
    t0, pending, running, done = time.time(), list(names), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            n = pending.pop(0)
            v = spec["variants"][n] or {}
            running[n] = (launch(n, resolve(base, v, n), v.get("max_steps", spec.get("max_steps")), out, threads,
                                 extra), time.time())
        time.sleep(1 if a.smoke else 5)
        late = a.deadline is not None and time.time() - t0 > a.deadline
        for n, (p, start) in list(running.items()):
            if p.poll() is None and not late:
                continue
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait()
            done[n] = row(n, out / n, time.time() - start, p.returncode == 0)
            del running[n]
        if late:
            done.update({n: {"variant": n, "finished": False, "wall_s": 0.0} for n in pending})
            pending = []
    rows = [done[n] for n in names]
    result = {"base": base_name, "device": "cuda" if gpu else "cpu", "seconds": round(time.time() - t0, 1),
              "variants": len(rows), "rows": rows}
    atomic_write_text(out / "sweep.json", json.dumps(result, indent=1))
    print(table(rows))
    print(json.dumps({k: result[k] for k in ("base", "device", "seconds", "variants")}
                     | {"finished": sum(r["finished"] for r in rows)}))


if __name__ == "__main__":
    main()
