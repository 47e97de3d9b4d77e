"""Smoke run of benchmarks/score_tokens.py, so a refactor that breaks the benchmark fails the suite."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "score_tokens.py"


def test_score_tokens_benchmark_smoke(smol, capsys):
    spec = importlib.util.spec_from_file_location("score_tokens", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.main(["--smoke"])
    assert out["positions"] == 4 and out["batched_s"] > 0 and out["separate_s"] > 0
    assert out["max_prob_diff"] < 1e-4  # one batched call and four single calls give the same probabilities
    assert '"speedup"' in capsys.readouterr().out
