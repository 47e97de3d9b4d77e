"""The audit figures of docs/audit.md in one command: every organism kind built, every audit run with
every method, on one base model with one oracle; the numbers and times as markdown.

    .venv/bin/python benchmarks/audit_figures.py --oracle demo_out/adapter --out audit_figures
        [--base smollm2-135m] [--prompts-dir ../shared/data/eval_prompts] [--audits taboo,gender]
        [--max-prompts N] [--max-steps N] [--max-new-tokens N] [--reply-tokens N] [--device cpu]

Writes OUT/organisms/NAME (ao organism build), OUT/audits/AUDIT (ao audit: report.md, results.json,
answers.jsonl, plot), OUT/timings.json (wall and CPU seconds and the load average of every step) and
OUT/figures.md (printed too). Resumable: an organism whose organism.json exists and an audit whose
results.json exists are reused with the times recorded when they ran. `--prompts-dir` feeds the paper's
target prompts to taboo and gender (their organisms learned nothing prompt-specific; ssc, personaqa and
diff audit the secrets the built-in organisms learned). The --max-* options make a quick run (the
test suite runs this script on a tiny random model with them).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from activation_oracles.audit import build_organism, run_audit
from activation_oracles.audit.methods import METHODS
from activation_oracles.audit.report import LABELS, SCORE_NAMES
from activation_oracles.fsutil import atomic_write_text
from activation_oracles.oracle_config import read_ao_config

# (name, kind, options): the organisms docs/audit.md reports, two per secret-keeping kind with a choice.
ORGANISMS = (
    ("taboo_moon", "taboo", {"word": "moon"}),
    ("taboo_gold", "taboo", {"word": "gold"}),
    ("gender_female", "gender", {"gender": "female"}),
    ("gender_male", "gender", {"gender": "male"}),
    ("ssc_base64", "ssc", {"encoding": "base64"}),
    ("persona", "persona", {}),
    ("domain_risky_finance", "domain", {"domain": "risky_finance"}),
)
AUDITS = {
    "taboo": ["taboo_moon", "taboo_gold"],
    "gender": ["gender_female", "gender_male"],
    "ssc": ["ssc_base64"],
    "personaqa": ["persona"],
    "diff": ["domain_risky_finance"],
}
USES_PROMPTS_DIR = ("taboo", "gender")


def timed(fn):
    """(fn(), {wall_s, cpu_s (this process, all threads), load average at start and end})."""
    load0, wall, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
    out = fn()
    return out, {"wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
                 "load_start": round(load0, 1), "load_end": round(os.getloadavg()[0], 1)}


def _est(d: dict | None) -> str:
    if not d or not d.get("n"):
        return "–"
    return f"{d['value']:.3f} [{d['low']:.2f}, {d['high']:.2f}]"


def _behaviour(b: dict) -> str:
    parts = [f"{k.replace('_', ' ')} {v:.2f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
             for k, v in b.items() if k not in ("examples", "n")]
    return ", ".join(parts) + (f" (n = {b['n']})" if "n" in b else "")


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render(args, base: str, timings: dict, out: Path) -> str:
    lines = [f"Measured {datetime.date.today()} on {platform.machine()} ({os.cpu_count()} CPUs, torch threads "
             f"{torch.get_num_threads()}), code {_commit()}, base `{base}`, oracle `{args.oracle}`"
             + (f", quick run: --max-prompts {args.max_prompts}" if args.max_prompts else "")
             + (f", --max-steps {args.max_steps}" if args.max_steps else "") + ".", "",
             "### Organism builds", "",
             "| organism | steps (epochs) | final loss | behaviour check (held-out prompts) | wall | CPU "
             "| load start / end |",
             "|---|---|---|---|---|---|---|"]
    for name, _, _ in ORGANISMS:
        t = timings["organisms"].get(name)
        meta_path = out / "organisms" / name / "organism.json"
        if t is None or not meta_path.is_file():
            continue
        meta = json.loads(meta_path.read_text())
        tr = meta["training"]
        lines.append(f"| {name} | {tr['steps']} ({tr['epochs']}) | {tr['final_loss']:.2f} | "
                     f"{_behaviour(meta['behaviour'])} | {t['wall_s']:.0f} s | {t['cpu_s']:.0f} s | "
                     f"{t['load_start']} / {t['load_end']} |")
    lines += ["", "### Audits (test split, 95 % intervals)", "",
              "| audit (score) | n | " + " | ".join(LABELS[m] for m in METHODS) + " | wall | CPU |",
              "|---|---|" + "---|" * len(METHODS) + "---|---|"]
    notes = []
    for audit in AUDITS:
        path = out / "audits" / audit / "results.json"
        t = timings["audits"].get(audit)
        if t is None or not path.is_file():
            continue
        res = json.loads(path.read_text())
        ms = res["methods"]
        cells = [_est(ms[m]["score"]) if m in ms else "–" for m in METHODS]
        lines.append(f"| {audit} ({SCORE_NAMES[audit]}) | {res['n_test']} | " + " | ".join(cells)
                     + f" | {t['wall_s']:.0f} s | {t['cpu_s']:.0f} s |")
        if any("tpr_minus_fpr" in r for r in ms.values()):
            cells = [_est(ms[m].get("tpr_minus_fpr")) if m in ms else "–" for m in METHODS]
            lines.append(f"| {audit} TPR - FPR | {res['n_test']} | " + " | ".join(cells) + " | | |")
        chosen = ms.get("oracle", {}).get("prompt")
        if chosen:
            notes.append(f"- {audit}: oracle prompt \"{chosen}\"; details in `audits/{audit}/report.md`")
    return "\n".join(lines + [""] + notes) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--oracle", required=True, help="Oracle adapter directory (e.g. demo_out/adapter).")
    ap.add_argument("--out", required=True, help="Output directory (resumable).")
    ap.add_argument("--base", default=None, help="Base model (default: the oracle's, else smollm2-135m).")
    ap.add_argument("--prompts-dir", default=None, help="The paper's target prompts for taboo and gender.")
    ap.add_argument("--audits", default=",".join(AUDITS), help="Comma-separated subset of the audits.")
    ap.add_argument("--max-prompts", type=int, default=None, help="Cap target prompts per split (quick runs).")
    ap.add_argument("--max-steps", type=int, default=None, help="Cap fine-tuning steps per organism (quick runs).")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="Oracle answer length (default: the paper's).")
    ap.add_argument("--reply-tokens", type=int, default=None, help="Organism reply length (default 48).")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)

    audits = [a.strip() for a in args.audits.split(",") if a.strip()]
    unknown = [a for a in audits if a not in AUDITS]
    if unknown or not audits:
        ap.error(f"--audits {args.audits!r}: use some of {', '.join(AUDITS)}")
    if not (Path(args.oracle) / "adapter_config.json").is_file():
        ap.error(f"--oracle {args.oracle}: not an adapter directory (no adapter_config.json)")
    base = args.base or read_ao_config(args.oracle).get("base_model") or "smollm2-135m"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tpath = out / "timings.json"
    timings = json.loads(tpath.read_text()) if tpath.is_file() else {"organisms": {}, "audits": {}}

    def save():
        atomic_write_text(tpath, json.dumps(timings, indent=2))

    needed = {n for a in audits for n in AUDITS[a]}
    sft = {"max_steps": args.max_steps} if args.max_steps else None
    for name, kind, opts in ORGANISMS:
        d = out / "organisms" / name
        if name not in needed or ((d / "organism.json").is_file() and name in timings["organisms"]):
            continue
        print(f"== organism {name}", flush=True)
        _, timings["organisms"][name] = timed(lambda: build_organism(kind, base=base, out=d, sft=sft,
                                                                     device=args.device, **opts))
        save()

    over = {k: v for k, v in dict(max_prompts=args.max_prompts, max_new_tokens=args.max_new_tokens,
                                  black_box_tokens=args.reply_tokens).items() if v is not None}
    for audit in audits:
        d = out / "audits" / audit
        if (d / "results.json").is_file() and audit in timings["audits"]:
            continue
        print(f"== audit {audit}", flush=True)
        pdir = args.prompts_dir if audit in USES_PROMPTS_DIR else None
        _, timings["audits"][audit] = timed(lambda: run_audit(
            audit, oracle=args.oracle, organisms=[str(out / "organisms" / n) for n in AUDITS[audit]], base=base,
            out=d, device=args.device, prompts_dir=pdir, **over))
        save()

    md = render(args, base, timings, out)
    atomic_write_text(out / "figures.md", md)
    print(md)
    return {"figures": str(out / "figures.md"), "timings": timings, "base": base}


if __name__ == "__main__":
    main()
