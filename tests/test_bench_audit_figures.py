"""benchmarks/audit_figures.py at a tiny scale (random 4-block model, 1 fine-tuning step, 1 prompt per
split, short answers), so the command that makes docs/audit.md's figures cannot rot."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from audit_helpers import tiny_base, trained_oracle

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "audit_figures.py"
CELL = r"\d\.\d{3} \[-?\d\.\d\d, \d\.\d\d\]"


def _load():
    spec = importlib.util.spec_from_file_location("audit_figures", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_audit_figures_builds_every_organism_and_runs_every_audit(tmp_path, smol_tokenizer, capsys):
    base = tiny_base(tmp_path, smol_tokenizer)
    oracle = trained_oracle(tmp_path, smol_tokenizer, base, steps=1)
    mod = _load()
    out = tmp_path / "figures"
    args = ["--oracle", str(oracle), "--out", str(out), "--max-steps", "1", "--max-prompts", "1",
            "--max-new-tokens", "3", "--reply-tokens", "4"]
    got = mod.main(args)
    assert got["base"] == str(base)  # read from the oracle's ao_config.json
    md = (out / "figures.md").read_text()
    assert md in capsys.readouterr().out
    timings = json.loads((out / "timings.json").read_text())
    for name, kind, _ in mod.ORGANISMS:
        meta = json.loads((out / "organisms" / name / "organism.json").read_text())
        assert meta["kind"] == kind and meta["training"]["steps"] == 1
        assert timings["organisms"][name]["cpu_s"] > 0
        assert re.search(rf"^\| {name} \| 1 \(", md, re.M), name
    for audit in mod.AUDITS:
        res = json.loads((out / "audits" / audit / "results.json").read_text())
        assert (out / "audits" / audit / "answers.jsonl").is_file()
        row = next(ln for ln in md.splitlines() if ln.startswith(f"| {audit} ("))
        n_methods = len(res["methods"])
        assert len(re.findall(CELL, row)) == n_methods >= 5, row  # every method with its interval
        assert timings["audits"][audit]["wall_s"] > 0
    assert re.search(rf"^\| gender TPR - FPR \| \d+ \| -?{CELL}", md, re.M)
    assert "logit lens" in md and json.loads((out / "audits" / "taboo" / "results.json").read_text())[
        "methods"]["logit_lens"]["score"]["n"] == 2  # two taboo organisms x one test prompt

    # resumable: a second run reuses every organism and audit and writes the same table
    stamp = (out / "organisms" / "taboo_moon" / "organism.json").stat().st_mtime_ns
    mod.main(args)
    assert (out / "organisms" / "taboo_moon" / "organism.json").stat().st_mtime_ns == stamp
    assert (out / "figures.md").read_text() == md
