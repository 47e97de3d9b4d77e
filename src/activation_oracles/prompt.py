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


def oracle_prefix(layers: int | list[int], num_positions: int) -> str:
    """The user-turn prefix: 'Layer: {l}\\n' + ' ?' * K + ' \\n' for each source layer in turn (layer-major,
    as the reference's multi-layer oracles read them); one int gives the paper's single-layer prefix."""
    layers = [layers] if isinstance(layers, int) else layers
    return "".join(f"Layer: {layer}\n" + PLACEHOLDER * num_positions + " \n" for layer in layers)


class PromptFormatError(ValueError):
    """The chat template does not render the oracle prompt the way the format needs (the placeholders
    are rewritten, or the prompt's tokens are not the start of the prompt+answer tokens)."""


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


def _encode(tokenizer, text: str) -> list[int]:
    # The template already wrote BOS and friends; adding them again would shift every id.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_ids(tokenizer, messages: list[dict], *, add_generation_prompt: bool) -> list[int]:
    return _encode(tokenizer, render_chat(tokenizer, messages, add_generation_prompt=add_generation_prompt))


def placeholder_id(tokenizer) -> int:
    ids = tokenizer.encode(PLACEHOLDER, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(
            f"tokenizer splits the placeholder {PLACEHOLDER!r} into {len(ids)} tokens {ids}; "
            "the oracle format needs it to be exactly one token"
        )
    return ids[0]


def find_placeholders(input_ids: list[int], tokenizer, num_positions: int, num_layers: int = 1) -> list[int]:
    """Positions of the placeholders: `num_layers` runs of `num_positions` consecutive " ?" tokens, the
    first ones of the prompt, in order (layer-major)."""
    pid = placeholder_id(tokenizer)
    hits = [i for i, t in enumerate(input_ids) if t == pid][: num_layers * num_positions]
    runs = [hits[j * num_positions : (j + 1) * num_positions] for j in range(num_layers)]
    if len(hits) < num_layers * num_positions or any(r[-1] - r[0] != num_positions - 1 for r in runs):
        raise PromptFormatError(
            f"could not find {num_layers} run(s) of {num_positions} consecutive {PLACEHOLDER!r} tokens in the "
            "oracle prompt; the chat template may rewrite the user turn"
        )
    return hits


def join_answer(tokenizer, prompt_text: str, prompt_ids, full_text: str, full_ids) -> list[int]:
    """The prompt+answer ids with the prompt's own ids first, so that labels start exactly where the
    oracle's input ends at inference.

    The rendered conversation must begin with the rendered prompt (generation prompt included); a
    template that renders the assistant turn differently once it has content raises PromptFormatError
    (the labels would be misplaced). When only the tokenizer merges the prompt's last characters with the
    answer's first ones (e.g. "\\n" + "\\n\\nHi" -> "\\n\\n", ...), the answer is tokenized on its own."""
    if not full_text.startswith(prompt_text):
        at = next((i for i, (a, b) in enumerate(zip(prompt_text, full_text)) if a != b), len(prompt_text))
        raise PromptFormatError(
            "the chat template renders the oracle prompt (with the generation prompt) differently from the start "
            f"of the prompt+answer conversation, from character {at}: {prompt_text[at:at + 40]!r} vs "
            f"{full_text[at:at + 40]!r}; the answer labels would be misplaced. Fix the template so that its "
            "generation prompt is how it starts an assistant turn"
        )
    n = len(prompt_ids)
    if len(full_ids) >= n and list(full_ids[:n]) == list(prompt_ids):
        return list(full_ids)
    rest = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    return list(prompt_ids) + list(rest)


def format_oracle_prompt(
    tokenizer, *, layer: int | None = None, layers: list[int] | None = None, num_positions: int, question: str,
    answer: str | None = None,
) -> OraclePrompt:
    """Build the oracle's input ids, labels and placeholder positions.

    User turn: "Layer: {layer}\\n" + " ?" * num_positions + " \\n" + question (with `layers=[l1, l2, ...]`:
    one such block per layer, in order, then the question), chat template applied with the generation
    prompt. With an answer, the full two-turn conversation; labels are -100 up to the end of the
    generation prompt and the token ids after it (answer and end-of-turn tokens). `positions` lists the
    placeholders layer by layer (len(layers) x num_positions).
    """
    if (layer is None) == (layers is None):
        raise ValueError("give exactly one of layer= (one source layer) or layers=[...] (several)")
    layer_list = [layer] if layers is None else list(layers)
    if not layer_list:
        raise ValueError("layers is empty: give at least one source layer")
    if not isinstance(num_positions, int) or num_positions < 1:
        raise ValueError(f"num_positions={num_positions!r} must be a positive integer")
    for lay in layer_list:
        if not isinstance(lay, int) or isinstance(lay, bool) or lay < 0:
            raise ValueError(f"layer={lay!r} must be a non-negative integer")
    if len(set(layer_list)) != len(layer_list):
        raise ValueError(f"layers={layer_list} repeats a layer")
    if not isinstance(question, str) or not question.strip():
        raise ValueError("question must be a non-empty string")
    prefix = oracle_prefix(layer_list, num_positions)
    if prefix in question or _PREFIX_RE.search(question):
        raise ValueError(
            "question already contains the oracle prefix 'Layer: N\\n ? ... \\n'; pass the bare question"
        )
    user = [{"role": "user", "content": prefix + question}]
    prompt_text = render_chat(tokenizer, user, add_generation_prompt=True)
    prompt_ids = _encode(tokenizer, prompt_text)
    if answer is None:
        ids, labels = prompt_ids, [IGNORE_INDEX] * len(prompt_ids)
    else:
        full_text = render_chat(tokenizer, user + [{"role": "assistant", "content": answer}],
                                add_generation_prompt=False)
        ids = join_answer(tokenizer, prompt_text, prompt_ids, full_text, _encode(tokenizer, full_text))
        n = len(prompt_ids)
        if len(ids) <= n:
            raise ValueError("the chat template produced no answer tokens; is `answer` empty?")
        labels = [IGNORE_INDEX] * n + ids[n:]
    positions = find_placeholders(ids, tokenizer, num_positions, len(layer_list))
    return OraclePrompt(input_ids=ids, labels=labels, positions=positions, prompt_length=len(prompt_ids))
