"""Classification tasks as yes/no questions about a context (paper section 3.2, 7 train x 48k).

A task is a source of items `(context, yes_classes)` plus question templates per class: asking
about a class in `yes_classes` is answered "Yes", about any other class "No". Binary "is it true"
tasks have a single class and take their Yes/No balance from the data.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from . import builtin, io
from .hub import PARQUET_EXPORT, HubRead, rows as hub_rows
from .schema import NER_TYPES, DataError, Row

YES_NO_PREFIX = "Answer with 'Yes' or 'No' only. "
TRAIN_TASKS = ("geometry_of_truth", "relations", "sst2", "md_gender", "snli", "ner", "tense")
EVAL_TASKS = ("ag_news", "language_identification", "singular_plural")
OPTIONAL_EVAL_TASKS = ("engels",)
# The hub datasets the paper reads (nl_probes/dataset_classes/classification_dataset_manager.py of the
# reference): read when a task's source is "hub". md_gender_bias is a loading-script dataset, which
# `datasets` no longer runs, so its parquet export is read instead.
HUB_READS = {
    "sst2": HubRead("stanfordnlp/sst2", ("train", "validation")),
    "snli": HubRead("stanfordnlp/snli", ("train",)),
    "md_gender": HubRead("facebook/md_gender_bias", ("train", "validation", "test"),
                         # the export's layout (funpedia/train/0000.parquet), and its earlier file names
                         data_files={s: [f"funpedia/{s}/*.parquet", f"funpedia/*-{s}.parquet"]
                                     for s in ("train", "validation", "test")},
                         revision=PARQUET_EXPORT),
    "language_identification": HubRead("FrancophonIA/WiLI-2018", ("train",)),
    "ag_news": HubRead("fancyzhx/ag_news", ("test",)),  # the paper reads its datasets/ag_news/ag_news.csv
}

Item = tuple[str, frozenset]

AG_NEWS = {"1": "world news", "2": "sports", "3": "business", "4": "science and technology"}
LANG_FIX = {"Portugeese": "Portuguese", "Portugese": "Portuguese", "Sweedish": "Swedish"}
WILI = {"ang": "Old English", "ara": "Arabic", "cym": "Welsh", "dan": "Danish", "deu": "German", "eng": "English",
        "fao": "Faroese", "isl": "Icelandic", "nob": "Norwegian", "swe": "Swedish"}
GOT_FILES = ("sp_en_trans", "cities", "smaller_than", "larger_than", "companies_true_false")

# Our own question wording, used when the source has no paraphrases/question.json.
# "{}" is filled with the class name; templates without "{}" belong to the single class "true".
QUESTIONS = {
    "truth": ["Is this statement true?", "Is this true?", "Is the claim here correct?", "Is this factually accurate?",
              "Would you say this statement is correct?", "Is what this says right?", "Is this a true fact?",
              "Does this statement hold?", "Is this claim accurate?", "Is the statement above true?"],
    "sst2": {"positive": ["Is this a positive review?", "Is the sentiment here positive?", "Does the writer like it?",
                          "Is this text expressing a favourable opinion?", "Is the tone of this positive?",
                          "Would you call this review positive?", "Is the author pleased?", "Is this praise?",
                          "Is the sentiment of this text positive?", "Is this positive?",
                          "Does this express a positive sentiment?", "Is the writer happy with it?"],
             "negative": ["Is this a negative review?", "Is the sentiment here negative?", "Does the writer dislike it?",
                          "Is this text expressing an unfavourable opinion?", "Is the tone of this negative?",
                          "Would you call this review negative?", "Is the author displeased?", "Is this a complaint?",
                          "Is the sentiment of this text negative?", "Is this negative?",
                          "Does this express a negative sentiment?", "Is the writer unhappy with it?"]},
    "md_gender": ["Is this sentence about a {} person?", "Is the person described here {}?", "Is the subject {}?",
                  "Does this text talk about someone {}?", "Is this about a {} individual?", "Is the main person {}?", "Is the text about someone {}?", "Would you say the person here is {}?", "Is a {} person the focus of this?"],
    # Class-specific wording, so that "is it about a woman?" is asked as users ask it.
    "md_gender_words": {"female": ["Is this text about a woman?", "Is this sentence about a woman or a girl?",
                                   "Is the person in this text a woman?", "Is this about a woman?"],
                        "male": ["Is this text about a man?", "Is this sentence about a man or a boy?",
                                 "Is the person in this text a man?", "Is this about a man?"]},
    "snli": ["Does the second sentence follow from the first?", "Is the second sentence consistent with the first?",
             "Do these two sentences agree?", "Is the second statement implied by the first?",
             "Does the first sentence support the second?", "Is this follow-up logically consistent?", "Can the second sentence be true if the first is?", "Does the second sentence agree with the first?", "Is the second claim supported by the first?"],
    "ner": ["Does this text mention {}?", "Is {} named in this text?", "Does this sentence refer to {}?",
            "Is there {} in this text?", "Does this passage name {}?", "Is {} mentioned here?", "Does the text contain {}?", "Can you find {} in this text?", "Does this text talk about {}?"],
    "tense": ["Is this sentence in the {} tense?", "Is this written in the {} tense?", "Does this use the {} tense?",
              "Is the verb here in the {} tense?", "Is this statement in the {} tense?", "Is the {} tense used here?", "Is the action in the {} tense?", "Would you say this is in the {} tense?", "Is this phrased in the {} tense?"],
    "ag_news": ["Is this article about {}?", "Does this text cover {}?", "Is the topic of this {}?",
                "Would you file this under {}?", "Is this a piece on {}?", "Is {} the subject of this text?", "Does this piece deal with {}?", "Would you classify this as {}?", "Is this story about {}?"],
    "language_identification": ["Is this text written in {}?", "Is this in {}?", "Is the language of this {}?",
                                "Was this written in {}?", "Is {} the language used here?", "Does this text use {}?", "Is this sentence in {}?", "Would a speaker of {} have written this?", "Is this passage written in {}?"],
    "singular_plural": {"single": ["Does this sentence mention a single person?", "Is this about one person?",
                                   "Is exactly one individual mentioned?", "Is the subject a single person?", "Is only one person involved?", "Is the sentence about one individual?"],
                        "multiple": ["Does this sentence mention several people?", "Is this about more than one person?",
                                     "Are multiple individuals mentioned?", "Is the subject a group of people?", "Is more than one person involved?", "Is the sentence about several individuals?"]},
}
QUESTIONS["geometry_of_truth"] = QUESTIONS["relations"] = QUESTIONS["truth"]


@dataclass
class TaskData:
    """Loaded items of one task and its question templates, class -> list of complete questions."""

    name: str
    items: list[Item]
    templates: dict[str, list[str]]
    origin: str = ""


# Other words for a class name in "{}" templates ("Does this text mention {}?"), as users would say them.
CLASS_WORDS = {"a geographical location": ["a geographical location", "a place", "a location"],
               "an organization": ["an organization", "a company or organization"],
               "a time or date": ["a time or date", "a date or time", "a time"],
               "a person": ["a person", "a person's name", "a named person"]}


def _templates(spec, classes: list[str], extra: dict | None = None) -> dict[str, list[str]]:
    if isinstance(spec, dict):
        out = {c: list(spec[c]) for c in classes if c in spec}
    elif any("{}" in t for t in spec):
        out = {c: [t.format(w) for t in spec for w in CLASS_WORDS.get(c, [c])] for c in classes}
    else:
        out = {"true": list(spec)}
    for c, qs in (extra or {}).items():
        if c in out:
            out[c] += [q for q in qs if q not in out[c]]
    return out


TRUE, NONE = frozenset({"true"}), frozenset()  # shared: a hub task holds hundreds of thousands of items


def _bool_items(pairs) -> list[Item]:
    return [(t, TRUE if y else NONE) for t, y in pairs]


# ----------------------------------------------------------------------------- local loaders
# Each returns items with the class names the templates are filled with.


def _load_got(root: Path) -> list[Item]:
    pairs = []
    for name in GOT_FILES:
        p = root / "gmt" / f"{name}.csv"
        for r in io.read_csv(p, ("statement", "label")):
            pairs.append((r["statement"].strip(), str(r["label"]).strip() in ("1", "True", "true")))
    return _bool_items(pairs)


def _load_relations(root: Path, rng: np.random.Generator) -> list[Item]:
    files = sorted((root / "relations").glob("*/*.json"))
    if not files:
        raise DataError(f"{root / 'relations'}: no relation files (*/*.json)")
    pairs = []
    for p in files:
        d = io.read_json(p)
        for key in ("prompt_templates", "samples"):
            if key not in d:
                raise DataError(f"{p}: missing field {key!r}")
        samples = [s for s in d["samples"] if s.get("subject") and s.get("object")]
        objects = sorted({s["object"] for s in samples})
        if len(objects) < 2:
            continue
        for s in samples:
            template = d["prompt_templates"][0]
            # One true and one corrupted statement per sample keeps the task balanced.
            pairs.append((f"{template.format(s['subject'])} {s['object']}.", True))
            wrong = s["object"]
            while wrong == s["object"]:
                wrong = objects[int(rng.integers(len(objects)))]
            pairs.append((f"{template.format(s['subject'])} {wrong}.", False))
    return _bool_items(pairs)


def _load_sst2(root: Path) -> list[Item]:
    rows = io.read_csv(root / "sst2" / "train.tsv", ("sentence", "label"), delimiter="\t")
    return [(r["sentence"].strip(), frozenset({"positive" if r["label"].strip() == "1" else "negative"})) for r in rows]


def _load_md_gender(root: Path) -> list[Item]:
    names = {"1": "female", "2": "male"}  # 0 = unknown/neutral is dropped
    rows = io.read_csv(root / "md_gender" / "funpedia.csv", ("text", "label"))
    return [(r["text"].strip(), frozenset({names[r["label"].strip()]})) for r in rows if r["label"].strip() in names]


def _load_snli(root: Path) -> list[Item]:
    rows = io.read_jsonl(root / "snli" / "snli_1.0_dev_test_subset.jsonl.gz", ("premise", "hypothesis", "gold_label"))
    keep = {"entailment": True, "contradiction": False}
    return _bool_items((f"{r['premise'].strip()} {r['hypothesis'].strip()}", keep[r["gold_label"]])
                       for r in rows if r["gold_label"] in keep)


def _load_ner(root: Path) -> list[Item]:
    path = root / "ner" / "ner.csv"
    rows = io.read_csv(path, ("Sentence #", "Word", "Tag"), encoding="latin-1")
    items, words, types = [], [], set()

    def flush():
        if words:
            text = " ".join(words)
            for punct in (" ,", " .", " ;", " :", " 's", " !", " ?"):
                text = text.replace(punct, punct[1:])
            items.append((text, frozenset(NER_TYPES[t] for t in types)))

    for r in rows:
        if r["Sentence #"].strip():
            flush()
            words, types = [], set()
        words.append(r["Word"])
        tag = r["Tag"].strip()
        if tag[:2] in ("B-", "I-") and tag[2:] in NER_TYPES:
            types.add(tag[2:])
    flush()
    return items


def _load_tense(root: Path) -> list[Item]:
    p = root / "tense" / "tense_processed.json"
    d = io.read_json(p)
    io.require_fields(p, d, ("sentence", "label"))
    return [(r["sentence"].strip(), frozenset({r["label"]})) for r in d]


def _load_ag_news(root: Path) -> list[Item]:
    rows = io.read_csv(root / "ag_news" / "ag_news.csv", ("Class Index", "Title", "Description"))
    return [(f"{r['Title'].strip()}. {r['Description'].strip()}", frozenset({AG_NEWS[r["Class Index"].strip()]}))
            for r in rows if r["Class Index"].strip() in AG_NEWS]


def _load_language(root: Path) -> list[Item]:
    d = root / "language_identification"
    items = []
    csv_path, wili_path = d / "language_detection_17lang.csv", d / "wili2018_10lang_100char.jsonl.gz"
    if not csv_path.exists() and not wili_path.exists():
        raise DataError(f"{d}: neither {csv_path.name} nor {wili_path.name} found")
    if csv_path.exists():
        for r in io.read_csv(csv_path, ("Text", "language")):
            lang = LANG_FIX.get(r["language"].strip(), r["language"].strip())
            items.append((r["Text"].strip(), frozenset({lang})))
    if wili_path.exists():
        for r in io.read_jsonl(wili_path, ("Text", "language")):
            items.append((r["Text"].strip(), frozenset({WILI.get(r["language"], r["language"])})))
    return items


def _load_singular_plural(root: Path) -> list[Item]:
    rows = io.read_csv(root / "singular_plural" / "singular_plural.csv", ("sentence", "n_subjects"))
    return [(r["sentence"].strip(), frozenset({r["n_subjects"].strip()})) for r in rows]


# Column layouts of Engels-style probing CSVs: ours (text, label) and the reference's (prompt, prompt_len, target).
ENGELS_COLUMNS = (("text", "label"), ("prompt", "target"))


def _positive(value: str) -> bool:
    return value.strip().lower() in ("1", "1.0", "true", "yes")


def _load_engels(root: Path) -> list[Item]:
    """Optional Engels-style probing CSVs: engels/<name>.csv with `text,label` or, as the reference's files,
    `prompt,prompt_len,target` (label/target 1 = the named property)."""
    files = sorted((root / "engels").glob("*.csv"))
    if not files:
        raise DataError(f"{root / 'engels'}: no probing CSVs (engels/*.csv with columns text,label or "
                        "prompt,prompt_len,target)")
    items = []
    for p in files:
        rows = io.read_csv(p, ())
        cols = next((c for c in ENGELS_COLUMNS if all(k in rows[0] for k in c)), None)
        if cols is None:
            raise DataError(f"{p}: found columns {sorted(rows[0])}; an Engels CSV has text,label or "
                            "prompt,prompt_len,target")
        text, label = cols
        items += [(r[text].strip(), frozenset({p.stem}) if _positive(r[label]) else frozenset()) for r in rows]
    return items


LOCAL_LOADERS: dict[str, Callable] = {
    "geometry_of_truth": _load_got, "relations": _load_relations, "sst2": _load_sst2, "md_gender": _load_md_gender,
    "snli": _load_snli, "ner": _load_ner, "tense": _load_tense, "ag_news": _load_ag_news,
    "language_identification": _load_language, "singular_plural": _load_singular_plural, "engels": _load_engels,
}
ALL_TASKS = tuple(LOCAL_LOADERS)


def _class_name(value, names: dict):
    """A ClassLabel column read as an int (the hub's encoding) or as its name."""
    return names.get(value) if not isinstance(value, str) else (value if value in names.values() else None)


def _hub_items(name: str, split_rows, rng) -> list[Item]:
    """Items of one hub task from its rows, with the reference's label codes and filters."""
    if name == "sst2":  # 0 negative, 1 positive (-1: the unlabelled test split)
        names = {0: "negative", 1: "positive"}
        return [(r["sentence"].strip(), frozenset({c})) for r in split_rows
                if (c := _class_name(r["label"], names))]
    if name == "snli":  # 0 entailment (Yes), 2 contradiction (No); 1 neutral and -1 (no gold label) dropped
        names = {0: "entailment", 1: "neutral", 2: "contradiction"}
        return _bool_items((f"{r['premise'].strip()} {r['hypothesis'].strip()}", c == "entailment")
                           for r in split_rows if (c := _class_name(r["label"], names)) in ("entailment", "contradiction"))
    if name == "md_gender":  # funpedia: 0 gender-neutral (dropped), 1 female, 2 male; the title names the person
        names = {0: "gender-neutral", 1: "female", 2: "male"}
        by = {"female": [], "male": []}
        for r in split_rows:
            c = _class_name(r["gender"], names)
            if c in by:
                title = (r.get("title") or "").strip()
                by[c].append((r["text"].strip() + (f"\n\nThis text is about {title}." if title else ""), frozenset({c})))
        # As the reference: male texts (most of funpedia) are cut to the number of female ones.
        keep = sorted(rng.permutation(len(by["male"]))[: len(by["female"])].tolist())
        return by["female"] + [by["male"][i] for i in keep]
    if name == "language_identification":
        return [(r["Text"].strip(), frozenset({LANG_FIX.get(r["language"].strip(), r["language"].strip())}))
                for r in split_rows]
    if name == "ag_news":  # 0 World, 1 Sports, 2 Business, 3 Sci/Tech
        return [(r["text"], frozenset({AG_NEWS[str(r["label"] + 1)]})) for r in split_rows]
    raise DataError(f"task {name!r}: no hub source known; use a directory")


def _load_hub(name: str, rng, mirror=None) -> list[Item]:
    if name not in HUB_READS:
        raise DataError(f"task {name!r}: no hub source known (hub tasks: {', '.join(HUB_READS)}); use a directory")
    spec = HUB_READS[name]
    return _hub_items(name, (r for split in spec.splits for r in hub_rows(spec, split, mirror=mirror)), rng)


def _question_spec(name: str, root: Path | None, questions: str | Path | None = None):
    """Paraphrases from `questions` (a question.json; missing is an error) or else the source's
    paraphrases/question.json when they have the task, else ours."""
    paths = [Path(questions)] if questions else []
    if root is not None and (root / "paraphrases" / "question.json").exists():
        paths.append(root / "paraphrases" / "question.json")
    for path in paths:
        d = io.read_json(path)
        if name in d:
            return d[name]
    if name not in QUESTIONS:
        raise DataError(f"task {name!r}: no question templates (add it to paraphrases/question.json)")
    return QUESTIONS[name]


def load_task(name: str, source: str | Path, seed: int = 0, *, mirror: str | Path | None = None,
              questions: str | Path | None = None) -> TaskData:
    """Load one task from "builtin", "hub" (`HUB_READS`; from `mirror` when given) or a directory in the
    layout of the reference's datasets/classification_datasets. `questions`: a question.json whose
    paraphrases replace the source's (or ours) for the tasks it names."""
    if name not in LOCAL_LOADERS:
        raise DataError(f"unknown classification task {name!r}; known: {', '.join(ALL_TASKS)}")
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    root, origin = None, str(source)
    if str(source) == "builtin":
        items, spec = builtin.classification_items(name), QUESTIONS.get(name)
    elif str(source) == "hub":
        items, spec = _load_hub(name, rng, mirror), _question_spec(name, None, questions)
        origin = f"hub:{HUB_READS[name].describe()}" + (f" from mirror {mirror}" if mirror else "")
    else:
        root = Path(source)
        if not root.is_dir():
            raise DataError(f"classification source {root}: not a directory")
        items = LOCAL_LOADERS[name](root, rng) if name == "relations" else LOCAL_LOADERS[name](root)
        spec = _question_spec(name, root, questions)
    if name == "engels" and isinstance(spec, dict) and all(isinstance(v, dict) for v in spec.values()):
        # Paraphrase file shape {dataset: {property: [...], not_property: [...]}} -> class per dataset.
        spec = {ds: next(iter(v.values())) for ds, v in spec.items()}
    # Unique contexts only: a repeated text could otherwise sit in train and test at once.
    seen, uniq = set(), []
    for text, ys in items:
        if text and text not in seen and len(text) <= 2000:
            seen.add(text)
            uniq.append((text, ys))
    if not uniq:
        raise DataError(f"task {name!r} ({source}): no usable contexts")
    classes = sorted(set().union(*(ys for _, ys in uniq)) | ({"true"} if _is_truth(spec) else set()))
    if isinstance(spec, dict):
        classes = sorted(set(classes) | set(spec))
    templates = _templates(spec, classes, QUESTIONS.get(f"{name}_words"))
    if not templates:
        raise DataError(f"task {name!r}: question templates match none of the classes {classes}")
    return TaskData(name, uniq, templates, origin=origin)


def restrict_classes(task: TaskData, classes: list[str], seed: int = 0) -> TaskData:
    """Questions about `classes` only, over contexts balanced between having one of them (Yes) and
    not (No): the larger side is subsampled, so Yes is half the answers."""
    unknown = [c for c in classes if c not in task.templates]
    if unknown:
        raise DataError(f"classification.ask_classes.{task.name}: unknown class(es) {unknown}; "
                        f"{task.name} asks about {sorted(task.templates)}")
    keep = set(classes)
    yes = [it for it in task.items if it[1] & keep]
    no = [it for it in task.items if not it[1] & keep]
    n = min(len(yes), len(no))
    if n == 0:
        raise DataError(f"classification.ask_classes.{task.name}={classes}: the contexts are all "
                        f"{'Yes' if yes else 'No'} for these classes; pick classes some contexts lack")
    rng = np.random.default_rng([seed, zlib.crc32(task.name.encode()), 3])
    pick = lambda side: [side[i] for i in sorted(rng.choice(len(side), n, replace=False))]  # noqa: E731
    items = pick(yes) + pick(no)
    order = rng.permutation(len(items))
    return TaskData(task.name, [items[i] for i in order], {c: task.templates[c] for c in classes}, task.origin)


def _is_truth(spec) -> bool:
    return isinstance(spec, list) and not any("{}" in t for t in spec)


# ----------------------------------------------------------------------------- example generation


@dataclass
class VariantSpec:
    questions_per_context: int
    min_offset: int = 1  # 1 = the last content token
    max_offset: int = 5
    min_window: int = 1
    max_window: int = 1
    full: bool = False  # every token of the read prompt instead of a window


CLS_VARIANTS = ("single", "multi", "full")
SINGLE = VariantSpec(questions_per_context=2)
MULTI = VariantSpec(questions_per_context=1, min_window=1, max_window=50)
# What `Oracle.ask(text, q)` reads by default: the whole chat-rendered prompt, template tokens included.
FULL = VariantSpec(questions_per_context=1, full=True)


def draw_window(rng, first: int, last: int, v: VariantSpec, length: int = 0) -> np.ndarray:
    """K contiguous positions ending `offset` tokens before the end of the content (offset 1 = last);
    for a `full` variant, all `length` positions of the read prompt."""
    if v.full:
        return np.arange(length, dtype=np.int32)
    off = int(rng.integers(v.min_offset, v.max_offset + 1))
    end = max(first, last - (off - 1))
    k = int(rng.integers(v.min_window, v.max_window + 1))
    start = max(first, end - k + 1)
    return np.arange(start, end + 1, dtype=np.int32)


@dataclass
class ClassificationPlan:
    """Per task: which contexts go to which split and how many examples each variant gets."""

    task: TaskData
    layers: list[int]
    counts: dict[tuple[str, str], int]  # (split, variant) -> examples
    variants: dict[str, VariantSpec]
    allow_recycle: bool
    seed: int
    test_contexts: int = 0
    train_contexts: int = 0
    yes_no_prefix: float = 1.0  # share of questions that start with YES_NO_PREFIX
    _pool: list = field(default_factory=list, repr=False)

    def contexts_needed(self, split: str) -> int:
        n = 0
        for (s, v), c in self.counts.items():
            if s == split and c:
                n = max(n, math.ceil(c / (len(self.layers) * self.variants[v].questions_per_context)))
        return n


def split_count(n: int, shares: dict[str, float]) -> dict[str, int]:
    """n split by shares, rounded so that the parts add up to n exactly (largest remainders first)."""
    raw = {k: n * s for k, s in shares.items()}
    out = {k: int(math.floor(v)) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: out[k] - raw[k])[: n - sum(out.values())]:
        out[k] += 1
    return out


def plan_task(task: TaskData, *, layers, train_count, test_count, shares, eval_only,
              allow_recycle, seed, variants=None, yes_no_prefix: float = 1.0) -> ClassificationPlan:
    """`shares`: train share per variant name; every variant named gets `test_count` test examples."""
    variants = variants or {"single": SINGLE, "multi": MULTI, "full": FULL}
    counts = {("train", v): c for v, c in split_count(0 if eval_only else train_count, shares).items()}
    counts.update({("test", v): test_count for v in shares})  # held-out sets per variant
    plan = ClassificationPlan(task, list(layers), counts, variants, allow_recycle, seed, yes_no_prefix=yes_no_prefix)
    n_items = len(task.items)
    need_test = plan.contexts_needed("test")
    if eval_only:
        plan.test_contexts = min(n_items, need_test) if allow_recycle else need_test
    else:
        # Hold out test contexts first; never more than a fifth of the source.
        plan.test_contexts = min(need_test, max(1, n_items // 5)) if need_test else 0
    if plan.test_contexts > n_items or (need_test > plan.test_contexts and not allow_recycle):
        raise DataError(
            f"classification task {task.name!r} ({task.origin}): the test split needs {need_test} contexts but "
            f"the source offers {n_items if eval_only else max(1, n_items // 5)}; lower test_count or set allow_recycle: true")
    plan.train_contexts = n_items - plan.test_contexts
    need_train = plan.contexts_needed("train")
    if need_train > plan.train_contexts and not allow_recycle:
        raise DataError(
            f"classification task {task.name!r} ({task.origin}): count={train_count} needs {need_train} train contexts "
            f"but the source has only {plan.train_contexts} (after holding out {plan.test_contexts} for test); "
            "lower the count or set allow_recycle: true")
    if need_train and plan.train_contexts < 1:
        raise DataError(f"classification task {task.name!r}: no contexts left for train")
    return plan


def _ask(rng, templates: dict[str, list[str]], ys: frozenset, prefix_share: float = 1.0) -> tuple[str, str, str]:
    classes = list(templates)
    yes = [c for c in classes if c in ys]
    no = [c for c in classes if c not in ys]
    # Half the questions ask about a class the context has; single-class tasks take the data's balance.
    pick_yes = bool(yes) and (not no or rng.random() < 0.5)
    pool = yes if pick_yes else no
    c = pool[int(rng.integers(len(pool)))]
    tl = templates[c]
    q = tl[int(rng.integers(len(tl)))]
    # Users ask "Is it positive?" without the format instruction: some questions go without it.
    if prefix_share >= 1 or rng.random() < prefix_share:
        q = YES_NO_PREFIX + q
    return q, "Yes" if pick_yes else "No", c


def task_rows(plan: ClassificationPlan, renderer, split: str) -> Iterator[Row]:
    """All rows of one task and split: contexts x layers x questions, per variant."""
    name = plan.task.name
    rng = np.random.default_rng([plan.seed, zlib.crc32(name.encode()), 1 if split == "train" else 2])
    order = np.random.default_rng([plan.seed, zlib.crc32(name.encode())]).permutation(len(plan.task.items))
    idx = order[: plan.test_contexts] if split == "test" else order[plan.test_contexts :]
    for vname, v in plan.variants.items():
        count = plan.counts.get((split, vname), 0)
        if not count:
            continue
        per_ctx = len(plan.layers) * v.questions_per_context
        n_ctx = math.ceil(count / per_ctx)
        # Recycling walks fresh permutations of the same contexts; positions and questions are redrawn.
        picks = np.concatenate([rng.permutation(idx) for _ in range(math.ceil(n_ctx / len(idx)))])[:n_ctx]
        emitted = 0
        for start in range(0, n_ctx, 512):
            chunk = picks[start : start + 512]
            rendered = renderer.render([plan.task.items[i][0] for i in chunk])
            for i, (ids, first, last) in zip(chunk, rendered):
                ys = plan.task.items[i][1]
                for layer in plan.layers:
                    for _ in range(v.questions_per_context):
                        if emitted == count:
                            break
                        q, a, c = _ask(rng, plan.task.templates, ys, plan.yes_no_prefix)
                        pos = draw_window(rng, first, last, v, len(ids))
                        yield Row("classification", name, q, ids, pos, layer, a, vname, c)
                        emitted += 1
