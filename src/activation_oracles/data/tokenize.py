"""Fast, exact tokenization for millions of examples.

`format_oracle_prompt` renders a Jinja chat template and tokenizes one example at a time (~0.2 ms).
Here the template is rendered once with sentinel contents and split into fixed text pieces; each
example is then plain string concatenation plus one batched call of the fast tokenizer. The pieces
are verified against the real template at construction (and `tests/test_data_tokenize.py` compares
ids with `format_oracle_prompt` on many random examples); a template that rewrites content (strips,
escapes) makes the formatter fall back to `format_oracle_prompt` itself.
"""

from __future__ import annotations

import numpy as np

from ..prompt import (
    IGNORE_INDEX, PromptFormatError, format_oracle_prompt, join_answer, oracle_prefix, placeholder_id,
    render_chat,
)

_S1, _S2 = "\x00AO-CONTENT-1\x00", "\x00AO-CONTENT-2\x00"
# Probe contents with the characters templates like to touch (edge whitespace, newlines, braces).
_PROBES = (("  Layer: 3\n ? \n q {x} ", "\n a <b> \n"), ("x", "y"))


def _encode_batch(tokenizer, texts: list[str], offsets: bool = False):
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encs = backend.encode_batch(texts, add_special_tokens=False)
        if offsets:
            return [e.ids for e in encs], [e.offsets for e in encs]
        return [e.ids for e in encs]
    out = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=offsets)
    return (out["input_ids"], out["offset_mapping"]) if offsets else out["input_ids"]


def _split_template(tokenizer, messages_fn, sentinels):
    """Render messages_fn(*sentinels) and cut the text at the sentinels -> the fixed pieces."""
    text = render_chat(tokenizer, messages_fn(*sentinels), add_generation_prompt=messages_fn.gen)
    pieces = []
    for s in sentinels:
        if text.count(s) != 1:
            return None
        head, text = text.split(s)
        pieces.append(head)
    pieces.append(text)
    return pieces


def _join(pieces, contents):
    out = pieces[0]
    for c, p in zip(contents, pieces[1:]):
        out += c + p
    return out


class _Msgs:
    def __init__(self, fn, gen):
        self.fn, self.gen = fn, gen

    def __call__(self, *a):
        return self.fn(*a)


_USER_GEN = _Msgs(lambda u: [{"role": "user", "content": u}], True)
_USER_ASSISTANT = _Msgs(lambda u, a: [{"role": "user", "content": u}, {"role": "assistant", "content": a}], False)


def _template_pieces(tokenizer, msgs, n):
    sent = (_S1, _S2)[:n]
    pieces = _split_template(tokenizer, msgs, sent)
    if pieces is None:
        return None
    for probe in _PROBES:
        want = render_chat(tokenizer, msgs(*probe[:n]), add_generation_prompt=msgs.gen)
        if _join(pieces, probe[:n]) != want:
            return None
    return pieces


def _layer_list(layer) -> list[int]:
    """A row's source layer(s): an int (single-layer rows) or a sequence (multi-layer rows)."""
    return [int(x) for x in layer] if isinstance(layer, (list, tuple, np.ndarray)) else [int(layer)]


class OracleFormatter:
    """Batched equivalent of `format_oracle_prompt` (same input_ids, labels and positions, same checks).

    `layers[i]` is one row's source layer, or a list of them for a multi-layer row."""

    def __init__(self, tokenizer, cache_size: int = 200_000):
        self.tokenizer = tokenizer
        self.pid = placeholder_id(tokenizer)
        self.gen_pieces = _template_pieces(tokenizer, _USER_GEN, 1)
        self.full_pieces = _template_pieces(tokenizer, _USER_ASSISTANT, 2)
        self.exact_fast = self.gen_pieces is not None and self.full_pieces is not None
        self._prompt_ids: dict[str, np.ndarray] = {}
        self._cache_size = cache_size

    def _prompts(self, users: list[str]) -> list[np.ndarray]:
        # Prompt ids depend only on (layers, K, question): cache them, tokenize the misses at once.
        missing = [u for u in dict.fromkeys(users) if u not in self._prompt_ids]
        if missing:
            if len(self._prompt_ids) + len(missing) > self._cache_size:
                self._prompt_ids.clear()
            ids = _encode_batch(self.tokenizer, [_join(self.gen_pieces, [u]) for u in missing])
            self._prompt_ids.update({u: np.asarray(i, dtype=np.int32) for u, i in zip(missing, ids)})
        return [self._prompt_ids[u] for u in users]

    def format_batch(self, layers, ks, questions, answers):
        """-> (input_ids, labels, positions), each a list of int32 numpy arrays."""
        if not self.exact_fast:
            return self._slow(layers, ks, questions, answers)
        layer_lists = [_layer_list(x) for x in layers]
        users = [oracle_prefix(ls, int(k)) + q for ls, k, q in zip(layer_lists, ks, questions)]
        prompts = self._prompts(users)
        texts = [_join(self.full_pieces, [u, a]) for u, a in zip(users, answers)]
        full = _encode_batch(self.tokenizer, texts)
        out_ids, out_labels, out_pos = [], [], []
        for ids, prompt, k, ls, u, text in zip(full, prompts, ks, layer_lists, users, texts):
            arr = np.asarray(ids, dtype=np.int32)
            n, k = len(prompt), int(k)
            if len(arr) < n or not np.array_equal(arr[:n], prompt):  # rare: checked and fixed like the slow path
                arr = np.asarray(join_answer(self.tokenizer, _join(self.gen_pieces, [u]), prompt.tolist(), text,
                                             arr.tolist()), dtype=np.int32)
            if len(arr) <= n:
                raise ValueError("the chat template produced no answer tokens; is the answer empty?")
            pos = np.flatnonzero(arr == self.pid)[: len(ls) * k].astype(np.int32)
            runs = pos.reshape(-1, k) if len(pos) == len(ls) * k else None
            if runs is None or (runs[:, -1] - runs[:, 0] != k - 1).any():
                raise PromptFormatError(f"could not find {len(ls)} run(s) of {k} consecutive placeholder tokens "
                                        "in the oracle prompt")
            labels = arr.copy()
            labels[:n] = IGNORE_INDEX
            out_ids.append(arr)
            out_labels.append(labels)
            out_pos.append(pos)
        return out_ids, out_labels, out_pos

    def _slow(self, layers, ks, questions, answers):
        res = [
            format_oracle_prompt(self.tokenizer, layers=_layer_list(layer), num_positions=int(k), question=q, answer=a)
            for layer, k, q, a in zip(layers, ks, questions, answers)
        ]
        as32 = lambda x: np.asarray(x, dtype=np.int32)  # noqa: E731
        return [as32(r.input_ids) for r in res], [as32(r.labels) for r in res], [as32(r.positions) for r in res]


class ContextRenderer:
    """Read prompts `[user: text]` through the chat template with the generation prompt (token for token
    what `Oracle.ask(text, ...)` reads), batched, with the content's token span.

    `render(texts)` -> list of (ids int32 array, first_content_token, last_content_token). Offsets of
    classification positions are counted from the last content token, so they do not depend on how
    many tokens a template appends after the turn (Llama: 1, ChatML/Qwen: 2).
    """

    def __init__(self, tokenizer, chat: bool = True):
        self.tokenizer = tokenizer
        self.pieces = _template_pieces(tokenizer, _USER_GEN, 1) if chat else ["", ""]
        self.chat = chat

    def render(self, texts: list[str]):
        if self.pieces is None:  # the template rewrites content (e.g. trims it): render each one
            rendered = [render_chat(self.tokenizer, _USER_GEN(t), add_generation_prompt=True) for t in texts]
            spans = [_find_span(r, t) for r, t in zip(rendered, texts)]
        else:
            rendered = [_join(self.pieces, [t]) for t in texts]
            spans = [(len(self.pieces[0]), len(self.pieces[0]) + len(t)) for t in texts]
        all_ids, all_offsets = _encode_batch(self.tokenizer, rendered, offsets=True)
        out = []
        for ids, offs, (a, b) in zip(all_ids, all_offsets, spans):
            first, last = content_span(offs, a, b)
            out.append((np.asarray(ids, dtype=np.int32), first, last))
        return out


def _find_span(rendered: str, text: str) -> tuple[int, int]:
    for t in (text, text.strip()):
        at = rendered.find(t)
        if at >= 0 and t:
            return at, at + len(t)
    raise ValueError(f"the chat template rewrote the content {text[:60]!r}; cannot locate it")


def content_span(offsets, char_start: int, char_end: int) -> tuple[int, int]:
    """Token indices (first, last) of the tokens that overlap the characters [char_start, char_end)."""
    first = last = -1
    for i, (a, b) in enumerate(offsets):
        if b > char_start and a < char_end and b > a:
            if first < 0:
                first = i
            last = i
    return first, last
