"""The built-in offline mixture: schema, ranges, balance, splits, determinism and the cache."""

from __future__ import annotations

import re
from collections import Counter

import datasets
import pytest

from activation_oracles.data import COLUMNS, MixtureConfig, build_mixture, load_mixture, mixture_info
from activation_oracles.data.classification import YES_NO_PREFIX

LAYERS = [7, 15, 22]  # 25/50/75 % of SmolLM2-135M's 30 blocks


def small_config(seed: int = 0) -> MixtureConfig:
    return MixtureConfig.builtin(scale=0.2, seed=seed)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("mix") / "builtin"
    dd = build_mixture(small_config(), out_dir=out, log=lambda m: None)
    return out, dd


@pytest.fixture(scope="module")
def rows(built):
    _, dd = built
    return {s: dd[s].to_list() for s in ("train", "test")}



def test_schema_and_splits(built):
    out, dd = built
    assert isinstance(dd, datasets.DatasetDict) and set(dd) == {"train", "test"}
    again = datasets.load_from_disk(str(out))
    assert list(again["train"].column_names) == list(COLUMNS)
    for c in ("context_input_ids", "context_positions", "input_ids", "labels", "positions"):
        assert again["train"].features[c].feature.dtype == "int32"
    assert set(again["train"]["split"]) == {"train"} and set(again["test"]["split"]) == {"test"}
    meta = mixture_info(out)
    assert meta["layers"] == LAYERS and meta["counts"]["train"]["spqa"] == 600
    assert set(again["train"]["task"]) == {"spqa", "classification", "context_prediction"}


def test_oracle_side_is_consistent(rows, smol_tokenizer):
    pid = smol_tokenizer.encode(" ?", add_special_tokens=False)[0]
    for r in rows["train"][:500]:
        ids, labels, pos = r["input_ids"], r["labels"], r["positions"]
        assert len(pos) == len(r["context_positions"]) >= 1
        assert all(ids[p] == pid for p in pos) and pos == list(range(pos[0], pos[0] + len(pos)))
        answer = [t for t, l in zip(ids, labels) if l != -100]
        assert answer and r["target"] in smol_tokenizer.decode(ids)
        assert f"Layer: {r['layer']}\n" in smol_tokenizer.decode(ids)


def test_layers_in_thirds(rows):
    c = Counter(r["layer"] for r in rows["train"])
    assert set(c) == set(LAYERS)
    n = sum(c.values())
    assert all(abs(v / n - 1 / 3) < 0.05 for v in c.values())
    # classification: every context once per layer (only the last context of a stream may be cut short)
    per = {}
    for r in rows["train"]:
        if r["task"] == "classification":
            per.setdefault((r["dataset"], r["variant"]), Counter())[r["layer"]] += 1
    for key, c in per.items():
        assert set(c) == set(LAYERS) and max(c.values()) - min(c.values()) <= 2, (key, c)


def test_classification_offsets_and_balance(rows):
    for split in ("train", "test"):
        cls = [r for r in rows[split] if r["task"] == "classification"]
        assert cls
        for r in cls:
            assert r["question"].startswith(YES_NO_PREFIX) and r["target"] in ("Yes", "No")
            last = len(r["context_input_ids"]) - 7  # tail: <|im_end|> \n <|im_start|> ass istant \n
            pos = r["context_positions"]
            end_offset = last - pos[-1] + 1  # 1 = the last content token
            assert 1 <= end_offset <= 5, r
            if r["variant"] == "single":
                assert len(pos) == 1
            else:
                assert r["variant"] == "multi" and 1 <= len(pos) <= 50
        yes = sum(r["target"] == "Yes" for r in cls) / len(cls)
        assert 0.4 < yes < 0.6
    v = Counter(r["variant"] for r in rows["train"] if r["task"] == "classification")
    assert abs(v["single"] / v["multi"] - 2) < 0.05
    multi_k = [len(r["context_positions"]) for r in rows["train"] if r["variant"] == "multi"]
    assert max(multi_k) > 5  # windows really vary


def test_test_contexts_never_in_train(rows):
    key = lambda r: (r["dataset"], tuple(r["context_input_ids"]))  # noqa: E731
    train = {key(r) for r in rows["train"] if r["task"] == "classification"}
    test = {key(r) for r in rows["test"] if r["task"] == "classification"}
    assert test and not (train & test)
    sp_train = {tuple(r["context_input_ids"][:40]) for r in rows["train"] if r["task"] == "spqa"}
    sp_test = {tuple(r["context_input_ids"][:40]) for r in rows["test"] if r["task"] == "spqa"}
    assert sp_test and not (sp_train & sp_test)
    # single and multi test sets are both there, per task
    per = Counter((r["dataset"], r["variant"]) for r in rows["test"] if r["task"] == "classification")
    assert all(per[(d, "single")] == per[(d, "multi")] > 0 for d, _ in per)
    assert {"ag_news", "language_identification", "singular_plural"} <= {d for d, _ in per}
    assert not {"ag_news", "language_identification", "singular_plural"} & {
        r["dataset"] for r in rows["train"] if r["task"] == "classification"}


def test_context_prediction_ranges_and_no_overlap(rows, smol_tokenizer):
    cp = [r for r in rows["train"] if r["task"] == "context_prediction"]
    assert {r["variant"] for r in cp} == {"past", "future"}
    ks, js = [], []
    for r in cp:
        pos, ctx = r["context_positions"], r["context_input_ids"]
        j = int(re.search(r"(?:previous|next) (\d+) tokens", r["question"]).group(1))
        ks.append(len(pos))
        js.append(j)
        assert pos == list(range(pos[0], pos[0] + len(pos)))
        assert len(ctx) == pos[-1] + 1  # cut after the last source position: future tokens unseen
        if r["variant"] == "past":
            assert pos[0] >= j
            assert r["question"] == f"Can you predict the previous {j} tokens that came before this?"
            assert smol_tokenizer.decode(ctx[pos[0] - j : pos[0]], skip_special_tokens=True) == r["target"]
        else:
            assert r["question"] == f"Can you predict the next {j} tokens that come after this?"
    assert min(ks) == 1 and max(ks) <= 50 and max(ks) > 20
    assert min(js) >= 1 and max(js) <= 20 and max(js) > 15
    single = sum(k == 1 for k in ks) / len(ks)
    assert 0.45 < single < 0.65  # half single, plus multi draws of K = 1
    past = sum(r["variant"] == "past" for r in cp) / len(cp)
    assert 0.4 < past < 0.6


def test_spqa_positions(rows, smol_tokenizer):
    sp = [r for r in rows["train"] if r["task"] == "spqa"]
    assert {r["variant"] for r in sp} == {"all", "window"}
    for r in sp:
        ctx, pos = r["context_input_ids"], r["context_positions"]
        text_before = smol_tokenizer.decode(ctx[: pos[0]])
        assert text_before.count("<|im_start|>") >= 2  # the system turn is before every source position
        last = len(ctx) - 3
        if r["variant"] == "window":
            assert 1 <= len(pos) <= 3 and 1 <= last - pos[-1] + 1 <= 10
        else:
            assert pos[-1] == last


def test_deterministic_and_seeded(built, tmp_path):
    out, dd = built
    again = build_mixture(small_config(), out_dir=tmp_path / "again", log=lambda m: None)
    for s in ("train", "test"):
        assert again[s].data.table.equals(dd[s].data.table)
    other = build_mixture(small_config(seed=1), out_dir=tmp_path / "seed1", log=lambda m: None)
    assert not other["train"].data.table.equals(dd["train"].data.table)


def test_train_order_is_mixed(rows):
    first = [r["task"] for r in rows["train"][:300]]
    assert len(set(first)) == 3


def test_cache_reused_and_stale_rebuilt(built, tmp_path):
    out = tmp_path / "c"
    logs = []
    build_mixture(small_config(), out_dir=out, log=logs.append)
    build_mixture(small_config(), out_dir=out, log=logs.append)
    assert any(m.startswith("reusing") for m in logs)
    key = mixture_info(out)["key"]
    cfg = small_config()
    cfg.classification.count = 120
    logs.clear()
    dd = build_mixture(cfg, out_dir=out, log=logs.append)
    assert any("rebuilding" in m for m in logs) and mixture_info(out)["key"] != key
    assert Counter(dd["train"]["dataset"])["sst2"] == 120
    assert load_mixture(out)["train"].num_rows == dd["train"].num_rows


def test_cli_build_and_inspect(tmp_path):
    from typer.testing import CliRunner

    from activation_oracles.data.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["build", "--out", str(out), "--scale", "0.05", "-q"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["inspect", str(out)])
    assert res.exit_code == 0, res.output
    for s in ("per_task_variant", "per_layer", "K:", "J:", "⟨?⟩", "[[", "<<ANSWER>>"):
        assert s in res.output
    assert res.output.count("--- train |") == 3


def test_ask_classes_restricts_questions_and_balances_answers():
    from activation_oracles.data import DataError
    from activation_oracles.data.classification import load_task, restrict_classes

    task = load_task("tense", "builtin")
    assert sorted(task.templates) == ["future", "past", "present"]
    past = restrict_classes(task, ["past"], seed=0)
    assert list(past.templates) == ["past"]
    has = [bool(ys & {"past"}) for _, ys in past.items]
    assert sum(has) == len(has) - sum(has) == 160  # 160 past contexts, 160 of the 320 others
    assert {t for t, _ in past.items} <= {t for t, _ in task.items}
    with pytest.raises(DataError, match=r"ask_classes.tense: unknown class\(es\) \['perfect'\]"):
        restrict_classes(task, ["perfect"])
    with pytest.raises(DataError, match="ask_classes.sst2"):
        MixtureConfig.from_dict({"classification": {"ask_classes": {"sst2": "positive"}}}).validate()


def test_ask_classes_in_a_built_mixture(tmp_path):
    cfg = MixtureConfig.builtin(scale=0.3)
    cfg.classification.train_tasks, cfg.classification.eval_tasks = ["sst2"], []
    cfg.classification.ask_classes = {"sst2": ["positive"]}
    cfg.spqa.count = cfg.spqa.test_count = cfg.context_prediction.count = cfg.context_prediction.test_count = 0
    dd = build_mixture(cfg, out_dir=tmp_path / "m")
    for split in ("train", "test"):
        rows = [r for r in dd[split] if r["task"] == "classification"]
        assert rows and {r["label"] for r in rows} == {"positive"}
        assert all("negative" not in r["question"] for r in rows)
        yes = sum(r["target"] == "Yes" for r in rows)
        assert len(rows) >= 90 and 0.3 < yes / len(rows) < 0.7, (split, yes, len(rows))


def test_full_variant_reads_what_ask_reads(tmp_path, smol_tokenizer):
    """variant_weights adds whole-prompt inputs: the context is the text exactly as `Oracle.ask` tokenizes
    it (chat template with generation prompt) and every one of its positions is read."""
    from activation_oracles.prompt import chat_ids

    cfg = MixtureConfig.builtin(scale=0.05)
    cfg.classification.train_tasks, cfg.classification.eval_tasks = ["sst2", "tense"], ["ag_news"]
    cfg.classification.variant_weights = {"single": 1, "multi": 0, "full": 3}
    cfg.spqa.count = cfg.spqa.test_count = cfg.context_prediction.count = cfg.context_prediction.test_count = 0
    dd = build_mixture(cfg, out_dir=tmp_path / "m", log=lambda m: None)
    train = [r for r in dd["train"].to_list() if r["task"] == "classification"]
    v = Counter(r["variant"] for r in train)
    assert set(v) == {"single", "full"} and abs(v["full"] / (v["full"] + v["single"]) - 0.75) < 0.01
    # every variant named gets a test set (weight 0 included), eval-only tasks too
    per = Counter((r["dataset"], r["variant"]) for r in dd["test"].to_list())
    assert {k for k in per} == {(d, x) for d in ("sst2", "tense", "ag_news") for x in ("single", "multi", "full")}
    import activation_oracles.data.builtin as b

    texts = {t for t, _ in b.classification_items("sst2")} | {t for t, _ in b.classification_items("tense")}
    for r in [r for r in train if r["variant"] == "full"][:50]:
        ids = r["context_input_ids"]
        assert r["context_positions"] == list(range(len(ids)))
        text = next(t for t in texts if smol_tokenizer.decode(ids).find(t) >= 0)
        assert ids == chat_ids(smol_tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)


def test_variant_weights_errors():
    from activation_oracles.data import DataError

    for bad in ({"single": 1, "whole": 1}, {"single": 0}, {"single": -1, "full": 2}):
        cfg = MixtureConfig.builtin()
        cfg.classification.variant_weights = bad
        with pytest.raises(DataError, match="classification.variant_weights"):
            cfg.validate()
