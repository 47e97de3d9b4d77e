"""Every script under benchmarks/ runs at its smallest size (--smoke), so a refactor that breaks one fails here
(or, where its smallest run needs a trained oracle built from test fixtures, in a test file of its own)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "benchmarks").glob("*.py") if "__main__" in p.read_text())
# script -> the test file that runs it at a tiny scale instead of --smoke (it needs test fixtures)
OWN_TEST = {"audit_figures.py": "test_bench_audit_figures.py"}
SMOKE = [s for s in SCRIPTS if s not in OWN_TEST]
# what each smoke run's final JSON line must hold (positive numbers)
EXPECT = {
    "ask_tokens.py": ("batched_s", "separate_s", "speedup"),
    "data_build.py": ("examples", "seconds"),
    "demo_sweep.py": ("seconds", "variants", "finished"),
    "train_step.py": ("step_s", "parts_s", "tokens_per_s", "reference_step_s", "speedup_vs_reference"),
    "gpu_train.py": ("speedup_vs_reference",),
    "host_cost.py": ("ours_host_ms", "reference_host_ms", "ratio"),
    "score_tokens.py": ("batched_s", "separate_s", "speedup"),
    "serve_load.py": ("rps", "sequential_rps", "speedup", "answered", "rss_end_mb"),
    "text_transfer.py": ("seconds", "final_loss"),
    "smollm2_paper.py": ("seconds", "steps_trained"),
}
# gpu_train.py must run where `datasets` (and so pyarrow) is not installed: the GPU machine.
NO_DATASETS = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
               "bad = [m for m in ('datasets', 'pyarrow') if m in sys.modules]; "
               "sys.exit(f'imported {bad}') if bad else None")


def test_every_script_is_covered():
    assert set(SMOKE) == set(EXPECT), "give the new benchmark a --smoke mode and an entry in EXPECT"
    for script, test in OWN_TEST.items():
        assert script in SCRIPTS and f'"{script}"' in (ROOT / "tests" / test).read_text(), (script, test)


@pytest.mark.parametrize("script", SMOKE)
def test_smoke(script):
    from conftest import SHARED_DATA

    if script in ("data_build.py", "smollm2_paper.py") and not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
    path = str(ROOT / "benchmarks" / script)
    # (gpu_train: the variants and the profiler a device call uses, so none of them rots unseen)
    cmd = [sys.executable, "-c", NO_DATASETS, path, "--smoke", "--grid", "attn=sdpa;packing=1,buckets=2,graphs=1,autocast=bf16",
           "--profile", "1"] if script == "gpu_train.py" else [sys.executable, path, "--smoke"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, (p.stdout[-2000:], p.stderr[-4000:])
    out = json.loads(p.stdout.strip().splitlines()[-1])
    for key in EXPECT[script]:
        assert out[key] > 0, (key, out)
    if script == "host_cost.py":  # the GPU path (the preset's settings): one context forward, nothing read back
        assert out["context_forwards_per_step"] == 1 and out["syncs_per_step"] == 0, out
        assert out["reference_syncs_per_step"] > 0, out
    if script == "serve_load.py":  # every request answered, every answer equal to Oracle.score's, bad ones refused
        assert out["wrong"] == out["lost"] == 0 and out["malformed_ok"] == out["malformed"] > 0, out
        assert out["answered"] == out["requests"] and out["max_prob_diff"] < 1e-4, out
    if script == "smollm2_paper.py":  # what a device run hands back, before and after the evaluation
        assert {"adapter.tar", "metrics.jsonl", "plan.json", "timings.json", "results.json", "report.md"} <= \
            set(out["files"]), out
    if script == "score_tokens.py":  # one batched call and four single calls give the same probabilities
        assert out["positions"] == 4 and out["max_prob_diff"] < 1e-4, out
    if script == "gpu_train.py":
        runs = {r["run"].split("[")[0]: r for r in out["runs"]}
        assert runs["ours"]["oracle_tokens_per_step"] == runs["reference"]["oracle_tokens_per_step"] > 0
        assert runs["ours"]["context_tokens_per_step"] > 0
        assert len([r for r in out["runs"] if r["run"].startswith("ours")]) == 2
        profiles = [json.loads(ln) for ln in p.stdout.splitlines() if ln.startswith('{"profile"')]
        assert len(profiles) == 2 and {"ao.forward", "ao.collect", "ao.backward"} <= set(profiles[1]["host_phases_ms"])


def test_demo_sweep_paths():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from demo_sweep import resolve

    base = {"data": {"curriculum": [{"steps": 5, "where": {"task": ["a"]}}, {"steps": 7}]}, "optim": {"lr": 1.0}}
    cfg = resolve(base, {"set": {"optim.lr": 0.5, "data.curriculum.*.where.label": ["x"],
                                 "data.curriculum.2": {"steps": 9}}}, "v")
    assert cfg["optim"]["lr"] == 0.5 and base["optim"]["lr"] == 1.0  # the base is not touched
    assert cfg["data"]["curriculum"] == [{"steps": 5, "where": {"task": ["a"], "label": ["x"]}}, {"steps": 7},
                                         {"steps": 9}]  # '*' skips the stage without `where`; index 2 appends
    for bad in ("data.curriculum.4", "optim.nope.x", "data.curriculum.*.nope.x"):
        with pytest.raises(SystemExit):
            resolve(base, {"set": {bad: 1}}, "v")
