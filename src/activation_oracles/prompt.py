"""The oracle prompt, token-for-token the format published oracle adapters were trained on."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PLACEHOLDER = " ?"
IGNORE_INDEX = -100
_PREFIX_RE = re.compile(r"Layer: \d+\n( \?)+ \n")


def prompt_length(labels) -> int:
    """Tokens before the first labelled one: the prompt part of a prompt+answer row."""
    return next((i for i, x in enumerate(labels) if x != IGNORE_INDEX), len(labels))


def oracle_prefix(layer: int, num_positions: int) -> str:
    return f"Layer: {layer}\n" + PLACEHOLDER * num_positions + " \n"


@dataclass
class OraclePrompt:
    input_ids: list[int]
    labels: list[int]
    positions: list[int]
    prompt_length: int = 0  # tokens before the answer (the generation prompt included)
    text: str = field(default="", repr=False)


def render_chat(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> str:
    # enable_thinking=False reaches templates that read it (Qwen3) and is ignored by the rest.
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, enable_thinking=False
    )


def chat_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
    text = render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt)
    # The template already wrote BOS and friends; adding them again would shift every id.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def placeholder_id(tokenizer) -> int:
    ids = tokenizer.encode(PLACEHOLDER, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"tokenizer splits the placeholder {PLACEHOLDER!r} into {len(ids)} tokens {ids}; "
            "the oracle format needs it to be exactly one token"
        )
    return ids[0]


def find_placeholders(input_ids: list[int], tokenizer, num_positions: int) -> list[int]:
    pid = placeholder_id(tokenizer)
    try:
        start = input_ids.index(pid)
    except ValueError:
        start = -1
    positions = list(range(start, start + num_positions))
    if start < 0 or input_ids[start : start + num_positions] != [pid] * num_positions:
        raise ValueError(
            f"could not find {num_positions} consecutive {PLACEHOLDER!r} tokens in the oracle prompt; "
            "the chat template may rewrite the user turn"
        )
    return positions


def format_oracle_prompt(
    tokenizer, *, layer: int, num_positions: int, question: str, answer: str | None = None
) -> OraclePrompt:
    """Build the oracle's input ids, labels and placeholder positions.

    User turn: "Layer: {layer}\\n" + " ?" * num_positions + " \\n" + question, chat template applied with
    the generation prompt. With an answer, the full two-turn conversation; labels are -100 up to the end
    of the generation prompt and the token ids after it (answer and end-of-turn tokens).
    """
    if not isinstance(num_positions, int) or num_positions < 1:
        raise ValueError(f"num_positions={num_positions!r} must be a positive integer")
    if not isinstance(layer, int) or layer < 0:
        raise ValueError(f"layer={layer!r} must be a non-negative integer")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    prefix = oracle_prefix(layer, num_positions)
    if prefix in question or _PREFIX_RE.search(question):
        raise ValueError(
            "question already contains the oracle prefix 'Layer: N\\n ? ... \\n'; pass the bare question"
        )
    user = [{"role": "user", "content": prefix + question}]
    prompt_ids = chat_ids(tokenizer, user, add_generation_prompt=True)
    if answer is None:
        ids, labels = prompt_ids, [IGNORE_INDEX] * len(prompt_ids)
    else:
        full = user + [{"role": "assistant", "content": answer}]
        ids = chat_ids(tokenizer, full, add_generation_prompt=False)
        n = len(prompt_ids)
        labels = [IGNORE_INDEX] * n + ids[n:]
        if len(ids) <= n:
            raise ValueError("the chat template produced no answer tokens; is `answer` empty?")
    positions = find_placeholders(ids, tokenizer, num_positions)
    return OraclePrompt(input_ids=ids, labels=labels, positions=positions, prompt_length=len(prompt_ids))
