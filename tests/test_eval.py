import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_model

import activation_oracles as ao
from activation_oracles.eval.classification import METHODS, evaluate_classification, group_rows, summarize
from activation_oracles.eval.probe import probe_predictions
from activation_oracles.eval.report import write_report
from activation_oracles.intervals import wilson_interval
from activation_oracles.scoring import first_word, score


def test_scoring_first_word():
    assert first_word("  Yes, it is.") == "yes"
    assert first_word("\"No.\" he said") == "no"
    assert score("yes", "Yes") == (True, True)
    assert score("No!", "Yes") == (True, False)
    assert score("Maybe yes", "Yes") == (False, False)
    assert score("", "No") == (False, False)


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(50, 100)
    assert abs(lo - 0.4038) < 1e-3 and abs(hi - 0.5962) < 1e-3
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and abs(lo - 0.7225) < 1e-3


def test_probe_separates_linearly_separable_classes():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 16))
    y = (x[:, 3] > 0).astype(np.int64)
    x[:, 3] += np.where(y == 1, 1.0, -1.0)  # a margin between the classes
    keys = ["q"] * 400
    pred = probe_predictions(x[:300], y[:300], keys[:300], x[300:], keys[300:])
    assert (pred == y[300:]).mean() > 0.97
    # a key the probe never saw in training predicts nothing useful but does not crash
    assert probe_predictions(x[:10], y[:10], keys[:10], x[:2], ["other"] * 2).shape == (2,)


@pytest.fixture(scope="module")
def small_mixture(tmp_path_factory):
    from activation_oracles.data import MixtureConfig, build_mixture

    return build_mixture(MixtureConfig.builtin(scale=0.04), out_dir=tmp_path_factory.mktemp("mix") / "m")


@pytest.fixture(scope="module")
def tiny30(smol_tokenizer):
    """A 30-block random model with SmolLM2's vocabulary and layer count (so the mixture's layers fit)."""
    return make_tiny_model("llama", layers=30), smol_tokenizer


def test_group_rows_splits_single_and_multi(small_mixture):
    groups = group_rows(small_mixture["test"])
    assert groups and {v for _, v in groups} == {"single", "multi"}
    test = small_mixture["test"]
    for (dataset, variant), idx in groups.items():
        for i in idx:
            r = test[i]
            assert r["dataset"] == dataset and (len(r["positions"]) == 1) == (variant == "single")


def test_evaluate_classification_tiny_model(small_mixture, tiny30):
    from peft import LoraConfig, get_peft_model

    _, tok = tiny30
    peft = get_peft_model(make_tiny_model("llama", layers=30),
                          LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    peft.eval()
    results = evaluate_classification(peft, tok, small_mixture, tasks=["sst2", "tense"], max_per_group=6,
                                      max_probe_train=40, batch_size=4, progress=False)
    assert {(r.dataset, r.variant) for r in results} == {("sst2", "single"), ("sst2", "multi"),
                                                        ("tense", "single"), ("tense", "multi")}
    for r in results:
        assert set(r.scores) == set(METHODS)
        for m, s in r.scores.items():
            assert s.n == r.n == 6 and 0 <= s.correct <= s.n
            assert len(s.hits) == s.n and sum(s.hits) == s.correct  # one hit per question, probe included
            d = s.to_dict()
            assert d["ci_low"] <= d["acc"] <= d["ci_high"] and d["hits"].count("1") == s.correct
        # forced choice: a hit is P(Yes) on the right side of 0.5
        o = r.scores["oracle"]
        assert o.hits == [int((p >= 0.5) == y) for p, y in zip(o.p_yes, o.yes)]
    summary = summarize(results, probe_threshold=0.0)
    assert len(summary["eligible_groups"]) == 4 and "bar" in summary
    assert summary["intervals"]["oracle_minus_untrained"][0] == pytest.approx(summary["oracle_minus_untrained"])


def test_write_report_files(tmp_path, small_mixture, tiny30):
    model, tok = tiny30
    results = evaluate_classification(model, tok, small_mixture, tasks=["sst2"], max_per_group=4, batch_size=4,
                                      max_probe_train=40, progress=False)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("\n".join(json.dumps({"step": s, "loss": 2.0 / s, "loss/classification": 1.0 / s})
                                 for s in range(1, 6)))
    report = write_report(tmp_path / "out", results, summarize(results), metrics_path=metrics, extra_md="extra")
    text = report.read_text()
    assert "| sst2 | single | 4 |" in text and "extra" in text
    for f in ("results.json", "accuracy.png", "loss.png"):
        assert (tmp_path / "out" / f).stat().st_size > 0
    payload = json.loads((tmp_path / "out" / "results.json").read_text())
    assert payload["groups"][0]["scores"]["oracle"]["n"] == 4


def test_no_classification_rows_is_a_clear_error(small_mixture, tiny30):
    model, tok = tiny30
    with pytest.raises(ValueError, match="tasks=\\['nope'\\]"):
        evaluate_classification(model, tok, small_mixture, tasks=["nope"], progress=False)


def test_untrained_equals_oracle_without_adapter(small_mixture, tiny30):
    model, tok = tiny30
    results = evaluate_classification(model, tok, small_mixture, tasks=["sst2"], max_per_group=5, batch_size=5,
                                      methods=("oracle", "untrained"), progress=False)
    for r in results:
        assert r.scores["oracle"].correct == r.scores["untrained"].correct


def test_source_vectors_match_collect(small_mixture, tiny30):
    from activation_oracles.eval.classification import source_vectors

    model, tok = tiny30
    rows = [small_mixture["test"][i] for i in range(3)]
    vecs = source_vectors(model, rows, batch_size=2, pad_id=tok.pad_token_id)
    for r, v in zip(rows, vecs):
        acts = ao.collect_activations(model, torch.tensor([r["context_input_ids"]]), layers=[r["layer"]])
        torch.testing.assert_close(v, acts[r["layer"]][0, r["context_positions"]], rtol=1e-4, atol=1e-5)


def test_choose_answers_matches_full_forward_and_generate(small_mixture, tiny30):
    """Forced choice = argmax over the Yes/No logits of a plain full forward of each prompt alone
    (padding and batching change nothing), and its format flag = greedy's first token is Yes or No."""
    from activation_oracles.eval.classification import prompt_of, source_vectors
    from activation_oracles.steering import choice_token_ids, choose_answers, generate_answers

    model, tok = tiny30
    rows = [small_mixture["test"][i] for i in range(6)]
    assert len({len(prompt_of(r)) for r in rows}) > 1  # ragged, so left padding is exercised
    vecs = source_vectors(model, rows, batch_size=6, pad_id=tok.pad_token_id)
    picks, fmt = choose_answers(model, tok, [prompt_of(r) for r in rows], [list(r["positions"]) for r in rows], vecs)
    yes, no = choice_token_ids(tok, ("Yes", "No"))
    greedy = generate_answers(model, tok, [prompt_of(r) for r in rows], [list(r["positions"]) for r in rows], vecs,
                              max_new_tokens=1)
    for r, v, p, f, g in zip(rows, vecs, picks, fmt, greedy):
        with ao.inject(model, [v], [list(r["positions"])]), torch.no_grad():
            last = model(torch.tensor([prompt_of(r)])).logits[0, -1]
        assert p == ("Yes" if last[yes] > last[no] else "No")
        assert f == (int(last.argmax()) in (yes, no))
        assert (g.strip() in ("Yes", "No")) == f
    with pytest.raises(ValueError, match="share their first token"):
        choice_token_ids(tok, ("Yes", "Yes"))


def test_generate_scoring_still_available(small_mixture, tiny30):
    model, tok = tiny30
    kw = dict(tasks=["sst2"], max_per_group=4, batch_size=4, methods=("oracle", "no_injection"), progress=False)
    gen = evaluate_classification(model, tok, small_mixture, scoring="generate", **kw)
    ch = evaluate_classification(model, tok, small_mixture, scoring="choice", **kw)
    for g, c in zip(gen, ch):
        assert g.scores["oracle"].n == c.scores["oracle"].n == 4
    with pytest.raises(ValueError, match="scoring='vote'"):
        evaluate_classification(model, tok, small_mixture, scoring="vote", **kw)


def test_accuracy_plot_at_perfect_scores(tmp_path):
    from activation_oracles.eval.classification import GroupResult, MethodScore
    from activation_oracles.eval.report import plot_accuracy

    r = GroupResult("sst2", "multi", 100, {m: MethodScore(correct=100, formatted=100, n=100) for m in METHODS})
    r0 = GroupResult("ner", "single", 7, {m: MethodScore(correct=0, formatted=7, n=7) for m in METHODS})
    plot_accuracy([r, r0], tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0


def test_sample_rows_come_from_the_evaluated_classification_tasks():
    import datasets

    from activation_oracles.eval.samples import pick_rows

    test = datasets.Dataset.from_dict({
        "task": ["classification"] * 6 + ["spqa", "context_prediction"],
        "dataset": ["ag_news"] * 5 + ["sst2", "latentqa", "web"]})
    for seed in range(5):
        rows = pick_rows(test, seed=seed, datasets=["sst2"])
        assert rows == [5, 6, 7]  # the only sst2 row, whatever the seed; other families unaffected
    assert len(pick_rows(test)) == 3


def test_expected_calibration_error_known_values():
    from activation_oracles.eval.calibration import expected_calibration_error, reliability

    # confident and right: ECE 0.1 (confidence 0.9, accuracy 1)
    assert abs(expected_calibration_error([0.9, 0.1, 0.9, 0.1], [1, 0, 1, 0]) - 0.1) < 1e-9
    # always 0.6 for Yes, right 60 % of the time: calibrated
    assert expected_calibration_error([0.6] * 10, [1] * 6 + [0] * 4) < 1e-9
    # confident and always wrong: ECE = confidence
    assert abs(expected_calibration_error([0.95, 0.05], [0, 1]) - 0.95) < 1e-9
    bins = reliability([0.53, 0.97, 0.02], [1, 1, 0])
    assert [b["n"] for b in bins] == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2] and bins[-1]["accuracy"] == 1.0
    with pytest.raises(ValueError, match="truth"):
        expected_calibration_error([0.5, 0.5], [1])


def test_choice_scoring_keeps_p_yes_for_calibration(tmp_path, small_mixture, tiny30):
    from activation_oracles.eval.classification import prompt_of, source_vectors
    from activation_oracles.steering import choice_probs

    model, tok = tiny30
    results = evaluate_classification(model, tok, small_mixture, tasks=["sst2"], max_per_group=5, batch_size=5,
                                      methods=("oracle",), progress=False)
    r = results[0]
    s = r.scores["oracle"]
    assert len(s.p_yes) == len(s.yes) == s.n == 5 and all(0 <= p <= 1 for p in s.p_yes)
    assert s.correct == sum(int(p >= 0.5) == y for p, y in zip(s.p_yes, s.yes))
    rows = [small_mixture["test"][i] for i in group_rows(small_mixture["test"], tasks=["sst2"], max_per_group=5)[
        (r.dataset, r.variant)]]
    vecs = source_vectors(model, rows, pad_id=tok.pad_token_id)
    ref = choice_probs(model, tok, [prompt_of(x) for x in rows], [list(x["positions"]) for x in rows], vecs)
    np.testing.assert_allclose(s.p_yes, ref.probs[:, 0].tolist(), rtol=1e-4, atol=1e-6)
    summary = summarize(results)
    assert set(summary["ece"]) == {"oracle"} and 0 <= summary["ece"]["oracle"] <= 1
    write_report(tmp_path / "out", results, summary)
    assert (tmp_path / "out" / "reliability.png").stat().st_size > 0
    assert "## Calibration" in (tmp_path / "out" / "report.md").read_text()


def test_text_baseline_asks_the_base_model_about_the_tokens_the_oracle_reads(tmp_path, small_mixture, tiny30):
    from activation_oracles.eval.classification import group_rows, text_prompt
    from activation_oracles.steering import choice_probs

    model, tok = tiny30
    (key, idx), = [(k, v) for k, v in group_rows(small_mixture["test"], tasks=["sst2"], max_per_group=5).items()
                   if k[1] == "multi"]
    rows = [small_mixture["test"][i] for i in idx]
    r = rows[0]
    shown = tok.decode(text_prompt(tok, r))
    source = tok.decode([r["context_input_ids"][p] for p in r["context_positions"]], skip_special_tokens=True).strip()
    assert f"Text: {source}\n{r['question']}" in shown and " ?" * 3 not in shown
    results = evaluate_classification(model, tok, small_mixture, tasks=["sst2"], max_per_group=5, batch_size=5,
                                      methods=("oracle", "untrained", "no_injection", "text"), progress=False)
    got = next(g for g in results if (g.dataset, g.variant) == key).scores["text"]
    want = choice_probs(model, tok, [text_prompt(tok, x) for x in rows], [[] for _ in rows], None,
                        method="first_token").probs[:, 0].tolist()
    assert np.allclose(got.p_yes, want, atol=1e-5) and got.n == 5
    assert got.p_yes != next(g for g in results if (g.dataset, g.variant) == key).scores["untrained"].p_yes
    summary = summarize(results, heldout_tasks=["sst2"])
    assert summary["bar"]["heldout"]["mean_text"] == pytest.approx(np.mean([g.scores["text"].acc for g in results]))
    text = write_report(tmp_path, results, summary, bar=True).read_text()  # the held-out part is in the bar
    assert "model reads the text |" in text and "the model reading the text itself" in text
    with pytest.raises(ValueError, match="unknown \\['txt'\\]"):
        evaluate_classification(model, tok, small_mixture, tasks=["sst2"], methods=("txt",), progress=False)


def test_paired_difference_interval_and_the_bar_reports_it():
    from activation_oracles.eval.classification import GroupResult, MethodScore, summarize
    from activation_oracles.eval.report import bar_markdown
    from activation_oracles.intervals import paired_difference_interval

    # d = 1, 1, 0, 0: mean 0.5, sample variance 1/3, so the mean's SE is sqrt(1/12)
    m, lo, hi = paired_difference_interval([([1, 1, 0, 0], [0, 0, 0, 0])])
    assert m == 0.5 and hi - m == pytest.approx(1.96 * (1 / 12) ** 0.5) and m - lo == pytest.approx(hi - m)
    # two groups weigh equally, as the report's means do; a method against itself has no spread
    assert paired_difference_interval([([1] * 10, [0] * 10), ([0] * 2, [0] * 2)]) == (0.5, 0.5, 0.5)
    assert paired_difference_interval([([1, 0, 1], [1, 0, 1])]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same questions"):
        paired_difference_interval([([1, 0], [1])])

    rng = np.random.default_rng(0)

    def group(name, variant, n, accs):
        scores = {}
        for meth, acc in accs.items():
            hits = (rng.random(n) < acc).astype(int).tolist()
            scores[meth] = MethodScore(correct=sum(hits), formatted=n, n=n, hits=hits)
        return GroupResult(name, variant, n, scores)

    trained = [group("sst2", v, 400, {"oracle": 0.9, "untrained": 0.5, "no_injection": 0.5, "probe": 0.95})
               for v in ("single", "multi", "full")]
    held = [group("ag_news", v, 30, {"oracle": 0.62, "untrained": 0.55, "no_injection": 0.5}) for v in ("multi", "full")]
    summary = summarize(trained + held, bar_tasks=["sst2"], heldout_tasks=["ag_news"])
    gap, lo, hi = summary["intervals"]["oracle_minus_untrained"]
    assert gap == pytest.approx(summary["oracle_minus_untrained"]) and lo < gap < hi and hi - lo < 0.12
    hgap, hlo, hhi = summary["bar"]["heldout"]["oracle_minus_untrained"]
    assert hgap == pytest.approx(summary["bar"]["heldout"]["mean_oracle"] - summary["bar"]["heldout"]["mean_untrained"])
    assert hhi - hlo > 2 * (hi - lo)  # 60 questions against 1,200: a much wider interval
    text = "\n".join(bar_markdown(summary))
    assert f"[95 %: {lo:+.3f}, {hi:+.3f}]" in text and "Intervals in brackets" in text
    part1, part2 = (next(ln for ln in text.splitlines() if ln.startswith(k)) for k in ("1. Trained", "2. Held-out"))
    assert hlo < 0.10 < hhi  # 60 questions cannot tell +0.10 from the gap measured, 1,200 can tell +0.20
    assert f"[95 %: {hlo:+.3f}, {hhi:+.3f}; the threshold is inside it]" in part2
    assert "inside" not in part1
    # results written before per-question hits were kept: the bar as before, no interval claimed
    for g in trained + held:
        for s in g.scores.values():
            s.hits = []
    old = summarize(trained + held, bar_tasks=["sst2"], heldout_tasks=["ag_news"])
    assert old["intervals"]["oracle_minus_untrained"] is None and "Intervals" not in "\n".join(bar_markdown(old))


def test_ao_eval_heldout_tasks_are_their_own_part(tmp_path, small_mixture, tiny30):
    from typer.testing import CliRunner

    from activation_oracles.cli import app
    from activation_oracles.data.mixture import saved_dir

    data = str(saved_dir(small_mixture))
    model, tok = tiny30
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    runner = CliRunner()
    base = ["eval", "--model", str(tmp_path / "m"), "--data", data, "--max-per-group", "4", "--no-text",
            "--out", str(tmp_path / "o")]
    res = runner.invoke(app, base + ["--tasks", "sst2", "--heldout", "ag_news"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "o" / "results.json").read_text())["summary"]
    held = summary["bar"]["heldout"]
    assert held["groups"] and all(g.startswith("ag_news/") for g in held["groups"])
    assert all(g.startswith("sst2/") for g in summary["eligible_groups"]) and summary["bar_tasks"] == ["sst2"]
    assert "2. Held-out tasks never trained on" in res.output and len(held["oracle_minus_untrained"]) == 3
    res = runner.invoke(app, base + ["--tasks", "ag_news", "--heldout", "ag_news"])  # held-out tasks alone
    assert res.exit_code == 0 and "2. Held-out tasks" in res.output and "1. Trained tasks" not in res.output
    res = runner.invoke(app, base + ["--heldout", "nope"])
    assert res.exit_code == 2 and "--heldout: nope not in the data" in res.output
