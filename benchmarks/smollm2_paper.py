"""The paper-size oracle for the embedded SmolLM2-135M on one GPU machine that has neither the hub nor
../shared/data: the whole ~1M-example mixture built there from the local stand-ins at the paper's counts,
trained with the gpu-smollm2-paper preset, evaluated as `ao demo` evaluates (docs/demo.md, "The paper-size run").

Here (with ../shared/data and the project's venv):
    .venv/bin/python benchmarks/smollm2_paper.py pack     # .device/ (git-ignored): data, tokenizer, wheels, GGUF halves
    .venv/bin/python benchmarks/smollm2_paper.py smoke    # the same pipeline on this CPU at a tiny size

There: three device calls back to back (64 MiB travel per call; the machine stays warm 30 s between calls).
`pack` prints them with their `carry` lists:
    1. gpu setup    wheels installed in /tmp/site; the data build started in the background (it needs only
                    the tokenizer, so it runs while the model's GGUF travels)
    2. gpu receive  the GGUF's first half kept
    3. gpu run      the GGUF joined and checked; wait for the data; a 40-step calibration of the step time;
                    as many steps as fit the budget (all of them when they fit: the schedule is planned for
                    the steps trained); the evaluation of `ao demo`; the adapter and metrics go to $OUT before
                    the evaluation starts, so a run cut short still returns them.
Every stage's wall time goes to timings.json. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
PRESET = "gpu-smollm2-paper"
MODEL = "smollm2-135m"
DATA_DIRS = ("classification", "context_prediction", "latentqa")  # what MixtureConfig.standins reads
# Packages the GPU image lacks or holds at other versions than the ones this project is tested with
WHEELS = ("datasets", "dill", "multiprocess", "gguf", "transformers", "tokenizers", "peft", "huggingface_hub",
          "fsspec")
CALL_LIMIT = 62 * 2**20  # what one call may carry, the working tree included, with a margin under 64 MiB
WORK = Path("/tmp/ao")  # on the device machine: outlives each call while the machine is warm
SITE = Path("/tmp/site")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _tree_size() -> int:
    """What travels with every call: tracked and untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=HERE, capture_output=True,
                         check=True).stdout.decode()
    return sum((HERE / f).stat().st_size for f in out.split("\0") if f and (HERE / f).is_file())


def sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ----------------------------------------------------------------------------- here


def pack(root: Path, dest: Path) -> dict:
    """Stage what the device calls carry in `dest` and return the calls."""
    sys.path.insert(0, str(HERE / "src"))
    from activation_oracles.models import _embedded_gguf, embedded_model_dir

    if dest.exists():
        shutil.rmtree(dest)
    (dest / "data").mkdir(parents=True)
    for name in DATA_DIRS:
        if not (root / name).is_dir():
            raise SystemExit(f"{root / name}: missing (the stand-ins of shared/data; see --root)")
        shutil.copytree(root / name, dest / "data" / name)
    # the tokenizer and config alone: the data build needs no weights
    shutil.copytree(embedded_model_dir(MODEL), dest / "tok", ignore=shutil.ignore_patterns("*.safetensors"))
    _download_wheels(dest / "whl")

    first = [dest / "whl", dest / "data", dest / "tok"]
    room = CALL_LIMIT - _tree_size()
    used = sum(_size(p) for p in first)
    if used > room:
        raise SystemExit(f"call 1 would carry {used / 2**20:.1f} MiB, {room / 2**20:.1f} MiB fit")
    gguf = _embedded_gguf(MODEL)
    blob = gguf.read_bytes()
    half = min(room - 2**20, (len(blob) + 1) // 2 + 2**20)
    parts = [blob[:half], blob[half:]]
    if len(parts[1]) > room:
        raise SystemExit(f"the GGUF ({len(blob) / 2**20:.1f} MiB) does not fit two calls beside the tree")
    manifest = {"file": gguf.name, "bytes": len(blob), "sha256": sha256(gguf)}
    for i, part in enumerate(parts):
        (dest / f"gguf.{i}").mkdir()
        (dest / f"gguf.{i}" / "part").write_bytes(part)
        (dest / f"gguf.{i}" / "manifest.json").write_text(json.dumps(manifest))
    rel = lambda p: str(p.relative_to(HERE)) if p.is_relative_to(HERE) else str(p)  # noqa: E731
    env = f"export PYTHONUNBUFFERED=1 AO_CACHE={WORK}/cache PYTHONPATH={SITE}:src;"
    calls = [
        {"command": f"{env} python3 benchmarks/smollm2_paper.py gpu setup --dest {rel(dest)}",
         "carry": [rel(p) for p in first], "timeout_s": 120},
        {"command": f"{env} python3 benchmarks/smollm2_paper.py gpu receive --dest {rel(dest)}",
         "carry": [rel(dest / "gguf.0")], "timeout_s": 60},
        {"command": f"{env} python3 benchmarks/smollm2_paper.py gpu run --dest {rel(dest)} --out $OUT --budget 540",
         "carry": [rel(dest / "gguf.1")], "timeout_s": 600},
    ]
    return {"calls": calls, "tree_mib": round(_tree_size() / 2**20, 1),
            "carried_mib": [round(sum(_size(HERE / c) for c in call["carry"]) / 2**20, 1) for call in calls]}


def _download_wheels(where: Path) -> None:
    """This project's versions, as wheels for the device's CPython 3.12 on x86-64 (pure ones fit any)."""
    where.mkdir(parents=True)
    plats = [f"--platform={p}" for p in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")]
    for name in WHEELS:
        spec = f"{name}=={importlib.metadata.version(name)}"
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *plats, "-d", str(where), spec],
                       check=True)


# ----------------------------------------------------------------------------- there


def setup(dest: Path) -> dict:
    """Call 1: install the wheels, copy the data out of the working tree, start the data build."""
    WORK.mkdir(parents=True, exist_ok=True)
    wheels = sorted(str(p) for p in (dest / "whl").glob("*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                    "--no-cache-dir", "--upgrade", "--target", str(SITE), *wheels], check=True)
    for name in ("data", "tok"):
        shutil.rmtree(WORK / name, ignore_errors=True)
        shutil.copytree(dest / name, WORK / name)
    with open(WORK / "build.log", "w") as out:  # its own session: it outlives this call
        proc = subprocess.Popen([sys.executable, __file__, "gpu", "build"], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=os.environ.copy())
    import torch

    return {"stage": "setup", "build_pid": proc.pid, "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def build(root: Path, tok: Path, out: Path, scale: float = 1.0) -> dict:
    """The paper-size mixture from the stand-ins (items recycled where a source is smaller than its count)."""
    sys.path.insert(0, str(HERE / "src"))
    from activation_oracles.data import MixtureConfig, build_mixture

    t0 = time.time()
    cfg = MixtureConfig.standins(root, model=str(tok)).scaled(scale)
    cfg.allow_recycle = True
    dd = build_mixture(cfg, out_dir=out, force=True, log=log)
    info = {"train": len(dd["train"]), "test": len(dd["test"]), "seconds": round(time.time() - t0, 1),
            "dir": str(out)}
    (out.parent / "build.json").write_text(json.dumps(info))
    return info


def receive(dest: Path) -> dict:
    WORK.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(dest / "gguf.0" / "part", WORK / "gguf.0")
    return {"stage": "receive", "bytes": (WORK / "gguf.0").stat().st_size}


def _join_gguf(dest: Path) -> Path:
    manifest = json.loads((dest / "gguf.1" / "manifest.json").read_text())
    path = WORK / manifest["file"]
    with open(path, "wb") as f:
        for part in (WORK / "gguf.0", dest / "gguf.1" / "part"):
            f.write(part.read_bytes())
    if path.stat().st_size != manifest["bytes"] or sha256(path) != manifest["sha256"]:
        raise SystemExit(f"{path}: the joined GGUF does not match its manifest (a half missing or cut)")
    return path


def _wait_for(build_json: Path, build_log: Path, deadline: float) -> dict:
    while not build_json.is_file():
        text = build_log.read_text(errors="replace") if build_log.is_file() else ""
        if "Traceback" in text:
            raise SystemExit(f"the data build failed:\n{text[-3000:]}")
        if time.time() > deadline:
            raise SystemExit(f"the data build did not finish in time:\n{text[-2000:]}")
        time.sleep(2)
    return json.loads(build_json.read_text())


def _step_seconds(run_dir: Path) -> float:
    """Mean step time of the logged intervals after the first (which holds the warm-up)."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    times = [r["step_time_s"] for r in rows if "step_time_s" in r][1:]
    if not times:
        raise SystemExit(f"{run_dir}/metrics.jsonl: no step times after the first interval")
    return sum(times) / len(times)


def run(data: Path, work: Path, out: Path, *, deadline: float, eval_reserve: float, max_per_group: int,
        calibrate_steps: int, overrides: dict, timings: dict, tasks=None, heldout_tasks=None) -> dict:
    """Calibrate, train as many steps as fit before `deadline` less `eval_reserve`, hand back the adapter
    and metrics, evaluate as `ao demo` does."""
    from activation_oracles.demo import run_demo
    from activation_oracles.train import train

    t = time.time()
    cal = train(PRESET, data=str(data), out=str(work / "calibration"), overwrite=True,
                overrides={**overrides, "train.max_steps": calibrate_steps, "output.save_every": 0,
                           "eval.final": False, "output.log_every": max(1, calibrate_steps // 4)})
    step_s = _step_seconds(cal)
    timings["calibration_s"] = round(time.time() - t, 1)
    batch = int(overrides.get("train.batch_size", 256))
    rows = _train_rows(data)
    full = max(1, rows // batch)
    steps = max(1, min(full, int((deadline - time.time() - eval_reserve) / step_s)))
    plan = {"step_s": round(step_s, 4), "batch": batch, "train_examples": rows, "steps_full_epoch": full,
            "steps_trained": steps, "fraction_of_epoch": round(steps / full, 4), "examples_seen": steps * batch}
    log(f"plan: {plan}")
    _write(out, "plan.json", plan)

    t = time.time()
    run_dir = train(PRESET, data=str(data), out=str(work / "demo" / "run"), overwrite=True,
                    overrides={**overrides, "train.max_steps": steps})
    timings["train_s"] = round(time.time() - t, 1)
    _hand_back(run_dir, out)
    _write(out, "timings.json", timings)

    t = time.time()  # run_demo finds the finished run in demo/run and evaluates it
    summary = run_demo(work / "demo", preset=PRESET, data=str(data), max_steps=steps, max_per_group=max_per_group,
                       overrides=overrides, tasks=tasks, heldout_tasks=heldout_tasks)
    timings["eval_s"] = round(time.time() - t, 1)
    for name in ("results.json", "report.md", "summary.json"):
        if (work / "demo" / name).is_file():
            shutil.copyfile(work / "demo" / name, out / name)
    return {"plan": plan, "bar": summary.get("bar")}


def _train_rows(data: Path) -> int:
    import datasets

    return datasets.load_from_disk(str(data))["train"].num_rows


def _hand_back(run_dir: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "adapter.tar", "w") as tar:
        tar.add(run_dir / "adapter", arcname="adapter")
    shutil.copyfile(run_dir / "metrics.jsonl", out / "metrics.jsonl")


def _write(out: Path, name: str, obj) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / name).write_text(json.dumps(obj, indent=1))


def gpu_run(dest: Path, out: Path, budget: float, eval_reserve: float) -> dict:
    t_start = time.time()
    timings: dict = {}
    sys.path.insert(0, str(HERE / "src"))
    from activation_oracles.models import embedded_model_dir

    t = time.time()
    embedded_model_dir(MODEL, gguf=_join_gguf(dest))  # the cache every later load reads
    timings["model_s"] = round(time.time() - t, 1)
    t = time.time()
    built = _wait_for(WORK / "build.json", WORK / "build.log", t_start + budget / 2)
    timings["data_wait_s"], timings["data_build_s"] = round(time.time() - t, 1), built["seconds"]
    shutil.copyfile(WORK / "build.log", out / "build.log")
    res = run(Path(built["dir"]), WORK, out, deadline=t_start + budget, eval_reserve=eval_reserve,
              max_per_group=60, calibrate_steps=40, overrides={}, timings=timings)
    timings["total_s"] = round(time.time() - t_start, 1)
    _write(out, "timings.json", timings)
    import torch

    return {**res, "timings": timings, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def smoke(root: Path, out: Path) -> dict:
    """The device pipeline on this CPU at a tiny size: stand-ins at 1/2000 of the counts, batch 2, the
    steps that fit a minute less the evaluation (at least one), 1 question per group, one trained and one
    held-out task evaluated."""
    t_start = time.time()
    timings: dict = {}
    work = out / "work"
    built = build(root, _local_tok(work), work / "mix", scale=0.0005)
    timings["data_build_s"] = built["seconds"]
    # (bf16 autocast off: on CPUs without bf16 instructions it is emulated, and this checks the pipeline only)
    ov = {"train.batch_size": 2, "train.autocast": None, "eval.max_examples": 4, "eval.max_loss_examples": 8}
    res = run(Path(built["dir"]), work, out, deadline=time.time() + 60, eval_reserve=40, max_per_group=1,
              calibrate_steps=2, overrides=ov, timings=timings, tasks=["sst2"], heldout_tasks=["ag_news"])
    timings["total_s"] = round(time.time() - t_start, 1)
    _write(out, "timings.json", timings)
    files = sorted(p.name for p in out.iterdir() if p.is_file())
    return {**res, "seconds": timings["total_s"], "steps_trained": res["plan"]["steps_trained"],
            "timings": timings, "files": files}


def _local_tok(work: Path) -> Path:
    from activation_oracles.models import embedded_model_dir

    tok = work / "tok"
    if not tok.is_dir():
        shutil.copytree(embedded_model_dir(MODEL), tok, ignore=shutil.ignore_patterns("*.safetensors"))
    return tok


def main() -> None:
    if sys.argv[1:] == ["--smoke"]:  # (the test suite's name for the smallest run)
        sys.argv[1:] = ["smoke"]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--root", type=Path, default=HERE.parent / "shared" / "data")
    p.add_argument("--dest", type=Path, default=HERE / ".device")
    p = sub.add_parser("smoke")
    p.add_argument("--root", type=Path, default=HERE.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=None)
    p = sub.add_parser("gpu")
    p.add_argument("stage", choices=("setup", "build", "receive", "run"))
    p.add_argument("--dest", type=Path, default=HERE / ".device")
    p.add_argument("--out", type=Path, default=WORK / "out")
    p.add_argument("--budget", type=float, default=540, help="seconds this call may take in all")
    p.add_argument("--eval-reserve", type=float, default=150, help="seconds kept for the evaluation")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE / "src"))

    if args.cmd == "pack":
        res = pack(args.root.resolve(), args.dest.resolve())
        for i, call in enumerate(res["calls"], 1):
            log(f"call {i}: run(command={call['command']!r}, carry={call['carry']}, timeout_s={call['timeout_s']})")
    elif args.cmd == "smoke":
        import tempfile

        out = args.out or Path(tempfile.mkdtemp(prefix="ao-smollm2-paper-"))
        res = smoke(args.root.resolve(), out)
    elif args.stage == "setup":
        res = setup(args.dest)
    elif args.stage == "build":
        res = build(WORK / "data", WORK / "tok", WORK / "mix")
    elif args.stage == "receive":
        res = receive(args.dest)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        res = gpu_run(args.dest, args.out, args.budget, args.eval_reserve)
    print(json.dumps(res, default=str))


if __name__ == "__main__":
    main()
