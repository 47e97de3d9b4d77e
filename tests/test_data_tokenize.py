"""The fast batched oracle formatter gives exactly the ids of `format_oracle_prompt`."""

from __future__ import annotations

import random

import numpy as np
import pytest

import activation_oracles as ao
from activation_oracles.data.tokenize import ContextRenderer, OracleFormatter

QUESTIONS = [
    "Answer with 'Yes' or 'No' only. Is this statement true?",
    "Can you predict the previous 7 tokens that came before this?",
    "What role is the assistant playing?",
    "  leading spaces and a\nnewline {braces} <b>tags</b>",
    "Ünïcödé question — ça va? 日本語",
]
ANSWERS = ["Yes", "No", " the cat sat", "\n\nHuman: hi", "A pirate.", "  trailing  ", "<|im_end|> inside", "x"]


def test_formatter_matches_format_oracle_prompt(smol_tokenizer):
    fmt = OracleFormatter(smol_tokenizer)
    assert fmt.exact_fast
    rng = random.Random(0)
    n = 300
    layers = [rng.choice([0, 7, 15, 22, 29, 123]) for _ in range(n)]
    ks = [rng.randint(1, 60) for _ in range(n)]
    qs = [rng.choice(QUESTIONS) + rng.choice(["", " extra", f" {rng.randint(0, 99)}"]) for _ in range(n)]
    ans = [rng.choice(ANSWERS) + rng.choice(["", " more words", "."]) for _ in range(n)]
    ids, labels, pos = fmt.format_batch(layers, ks, qs, ans)
    for i in range(n):
        ref = ao.format_oracle_prompt(smol_tokenizer, layer=layers[i], num_positions=ks[i], question=qs[i], answer=ans[i])
        assert ids[i].tolist() == ref.input_ids
        assert labels[i].tolist() == ref.labels
        assert pos[i].tolist() == ref.positions
        assert ids[i].dtype == np.int32


def test_slow_fallback_is_identical(smol_tokenizer):
    fmt = OracleFormatter(smol_tokenizer)
    fast = fmt.format_batch([3, 5], [2, 4], QUESTIONS[:2], ANSWERS[:2])
    slow = fmt._slow([3, 5], [2, 4], QUESTIONS[:2], ANSWERS[:2])
    for a, b in zip(fast, slow):
        assert [x.tolist() for x in a] == [x.tolist() for x in b]


@pytest.mark.parametrize("text", ["The city of Paris is in France.", "  spaced out  ", "ends with newline\n", "é"])
def test_context_renderer_span_is_the_content(smol_tokenizer, text):
    ids, first, last = ContextRenderer(smol_tokenizer).render([text])[0]
    from activation_oracles.prompt import chat_ids

    # what Oracle.ask reads from a text: the user turn with the generation prompt
    assert ids.tolist() == chat_ids(smol_tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)
    assert smol_tokenizer.decode(ids[first : last + 1].tolist()).strip() == text.strip()


LLAMA_LIKE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
              "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
              "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")


@pytest.mark.parametrize("trim", [False, True])
def test_other_templates(trim):
    """A Llama-3-like template takes the fast path; one that trims content falls back, both exact."""
    from activation_oracles.data import load_tokenizer

    tok, _ = load_tokenizer("smollm2-135m")
    tok.chat_template = LLAMA_LIKE.replace("m['content'] }}", "m['content'] | trim }}") if trim else LLAMA_LIKE
    fmt = OracleFormatter(tok)
    assert fmt.exact_fast is (not trim)
    qs, ans = QUESTIONS * 2, ANSWERS + ANSWERS[:2]
    layers, ks = list(range(len(qs))), [1 + i % 7 for i in range(len(qs))]
    ids, labels, pos = fmt.format_batch(layers, ks, qs, ans)
    for i in range(len(qs)):
        ref = ao.format_oracle_prompt(tok, layer=layers[i], num_positions=ks[i], question=qs[i], answer=ans[i])
        assert (ids[i].tolist(), labels[i].tolist(), pos[i].tolist()) == (ref.input_ids, ref.labels, ref.positions)
    ids, first, last = ContextRenderer(tok).render(["  The sky is blue.  "])[0]
    # (this toy template's markers are plain text here, so "." and "<" may share the last token)
    span = tok.decode(ids[first : last + 1].tolist())
    assert span.strip().startswith("The sky is blue.") and len(span) <= len("  The sky is blue.  ") + 4
    assert "The sky" not in tok.decode(ids[:first].tolist()) and "blue" not in tok.decode(ids[last + 1 :].tolist())
