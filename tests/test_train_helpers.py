"""Test helper (no tests here): a small oracle mixture with the data module's schema, built from
hand-written sentences and yes/no questions, saved with save_to_disk."""

from __future__ import annotations

from pathlib import Path

POSITIVE = [
    "I loved this film, it was wonderful.", "What a delightful and charming story.",
    "The best meal I have had in years.", "An absolute joy from start to finish.",
    "The staff were kind and the room was lovely.", "A brilliant, moving performance.",
    "I am so happy with this purchase.", "Great music and a fantastic crowd.",
]
NEGATIVE = [
    "I hated this film, it was awful.", "What a dull and tedious story.",
    "The worst meal I have had in years.", "A complete waste of time and money.",
    "The staff were rude and the room was dirty.", "A wooden, lifeless performance.",
    "I am so disappointed with this purchase.", "Terrible sound and an angry crowd.",
]
QUESTIONS = ["Is the sentiment of this text positive?", "Is this text expressing a good opinion?"]


def make_rows(tokenizer, *, layers=(1, 2), split="train", repeat=1):
    import activation_oracles as ao

    rows = []
    items = [(s, True) for s in POSITIVE] + [(s, False) for s in NEGATIVE]
    for rep in range(repeat):
        for i, (sent, pos) in enumerate(items):
            for q_i, q in enumerate(QUESTIONS):
                ctx = list(tokenizer(sent, add_special_tokens=False)["input_ids"])
                k = 1 + (i + q_i + rep) % 3  # single- and multi-token inputs
                k = min(k, len(ctx))
                layer = layers[(i + q_i + rep) % len(layers)]
                answer = "Yes" if pos else "No"
                p = ao.format_oracle_prompt(tokenizer, layer=layer, num_positions=k, question=q, answer=answer)
                rows.append({
                    "task": "classification", "dataset": "toy_sentiment", "question": q,
                    "context_input_ids": ctx, "context_positions": list(range(len(ctx) - k, len(ctx))),
                    "layer": layer, "input_ids": p.input_ids, "labels": p.labels, "positions": p.positions,
                    "target": answer, "variant": "single" if k == 1 else "multi", "split": split,
                })
    return rows


def make_dataset(tokenizer, out: Path, *, layers=(1, 2), repeat=1) -> Path:
    import datasets

    train = make_rows(tokenizer, layers=layers, split="train", repeat=repeat)
    test = make_rows(tokenizer, layers=layers, split="test")[::4]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(train), "test": datasets.Dataset.from_list(test)})
    dd.save_to_disk(str(out))
    return out
