"""Build a paper-size mixture (1M examples) from local files and report time and peak memory.

    nice .venv/bin/python benchmarks/data_build.py [--root ../shared/data] [--scale 1.0] [--out DIR]
    .venv/bin/python benchmarks/data_build.py --smoke     # scale 0.001 (the test suite's)

Counts: SPQA 64,000, classification 7 x 48,000 (+ eval tasks' test sets), context prediction 600,000.
The local sources are smaller than that, so items are recycled (`allow_recycle: true`); positions,
layers and questions are redrawn on every reuse. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from activation_oracles.data import MixtureConfig, build_mixture  # noqa: E402


def main() -> None:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every count (for quick checks)")
    ap.add_argument("--out", default=None, help="output dir (default: a temporary dir, removed afterwards)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--smoke", action="store_true", help="--scale 0.001")
    args = ap.parse_args()
    if args.smoke:
        args.scale = 0.001

    cfg = MixtureConfig.standins(args.root)
    cfg.allow_recycle = True
    s = lambda n: int(round(n * args.scale))  # noqa: E731
    cfg.spqa.count, cfg.classification.count, cfg.context_prediction.count = (
        s(cfg.spqa.count), s(cfg.classification.count), s(cfg.context_prediction.count))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ao-bench-")) / "mix"
    t0 = time.time()
    dd = build_mixture(cfg, out_dir=out, progress=args.progress, force=True, log=lambda m: print(m, file=sys.stderr))
    seconds = time.time() - t0
    n = sum(len(d) for d in dd.values())
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if not args.out:
        shutil.rmtree(out.parent, ignore_errors=True)
    print(json.dumps({"examples": n, "train": len(dd["train"]), "test": len(dd["test"]), "seconds": round(seconds, 1),
                      "peak_rss_mb": round(peak, 1), "disk_mb": round(size_mb, 1)}))


if __name__ == "__main__":
    main()
