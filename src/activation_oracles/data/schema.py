"""Columns of one oracle training example (token ids only; activations are computed later)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

TASKS = ("spqa", "classification", "context_prediction")  # the data families; the trainer's per-task loss slots
VARIANTS = ("single", "multi", "full", "all", "window", "past", "future")
SPLITS = ("train", "test")

# Order of the columns on disk; the trainer reads them by name.
COLUMNS = (
    "task", "dataset", "question", "context_input_ids", "context_positions", "layer",
    "input_ids", "labels", "positions", "target", "variant", "split", "label",
)
INT_LIST_COLUMNS = ("context_input_ids", "context_positions", "input_ids", "labels", "positions")
# Multi-layer mixtures add this column: the source layers every row reads, in prompt order (`layer` is the
# first). Single-layer mixtures keep the columns above and nothing else.
LAYERS_COLUMN = "layers"


# Entity types of the NER task (tag suffix -> the class a question names); the built-in source uses them too.
NER_TYPES = {
    "geo": "a geographical location", "org": "an organization", "per": "a person",
    "gpe": "a country or nationality", "tim": "a time or date", "art": "an artifact",
    "eve": "an event", "nat": "a natural phenomenon",
}


class DataError(ValueError):
    """Bad source data or configuration; the message names the file (or task) and the field."""


class Row(NamedTuple):
    """One example before the oracle side is tokenized (the writer adds input_ids/labels/positions)."""

    task: str
    dataset: str
    question: str
    context_input_ids: np.ndarray  # int32, the read prompt fed to the target model
    context_positions: np.ndarray  # int32, K source positions into context_input_ids
    layer: int
    target: str
    variant: str
    label: str = ""  # classification: the class the question asks about (what "Yes" would affirm)


@dataclass
class ReadPrompt:
    """A system-prompt QA read prompt: the chat the target model reads, before tokenization."""

    label: str
    messages: list[dict]
    masked_turns: int  # leading turns whose tokens never become source positions
    source: str


def columns(multi_layer: bool = False) -> tuple[str, ...]:
    return COLUMNS + ((LAYERS_COLUMN,) if multi_layer else ())


def features(multi_layer: bool = False):
    """Hugging Face `datasets.Features` of the schema (int lists are int32 sequences)."""
    import datasets

    ints = datasets.Sequence(datasets.Value("int32"))
    s = datasets.Value("string")
    spec = {
        "task": s, "dataset": s, "question": s, "context_input_ids": ints, "context_positions": ints,
        "layer": datasets.Value("int32"), "input_ids": ints, "labels": ints, "positions": ints,
        "target": s, "variant": s, "split": s, "label": s, LAYERS_COLUMN: ints,
    }
    return datasets.Features({c: spec[c] for c in columns(multi_layer)})
