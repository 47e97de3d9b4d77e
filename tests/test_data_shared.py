"""Loaders for the local copies of the paper's sources under ../shared/data (skipped when absent)."""

from __future__ import annotations

from collections import Counter

import pytest

from activation_oracles.data import MixtureConfig, build_mixture
from activation_oracles.data.classification import load_task
from activation_oracles.data.context_prediction import read_texts
from activation_oracles.data.spqa import load_latentqa

MIN_ITEMS = {
    "sst2": 60_000, "geometry_of_truth": 6_000, "ner": 8_000, "snli": 1_500, "tense": 5_000, "relations": 6_000,
    "md_gender": 20_000, "ag_news": 7_000, "language_identification": 15_000, "singular_plural": 300,
}


@pytest.mark.parametrize("task", sorted(MIN_ITEMS))
def test_classification_sources_load(shared_data, task):
    t = load_task(task, shared_data / "classification")
    assert len(t.items) >= MIN_ITEMS[task]
    assert all(isinstance(c, str) and c.strip() for c, _ in t.items[:1000])
    # every class has templates, and the data gives both answers
    assert t.templates and all(t.templates.values())
    labels = Counter(frozenset(ys) for _, ys in t.items)
    assert len(labels) >= 2


def test_classification_specifics(shared_data):
    root = shared_data / "classification"
    ner = load_task("ner", root)
    assert any("a person" in ys for _, ys in ner.items) and any("a geographical location" in ys for _, ys in ner.items)
    lang = load_task("language_identification", root)
    langs = {c for _, ys in lang.items for c in ys}
    assert {"English", "French", "Portuguese", "Welsh"} <= langs and "Portugeese" not in langs
    assert set(load_task("md_gender", root).templates) == {"female", "male"}
    assert set(load_task("sst2", root).templates) == {"negative", "positive"}


def test_latentqa_eval_loads(shared_data):
    prompts, pairs = load_latentqa(shared_data / "latentqa" / "eval")
    kinds = Counter(p.source for p in prompts)
    assert set(kinds) == {"system", "stimulus_completion", "stimulus", "control"}
    assert all(p.label in pairs for p in prompts)
    stim = next(p for p in prompts if p.source == "stimulus_completion")
    assert [m["role"] for m in stim.messages] == ["user", "assistant", "user", "assistant"] and stim.masked_turns == 2
    assert next(p for p in prompts if p.source == "system").masked_turns == 1


def test_latentqa_train_system_without_qa(shared_data, tmp_path):
    from activation_oracles.data.io import read_json
    from activation_oracles.data.spqa import item_to_prompt

    path = shared_data / "latentqa" / "train" / "system.json"
    items = read_json(path)
    prompts = [item_to_prompt(it, path, i) for i, it in enumerate(items)]
    assert len(prompts) > 7000 and all(p.source == "system" for p in prompts)
    from activation_oracles.data.schema import DataError

    with pytest.raises(DataError, match="qa.json"):  # the train QA file is missing upstream
        load_latentqa(shared_data / "latentqa" / "train")


def test_context_prediction_sources_load(shared_data):
    web = read_texts(shared_data / "context_prediction" / "web_text.jsonl.gz")
    chat = read_texts(shared_data / "context_prediction" / "chat.jsonl.gz")
    assert len(web) > 400 and all("text" in d for d in web)
    assert len(chat) > 3000 and all("messages" in d for d in chat)


def test_small_mixture_from_shared(shared_data, tmp_path):
    cfg = MixtureConfig.standins(shared_data)
    cfg.spqa.count, cfg.spqa.test_count = 300, 60
    cfg.classification.count, cfg.classification.test_count = 60, 12
    cfg.context_prediction.count, cfg.context_prediction.test_count = 300, 30
    dd = build_mixture(cfg, out_dir=tmp_path / "m", log=lambda m: None)
    tr = dd["train"]
    assert len(tr) == 300 + 7 * 60 + 300
    assert Counter(tr["task"]) == {"spqa": 300, "classification": 420, "context_prediction": 300}
    assert {d for t, d in zip(tr["task"], tr["dataset"]) if t == "context_prediction"} == {"web_text", "chat"}
    te = dd["test"]
    assert Counter(d for t, d in zip(te["task"], te["dataset"]) if t == "classification")["ag_news"] == 24
