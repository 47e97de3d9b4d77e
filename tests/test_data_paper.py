"""The paper preset (`ao data build --preset paper`) read from its real sources, offline: a hub mirror laid
out as the hub (real rows of ../shared/data in each dataset's hub schema) and a reference-style datasets/
folder, built in tmp dirs by tests/paper_mirror.py."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from activation_oracles.data import DataError, MixtureConfig, build_mixture, load_tokenizer
from activation_oracles.data import classification as cls_mod
from activation_oracles.data import hub
from activation_oracles.data.cli import app
from activation_oracles.data.context_prediction import StreamSource

from paper_mirror import CARD_ROW, HUB_IDS, build_mirror, build_reference


@pytest.fixture(scope="module")
def sources(shared_data, tmp_path_factory):
    import datasets

    root = tmp_path_factory.mktemp("paper")
    old = datasets.config.HF_DATASETS_CACHE
    datasets.config.HF_DATASETS_CACHE = root / "hf-cache"  # keep the user's cache clean
    yield build_reference(shared_data, root / "activation_oracles"), build_mirror(shared_data, root / "mirror")
    datasets.config.HF_DATASETS_CACHE = old


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("smollm2-135m")


def _linked_copy(src: Path, dst: Path, drop: str) -> Path:
    """dst mirrors src file by file (symlinks) except the path `drop` (relative)."""
    for p in src.rglob("*"):
        rel = p.relative_to(src)
        if p.is_dir() or str(rel).startswith(drop):
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(p.resolve(), dst / rel)
    return dst


def test_packaged_paper_config_is_the_papers():
    cfg = MixtureConfig.paper()
    assert (cfg.spqa.count, cfg.classification.count, cfg.context_prediction.count) == (64_000, 48_000, 600_000)
    assert (cfg.spqa.test_count, cfg.classification.test_count, cfg.context_prediction.test_count) == (1000, 250, 1000)
    assert cfg.spqa.source == "ref:latentqa_datasets/train" and "system" not in cfg.spqa.files
    assert {t for t, s in cfg.classification.sources.items() if s == "hub"} == {
        "sst2", "snli", "md_gender", "language_identification"}
    assert [s["path"] for s in cfg.context_prediction.sources] == ["hf:HuggingFaceFW/fineweb", "hf:lmsys/lmsys-chat-1m"]
    small = MixtureConfig.paper(scale=0.001)
    assert (small.spqa.count, small.classification.count, small.context_prediction.count) == (64, 48, 600)
    assert (small.spqa.test_count, small.classification.test_count, small.context_prediction.test_count) == (1, 1, 1)
    with pytest.raises(DataError, match=r"git clone https://github.com/adamkarvonen/activation_oracles.*--reference-data"):
        cfg.resolved()  # no reference data given


def test_paper_preset_builds_through_the_mirror(sources, tmp_path):
    ref, mirror = sources
    out = tmp_path / "mix"
    r = CliRunner().invoke(app, ["build", "--preset", "paper", "--model", "smollm2-135m", "--reference-data", str(ref),
                                 "--hub-mirror", str(mirror), "--scale", "0.001", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    meta = json.loads((out / "ao_data.json").read_text())
    train, test = meta["counts"]["train"], meta["counts"]["test"]
    # counts and proportions as configured: 64 + 7 x 48 + 600 train, one test example per family/variant
    assert train.pop("spqa") == 64 and train.pop("context_prediction") == 600
    assert train == {f"classification/{t}": 48 for t in cls_mod.TRAIN_TASKS}
    assert test["spqa"] == 1 and test["context_prediction"] == 1
    assert {k: v for k, v in test.items() if k.startswith("classification/")} == {
        f"classification/{t}": 2 for t in cls_mod.TRAIN_TASKS + cls_mod.EVAL_TASKS}
    # every family and task names where it came from: the mirror for hub ids, the reference folder otherwise
    src = meta["sources"]
    for task in ("sst2", "snli", "md_gender", "language_identification"):
        assert src[f"classification/{task}"]["source"].startswith(f"hub:{cls_mod.HUB_READS[task].id}")
        assert src[f"classification/{task}"]["source"].endswith(f"from mirror {mirror}")
    for task in ("geometry_of_truth", "relations", "ner", "tense", "ag_news", "singular_plural"):
        assert src[f"classification/{task}"]["source"] == str(ref / "classification_datasets")
    assert src["spqa"]["source"] == str(ref / "latentqa_datasets" / "train")
    assert src["context_prediction/fineweb"]["source"].startswith("hub:HuggingFaceFW/fineweb train (streamed)")
    assert src["context_prediction/lmsys-chat-1m"]["source"].startswith("hub:lmsys/lmsys-chat-1m train (streamed)")

    r = CliRunner().invoke(app, ["inspect", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.output)
    assert summary["train"]["examples"] == 1000 and summary["sources"] == src
    tokens = summary["train"]["tokens"]
    assert tokens["total"] == tokens["context"] + tokens["oracle"] > 1000 * 20

    import datasets

    rows = datasets.load_from_disk(str(out))["train"]
    tok = load_tokenizer("smollm2-135m")[0]
    cp = Counter(d for t, d in zip(rows["task"], rows["dataset"]) if t == "context_prediction")
    assert set(cp) == {"fineweb", "lmsys-chat-1m"} and 0.4 < cp["fineweb"] / 600 < 0.6  # weights 0.5 / 0.5
    answers = Counter(a for t, a in zip(rows["task"], rows["target"]) if t == "classification")
    assert 0.4 < answers["Yes"] / sum(answers.values()) < 0.6
    # rows come from the mirror's rows: sst2 contexts are mirror sentences, fineweb contexts mirror documents
    import pyarrow.parquet as pq

    sst2 = {s.strip() for s in pq.read_table(mirror / "stanfordnlp/sst2/data/train-00000-of-00001.parquet")
            .column("sentence").to_pylist()}
    sst2 |= {s.strip() for s in pq.read_table(mirror / "stanfordnlp/sst2/data/validation-00000-of-00001.parquet")
             .column("sentence").to_pylist()}
    web = "\n".join(pq.read_table(mirror / "HuggingFaceFW/fineweb/data/CC-MAIN-2013-20/000_00000.parquet")
                    .column("text").to_pylist())
    seen = Counter()
    for r in rows.select(range(len(rows))):
        text = tok.decode(r["context_input_ids"], skip_special_tokens=True)
        if r["dataset"] == "sst2":
            assert any(s in text for s in sst2 if s), text
            seen["sst2"] += 1
        elif r["dataset"] == "fineweb" and len(r["context_input_ids"]) > 20:
            assert text.strip()[-60:] in web
            seen["fineweb"] += 1
    assert seen["sst2"] == 48 and seen["fineweb"] > 100


def test_removing_one_source_stops_the_build_naming_it(sources, tmp_path, tok):
    ref, mirror = sources
    no_snli = _linked_copy(mirror, tmp_path / "m", "stanfordnlp/snli")
    r = CliRunner().invoke(app, ["build", "--preset", "paper", "--reference-data", str(ref), "--hub-mirror",
                                 str(no_snli), "--scale", "0.001", "--out", str(tmp_path / "o1"), "-q"])
    assert r.exit_code == 2
    err = " ".join(r.output.split())
    assert "classification task 'snli': stanfordnlp/snli: not in the hub mirror" in err
    assert f"hf download stanfordnlp/snli --repo-type dataset --local-dir {no_snli / 'stanfordnlp/snli'}" in err
    assert not (tmp_path / "o1").exists()

    no_ner = _linked_copy(ref, tmp_path / "r" / "datasets", "classification_datasets/ner")
    cfg = MixtureConfig.paper(no_ner, hub_mirror=mirror, scale=0.001)
    with pytest.raises(DataError) as e:
        build_mixture(cfg, tok[0], tmp_path / "o2", n_layers=tok[1], log=lambda m: None)
    msg = str(e.value)
    assert msg.startswith("classification task 'ner' (source ") and "ner/ner.csv: file not found" in msg
    assert "--reference-data activation_oracles/datasets" in msg and not (tmp_path / "o2").exists()

    no_chat = _linked_copy(mirror, tmp_path / "m2", "lmsys")
    with pytest.raises(DataError, match=r"context_prediction source hf:lmsys/lmsys-chat-1m: lmsys/lmsys-chat-1m: not "
                                        r"in the hub mirror.*--chat-source"):
        build_mixture(MixtureConfig.paper(ref, hub_mirror=no_chat, scale=0.001), tok[0], tmp_path / "o3",
                      n_layers=tok[1], log=lambda m: None)


def test_hub_readers_use_the_hub_label_codes(sources):
    ref, mirror = sources
    rng = np.random.default_rng(0)
    sst2 = dict(cls_mod.load_task("sst2", "hub", mirror=mirror).items)
    assert len(sst2) <= 480  # train + validation, not the unlabelled test split (label -1)
    assert sst2["hide new secretions from the parental units"] == {"negative"}  # 0 = negative
    snli = cls_mod.load_task("snli", "hub", mirror=mirror)
    import pyarrow.parquet as pq

    labels = Counter(pq.read_table(mirror / "stanfordnlp/snli/plain_text/train-00000-of-00001.parquet")
                     .column("label").to_pylist())
    assert -1 in labels and 1 in labels  # no-gold and neutral rows exist and are dropped
    assert len(snli.items) <= labels[0] + labels[2] and Counter(bool(y) for _, y in snli.items)[True] <= labels[0]
    md = cls_mod.load_task("md_gender", "hub", mirror=mirror)
    by = Counter(c for _, ys in md.items for c in ys)
    assert by["female"] == by["male"] > 100  # male texts cut to the number of female ones, as the reference
    female = {"text": "She was an English novelist.", "title": "Jane Austen", "persona": "", "gender": 1}
    items = cls_mod._hub_items("md_gender", [CARD_ROW, female, {**female, "gender": 0}], rng)
    assert sorted(t for t, _ in items) == [f"{CARD_ROW['text']}\n\nThis text is about Max Landis.",
                                           "She was an English novelist.\n\nThis text is about Jane Austen."]
    news = cls_mod.load_task("ag_news", "hub", mirror=mirror)  # label 0 World .. 3 Sci/Tech
    first = pq.read_table(mirror / "fancyzhx/ag_news/data/test-00000-of-00001.parquet").slice(0, 1).to_pylist()[0]
    assert dict(news.items)[first["text"]] == {cls_mod.AG_NEWS[str(first["label"] + 1)]}
    assert {c for _, ys in news.items for c in ys} == set(cls_mod.AG_NEWS.values())
    lang = cls_mod.load_task("language_identification", "hub", mirror=mirror)
    assert {"Welsh", "Icelandic", "Old English"} <= {c for _, ys in lang.items for c in ys}
    # the reference's paraphrases ask the hub tasks too when classification.questions names them
    q = cls_mod.load_task("sst2", "hub", mirror=mirror, questions=ref / "classification_datasets/paraphrases/question.json")
    assert "This review is positive. Do you agree?" in q.templates["positive"]


def test_context_prediction_streams_lazily_with_disjoint_splits(sources, tok):
    _, mirror = sources
    spec = hub.HubRead("HuggingFaceFW/fineweb", streaming=True)
    src = StreamSource("fineweb", 1.0, spec, tokenizer=tok[0], max_tokens=64, test_fraction=0.2, seed=0, mirror=mirror)
    train = src.docs("train", recycle=False)
    first = [next(train).tolist() for _ in range(5)]
    assert src.rows_read <= 256 / 0.8 + 60 < 472  # one tokenizer batch ahead, not the whole stream
    test, it = [], src.docs("test", recycle=False)
    with pytest.raises(DataError, match="the stream ended after"):
        while True:
            test.append(next(it).tolist())
    assert 472 * 0.1 < len(test) < 472 * 0.3 and not any(d in test for d in first)


def test_gated_chat_dataset_names_the_fix(sources, tok, monkeypatch, tmp_path):
    """No token for lmsys-chat-1m: the hub's refusal (simulated as `datasets` raises it) stops the build with
    the dataset, its access page, HF_TOKEN and --chat-source."""
    import datasets
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError

    ref, mirror = sources
    real = datasets.load_dataset

    def hub_or_gated(path, *a, **kw):
        if path == "lmsys/lmsys-chat-1m":
            cause = GatedRepoError.__new__(GatedRepoError)
            Exception.__init__(cause, "401 Client Error. Cannot access gated repo for url https://huggingface.co/...")
            try:
                raise cause
            except GatedRepoError as c:
                raise DatasetNotFoundError(f"Dataset '{path}' is a gated dataset on the Hub. You must be "
                                           "authenticated to access it.") from c
        kw.pop("revision", None)
        return real(str(mirror / path), *a, **kw)  # the other hub datasets, served by the mirror

    monkeypatch.setattr(datasets, "load_dataset", hub_or_gated)
    with pytest.raises(DataError) as e:
        build_mixture(MixtureConfig.paper(ref, scale=0.001), tok[0], tmp_path / "o", n_layers=tok[1], log=lambda m: None)
    msg = str(e.value)
    for part in ("lmsys/lmsys-chat-1m is a gated dataset", "https://huggingface.co/datasets/lmsys/lmsys-chat-1m",
                 "HF_TOKEN", "--chat-source"):
        assert part in msg, msg


def test_offline_hub_read_names_the_dataset_and_the_mirror(monkeypatch):
    import datasets

    def offline(path, *a, **kw):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"stanfordnlp/sst2: cannot reach the Hugging Face hub.*--hub-mirror DIR.*"
                                        r"DIR/stanfordnlp/sst2/"):
        cls_mod.load_task("sst2", "hub")


def test_text_and_chat_source_options(shared_data, sources, tok):
    cfg = MixtureConfig.paper().with_cp_source("chat", "HuggingFaceH4/ultrachat_200k:train_sft")
    chat = cfg.context_prediction.sources[1]
    assert chat["path"] == "hf:HuggingFaceH4/ultrachat_200k" and chat["split"] == "train_sft" and chat["weight"] == 0.5
    local = shared_data / "context_prediction" / "chat.jsonl.gz"
    assert MixtureConfig.paper(chat_source=str(local)).context_prediction.sources[1]["path"] == str(local)
    with pytest.raises(DataError, match="--chat-source"):
        MixtureConfig.paper().with_cp_source("chat", "not-a-dataset")
    assert set(HUB_IDS) >= {cls_mod.HUB_READS[t].id for t in ("sst2", "snli", "md_gender", "language_identification")}
    # a config of the text corpus (FineWeb's sample-10BT) is read through its README's configs
    text = MixtureConfig.paper(text_source="HuggingFaceFW/fineweb@sample-10BT").context_prediction.sources[0]
    assert (text["path"], text["subset"]) == ("hf:HuggingFaceFW/fineweb", "sample-10BT")
    from activation_oracles.data.context_prediction import hub_read

    src = StreamSource("fineweb", 1.0, hub_read(text), tokenizer=tok[0], max_tokens=512, test_fraction=0.0, seed=0,
                       mirror=sources[1])
    with pytest.raises(DataError, match="ended after 40 train documents"):
        list(src.docs("train", recycle=False))
