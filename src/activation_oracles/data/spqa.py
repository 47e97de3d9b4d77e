"""System-prompt QA (LatentQA; paper section 3.2, 64k examples).

An item is a "behaviour" conversation with a `label`; qa.json maps each label to [question, answer]
pairs about the hidden instruction. Examples are label x item x QA pair; the oracle reads the
conversation with the instruction-bearing turns masked out of the source positions.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from . import builtin, hub, io
from .schema import DataError, ReadPrompt, Row

SOURCE_FILES = ("system", "stimulus_completion", "stimulus", "control")  # the reference's order


def item_to_prompt(item: dict, path: Path, i: int) -> ReadPrompt:
    """The read conversation of one behaviour item (layout in shared/data/PROVENANCE.md section 1)."""
    def need(key):
        if key not in item:
            raise DataError(f"{path}: item {i} has no field {key!r}")
        return item[key]

    label = need("label")
    if item.get("system"):
        return ReadPrompt(label, [{"role": "system", "content": item["system"]},
                                  {"role": "user", "content": need("stimulus_user")}], 1, "system")
    if "control_model" not in item or item.get("control_model") == "":
        return ReadPrompt(label, [{"role": "user", "content": need("control_user")}], 0, "control")
    msgs = [{"role": "user", "content": need("control_user")}, {"role": "assistant", "content": item["control_model"]},
            {"role": "user", "content": need("stimulus_user")}]
    if item.get("stimulus_model"):
        msgs.append({"role": "assistant", "content": item["stimulus_model"]})
        return ReadPrompt(label, msgs, 2, "stimulus_completion")
    return ReadPrompt(label, msgs, 2, "stimulus")


def load_latentqa(source: str | Path, files=SOURCE_FILES, *,
                  mirror: str | Path | None = None) -> tuple[list[ReadPrompt], dict[str, list[tuple[str, str]]]]:
    """Read prompts and QA pairs from a LatentQA directory (the behaviour `files` among SOURCE_FILES, those
    present), "builtin", or a hub dataset id (from `mirror` when given)."""
    if str(source) == "builtin":
        return builtin.spqa_source()
    unknown = [f for f in files if f not in SOURCE_FILES]
    if unknown or not files:
        raise DataError(f"spqa.files={list(files)}: give some of {list(SOURCE_FILES)}")
    root = Path(source)
    if not root.is_dir():
        if "/" in str(source) and not root.exists() and not root.is_absolute():
            return _load_hub(str(source), mirror)
        raise DataError(f"LatentQA source {root}: not a directory")
    qa_path = root / "qa.json"
    qa = io.read_json(qa_path)
    if not isinstance(qa, dict) or not qa:
        raise DataError(f"{qa_path}: expected a non-empty object label -> [[question, answer], ...]")
    pairs = {}
    for label, lst in qa.items():
        if not isinstance(lst, list) or not all(isinstance(p, list) and len(p) == 2 for p in lst):
            raise DataError(f"{qa_path}: label {label!r} must map to a list of [question, answer] pairs")
        pairs[label] = [(str(q), str(a)) for q, a in lst]
    prompts = []
    for name in (f for f in SOURCE_FILES if f in files):
        p = root / f"{name}.json"
        if not p.exists():
            continue
        items = io.read_json(p)
        io.require_fields(p, items, ("label",))
        prompts += [item_to_prompt(it, p, i) for i, it in enumerate(items)]
    if not prompts:
        raise DataError(f"{root}: none of {[f + '.json' for f in files]} found")
    prompts = [pr for pr in prompts if pr.label in pairs]
    if not prompts:
        raise DataError(f"{root}: no item label appears in {qa_path.name}")
    return prompts, pairs


def _load_hub(hid: str, mirror=None):
    ds = hub.read(hub.HubRead(hid), "train", mirror=mirror)
    for col in ("label", "question", "answer"):
        if col not in ds.column_names:
            raise DataError(f"hub dataset {hid}: missing column {col!r}")
    prompts, pairs = [], {}
    for i, r in enumerate(ds):
        pairs.setdefault(r["label"], []).append((r["question"], r["answer"]))
        prompts.append(item_to_prompt(dict(r), Path(hid), i))
    return prompts, pairs


def render_read_prompt(tokenizer, pr: ReadPrompt) -> tuple[np.ndarray, int, int]:
    """Token ids of the conversation and the (first, last) token of the unmasked content."""
    from ..prompt import render_chat
    from .tokenize import _encode_batch, _find_span, content_span

    # (a template without a system role gets the system text folded into the first user turn, where it
    # is still found first, so masking it out works the same)
    text = render_chat(tokenizer, pr.messages, add_generation_prompt=False)
    ids, offs = _encode_batch(tokenizer, [text], offsets=True)
    ids, offs = ids[0], offs[0]
    cursor, spans = 0, []
    for m in pr.messages:  # locate every turn's content in order
        try:
            spans.append(_find_span(text, m["content"], cursor))
        except ValueError:
            raise DataError(f"label {pr.label!r}: the chat template rewrote a turn's content") from None
        cursor = spans[-1][1]
    first, _ = content_span(offs, spans[pr.masked_turns][0], spans[pr.masked_turns][1])
    _, last = content_span(offs, spans[-1][0], spans[-1][1])
    return np.asarray(ids, dtype=np.int32), first, last


@dataclass
class SpqaPlan:
    prompts: list[ReadPrompt]
    pairs: dict
    layers: list[int]
    counts: dict[str, int]
    seed: int
    origin: str
    all_fraction: float = 0.5
    window: tuple[int, int] = (1, 3)
    offset: tuple[int, int] = (1, 10)
    examples: dict[str, list] = field(default_factory=dict, repr=False)  # split -> [(prompt idx, qa idx)]


def plan_spqa(source, *, layers, train_count, test_count, test_fraction, allow_recycle, seed,
              files=SOURCE_FILES, mirror=None) -> SpqaPlan:
    prompts, pairs = load_latentqa(source, files, mirror=mirror)
    labels = sorted({p.label for p in prompts})
    rng = np.random.default_rng([seed, zlib.crc32(b"spqa")])
    # Test labels (hidden instructions) never appear in train.
    n_test = max(1, round(len(labels) * test_fraction)) if test_count else 0
    if len(labels) - n_test < 1 and train_count:
        raise DataError(f"spqa source {source}: {len(labels)} label(s) cannot be split into train and test")
    test_labels = set(rng.permutation(labels)[:n_test].tolist())
    plan = SpqaPlan(prompts, pairs, list(layers), {"train": train_count, "test": test_count}, seed, str(source))
    for split in ("train", "test"):
        ex = [(i, j) for i, p in enumerate(prompts) if (p.label in test_labels) == (split == "test")
              for j in range(len(pairs[p.label]))]
        n = plan.counts[split]
        if n > len(ex) and not allow_recycle:
            raise DataError(
                f"spqa ({source}): {split} count={n} but the source provides only {len(ex)} {split} examples "
                "(items x QA pairs); lower the count or set allow_recycle: true")
        if n and not ex:
            raise DataError(f"spqa ({source}): no {split} examples")
        plan.examples[split] = ex
    return plan


def spqa_rows(plan: SpqaPlan, tokenizer, split: str) -> Iterator[Row]:
    rng = np.random.default_rng([plan.seed, zlib.crc32(b"spqa"), 1 if split == "train" else 2])
    ex, n = plan.examples[split], plan.counts[split]
    if not n:
        return
    picks = np.concatenate([rng.permutation(len(ex)) for _ in range(math.ceil(n / len(ex)))])[:n]
    rendered: dict[int, tuple] = {}  # a few thousand conversations at most
    for e in picks:
        pi, qi = ex[e]
        if pi not in rendered:
            rendered[pi] = render_read_prompt(tokenizer, plan.prompts[pi])
        ids, first, last = rendered[pi]
        if rng.random() < plan.all_fraction:
            pos, variant = np.arange(first, last + 1, dtype=np.int32), "all"
        else:
            off = int(rng.integers(plan.offset[0], plan.offset[1] + 1))
            k = int(rng.integers(plan.window[0], plan.window[1] + 1))
            end = max(first, last - (off - 1))  # offset 1 = the last content token
            pos, variant = np.arange(max(first, end - k + 1), end + 1, dtype=np.int32), "window"
        layer = plan.layers[int(rng.integers(len(plan.layers)))]
        q, a = plan.pairs[plan.prompts[pi].label][qi]
        yield Row("spqa", "latentqa", q, ids, pos, layer, a, variant)
