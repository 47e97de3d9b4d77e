"""Offline stand-ins for the paper's sources, built in a test's tmp dir from real rows of ../shared/data.

* a hub mirror: MIRROR/<org>/<name>/ with each dataset's files laid out as on the hub and in the hub's
  schema (columns, dtypes, ClassLabel encodings; README.md `configs:` where the hub has one);
* a reference-style datasets/ folder: the file names and formats the reference repository reads.

The rows are real public data (see ../shared/data/PROVENANCE.md); where the hub schema has a column the
local copy lacks (md_gender's `title`, FineWeb's crawl metadata, lmsys' moderation), it is filled with
a neutral value, never with invented text.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
from pathlib import Path

# The hub ids the paper preset reads, and the reference files it reads.
HUB_IDS = ("stanfordnlp/sst2", "stanfordnlp/snli", "facebook/md_gender_bias", "FrancophonIA/WiLI-2018",
           "HuggingFaceFW/fineweb", "lmsys/lmsys-chat-1m")
GOT = ("sp_en_trans", "cities", "smaller_than", "larger_than", "companies_true_false")
WILI = {"ang": "Old English", "ara": "Arabic", "cym": "Welsh", "dan": "Danish", "deu": "German", "eng": "English",
        "fao": "Faroese", "isl": "Icelandic", "nob": "Norwegian", "swe": "Swedish"}
# A real funpedia row, as the md_gender_bias dataset card shows it (the local copy has no titles).
CARD_ROW = {"text": "Max Landis is a comic book writer who wrote Chronicle, American Ultra, and Victor Frankestein.",
            "title": "Max Landis", "persona": "Humorous", "gender": 2}


def _jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _csv(path: Path, **kw) -> list[dict]:
    with open(path, encoding=kw.pop("encoding", "utf-8"), newline="") as f:
        return list(csv.DictReader(f, **kw))


def _parquet(path: Path, rows: dict, features) -> None:
    import datasets

    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))


def _readme(path: Path, configs: list[tuple[str, dict[str, str]]], extra: str = "") -> None:
    lines = ["---", "configs:"]
    for name, files in configs:
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {pattern}" for split, pattern in files.items()]
    path.mkdir(parents=True, exist_ok=True)
    (path / "README.md").write_text("\n".join(lines) + "\n" + extra + "---\n")


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(src, dst)


def build_mirror(shared: Path, mirror: Path, n: int = 400) -> Path:
    """MIRROR/<org>/<name>/ for the paper's hub datasets, `n` rows per main split (more for md_gender)."""
    import datasets as ds

    cls = shared / "classification"
    s, i32 = ds.Value("string"), ds.Value("int32")

    # stanfordnlp/sst2: data/{split}-00000-of-00001.parquet; idx, sentence, label (0 negative, 1 positive; test -1)
    sst = _csv(cls / "sst2" / "train.tsv", delimiter="\t", quoting=csv.QUOTE_NONE)
    f = ds.Features({"idx": i32, "sentence": s, "label": ds.ClassLabel(names=["negative", "positive"])})
    parts = {"train": sst[:n], "validation": sst[n: n + n // 5], "test": sst[n + n // 5: n + n // 5 + 20]}
    for split, rows in parts.items():
        _parquet(mirror / "stanfordnlp/sst2/data" / f"{split}-00000-of-00001.parquet",
                 {"idx": list(range(len(rows))), "sentence": [r["sentence"] for r in rows],
                  "label": [-1 if split == "test" else int(r["label"]) for r in rows]}, f)
    _readme(mirror / "stanfordnlp/sst2", [("default", {k: f"data/{k}-*" for k in parts})])

    # stanfordnlp/snli: plain_text/{split}-00000-of-00001.parquet; premise, hypothesis, label
    # (0 entailment, 1 neutral, 2 contradiction, -1 no gold label)
    code = {"entailment": 0, "neutral": 1, "contradiction": 2, "-": -1}
    snli = _jsonl(cls / "snli" / "snli_1.0_dev_test_subset.jsonl.gz")
    f = ds.Features({"premise": s, "hypothesis": s,
                     "label": ds.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    parts = {"train": [r for r in snli if r["split"] == "dev"], "validation": [r for r in snli if r["split"] == "test"][:100],
             "test": [r for r in snli if r["split"] == "test"][100:200]}
    for split, rows in parts.items():
        _parquet(mirror / "stanfordnlp/snli/plain_text" / f"{split}-00000-of-00001.parquet",
                 {"premise": [r["premise"] for r in rows], "hypothesis": [r["hypothesis"] for r in rows],
                  "label": [code[r["gold_label"]] for r in rows]}, f)
    _readme(mirror / "stanfordnlp/snli", [("plain_text", {k: f"plain_text/{k}-*" for k in parts})])

    # facebook/md_gender_bias, parquet export (refs/convert/parquet): funpedia/{split}/0000.parquet;
    # text, title, persona, gender (0 gender-neutral, 1 female, 2 male). No README on that branch.
    fun = _csv(cls / "md_gender" / "funpedia.csv")[: 6 * n]
    f = ds.Features({"text": s, "title": s, "persona": s,
                     "gender": ds.ClassLabel(names=["gender-neutral", "female", "male"])})
    thirds = [fun[: len(fun) * 3 // 5], fun[len(fun) * 3 // 5: len(fun) * 4 // 5], fun[len(fun) * 4 // 5:]]
    for split, rows in zip(("train", "validation", "test"), thirds):
        rows = [{"text": r["text"], "title": "", "persona": "", "gender": int(r["label"])} for r in rows]
        if split == "train":
            rows.append(CARD_ROW)
        _parquet(mirror / "facebook/md_gender_bias/funpedia" / split / "0000.parquet",
                 {k: [r[k] for r in rows] for k in ("text", "title", "persona", "gender")}, f)

    # fancyzhx/ag_news (not the paper's source: it reads datasets/ag_news/ag_news.csv):
    # data/{train,test}-00000-of-00001.parquet; text = title + " " + description, label 0-3
    news = _csv(cls / "ag_news" / "ag_news.csv")[:n]
    f = ds.Features({"text": s, "label": ds.ClassLabel(names=["World", "Sports", "Business", "Sci/Tech"])})
    for split, rows in (("train", news[: n // 2]), ("test", news[n // 2:])):
        _parquet(mirror / "fancyzhx/ag_news/data" / f"{split}-00000-of-00001.parquet",
                 {"text": [f"{r['Title']} {r['Description']}" for r in rows],
                  "label": [int(r["Class Index"]) - 1 for r in rows]}, f)
    _readme(mirror / "fancyzhx/ag_news", [("default", {"train": "data/train-*", "test": "data/test-*"})])

    # FrancophonIA/WiLI-2018: train.csv with Text,language (language names); a README without configs
    wili = _jsonl(cls / "language_identification" / "wili2018_10lang_100char.jsonl.gz")[: 2 * n]
    d = mirror / "FrancophonIA/WiLI-2018"
    d.mkdir(parents=True)
    with open(d / "train.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["Text", "language"])
        w.writerows([r["Text"].strip(), WILI[r["language"]]] for r in wili)
    (d / "README.md").write_text("---\nlicense: odbl\ntask_categories:\n- text-classification\n---\n# WiLI-2018\n")

    # HuggingFaceFW/fineweb: data/<dump>/000_00000.parquet with the crawl metadata (configs default = data/*/*),
    # and a few documents under sample/10BT/ (config sample-10BT)
    web = _jsonl(shared / "context_prediction" / "web_text.jsonl.gz")
    f = ds.Features({"text": s, "id": s, "dump": s, "url": s, "date": s, "file_path": s, "language": s,
                     "language_score": ds.Value("float64"), "token_count": ds.Value("int64")})
    for rel, rows in (("data/CC-MAIN-2013-20/000_00000.parquet", web[:-40]), ("sample/10BT/000_00000.parquet", web[-40:])):
        _parquet(mirror / "HuggingFaceFW/fineweb" / rel,
                 {"text": [r["text"] for r in rows], "id": [f"<urn:local:{i}>" for i in range(len(rows))],
                  "dump": ["CC-MAIN-2013-20"] * len(rows), "url": [""] * len(rows), "date": [""] * len(rows),
                  "file_path": [""] * len(rows), "language": ["en"] * len(rows), "language_score": [1.0] * len(rows),
                  "token_count": [len(r["text"].split()) for r in rows]}, f)
    _readme(mirror / "HuggingFaceFW/fineweb", [("default", {"train": "data/*/*"}),
                                                ("sample-10BT", {"train": "sample/10BT/*"})])

    # lmsys/lmsys-chat-1m: data/train-00000-of-00001.parquet; conversation = [{content, role}], gated
    chat = _jsonl(shared / "context_prediction" / "chat.jsonl.gz")
    cats = ("harassment", "harassment/threatening", "hate", "hate/threatening", "self-harm", "self-harm/instructions",
            "self-harm/intent", "sexual", "sexual/minors", "violence", "violence/graphic")
    moderation = {"categories": {c: ds.Value("bool") for c in cats},
                  "category_scores": {c: ds.Value("float64") for c in cats}, "flagged": ds.Value("bool")}
    unflagged = {"categories": dict.fromkeys(cats, False), "category_scores": dict.fromkeys(cats, 0.0), "flagged": False}
    f = ds.Features({"conversation_id": s, "model": s,
                     "conversation": [{"content": s, "role": s}], "turn": ds.Value("int64"), "language": s,
                     "openai_moderation": [moderation], "redacted": ds.Value("bool")})
    _parquet(mirror / "lmsys/lmsys-chat-1m/data/train-00000-of-00001.parquet",
             {"conversation_id": [str(i) for i in range(len(chat))], "model": [r["source"] for r in chat],
              "conversation": [[{"content": m["content"], "role": m["role"]} for m in r["messages"]] for r in chat],
              "turn": [sum(m["role"] == "user" for m in r["messages"]) for r in chat], "language": ["English"] * len(chat),
              "openai_moderation": [[unflagged] * len(r["messages"]) for r in chat],
              "redacted": [False] * len(chat)}, f)
    _readme(mirror / "lmsys/lmsys-chat-1m", [("default", {"train": "data/train-*"})],
            extra="extra_gated_prompt: 'You agree to the LMSYS-Chat-1M Dataset License Agreement.'\n")
    return mirror


def build_reference(shared: Path, root: Path) -> Path:
    """ROOT/datasets laid out as the reference repository's datasets/ folder; returns ROOT/datasets."""
    cls, ref = shared / "classification", root / "datasets"
    out = ref / "classification_datasets"
    for name in GOT:
        _link(cls / "gmt" / f"{name}.csv", out / "gmt" / f"{name}.csv")
    for p in sorted((cls / "relations").glob("*/*.json")):
        _link(p, out / "relations" / p.parent.name / p.name)
    for rel in ("tense/tense_processed.json", "ner/ner.csv", "ag_news/ag_news.csv",
                "singular_plural/singular_plural.csv", "paraphrases/question.json"):
        _link(cls / rel, out / rel)
    # latentqa_datasets/train: the behaviour files and qa.json (only the eval split is public, see PROVENANCE)
    for name in ("stimulus_completion", "stimulus", "control", "qa"):
        _link(shared / "latentqa" / "eval" / f"{name}.json", ref / "latentqa_datasets" / "train" / f"{name}.json")
    return ref
