"""A miniature `make demo`: build, train a few steps, evaluate, report; then a rerun reuses it all."""

import json
import re

import pytest


@pytest.mark.slow
def test_mini_demo_end_to_end(tmp_path, capsys, smol):
    import activation_oracles as ao
    from activation_oracles.demo import run_demo

    out = tmp_path / "demo_out"
    overrides = {"train.batch_size": 8, "eval.every": 0, "eval.final": False, "output.save_every": 0}
    kw = dict(max_steps=2, data_scale=0.02, max_per_group=3, overrides=overrides, tasks=["sst2", "tense"],
              heldout_tasks=["ag_news"])
    summary = run_demo(out, **kw)
    printed = capsys.readouterr().out
    for f in ("report.md", "results.json", "accuracy.png", "loss.png", "metrics.jsonl", "summary.json",
              "samples.json", "adapter/adapter_config.json", "adapter/ao_config.json"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    report = (out / "report.md").read_text()
    assert re.search(r"\| sst2 \| single \| 3 \| \d\.\d{3} \[", report)
    groups = json.loads((out / "results.json").read_text())["groups"]
    assert groups and all(0 <= g["scores"][m]["acc"] <= 1 for g in groups for m in g["scores"])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["loss"] > 0 for m in metrics)
    assert "Held-out yes/no accuracy" in printed and "Sample answers" in printed
    for part in ("1. Trained tasks", "2. Held-out tasks", "3. Context prediction", "4. Hand-written sentences"):
        assert part in report, part
    assert re.search(r"\| ag_news \| full \| 1 \|", report)  # held-out tasks: half the questions per group
    assert {a["task"] for a in summary["handwritten"]} == {"sst2", "tense"}
    assert summary["mean_all_oracle"] is not None
    samples = json.loads((out / "samples.json").read_text())
    assert samples and all(isinstance(s["answer"], str) for s in samples)
    oracle = ao.Oracle.from_pretrained(adapter=str(out / "adapter"), device="cpu")
    assert oracle.has_oracle_adapter and len(oracle.ask("Hello there.", "Q?", max_new_tokens=2)) == 1

    # a rerun reuses the built data and the finished training
    run_demo(out, **kw)
    assert "training already finished" in capsys.readouterr().out



def test_demo_reads_a_given_mixture_with_its_own_tasks(tmp_path, smol_tokenizer):
    """`ao demo --data DIR` evaluates the tasks DIR was built with (e.g. the paper mixture's seven trained and
    three held-out ones), not the built-in mixture's."""
    from activation_oracles.data import MixtureConfig, build_mixture
    from activation_oracles.demo import given_mixture

    cfg = MixtureConfig.builtin(scale=0.01)
    cfg.classification.train_tasks, cfg.classification.eval_tasks = ["sst2", "snli"], ["ag_news"]
    build_mixture(cfg, out_dir=tmp_path / "mix", log=lambda m: None)
    mix, dd = given_mixture(tmp_path / "mix", "smollm2-135m")
    assert (mix.classification.train_tasks, mix.classification.eval_tasks) == (["sst2", "snli"], ["ag_news"])
    assert {"sst2", "snli"} <= set(dd["train"]["dataset"]) and "ag_news" in set(dd["test"]["dataset"])
