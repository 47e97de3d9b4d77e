"""A context's tokens as the viewer shows them: the ids the oracle reads, the text each token adds, and
which positions are the user's text (rather than the chat template around it)."""

from __future__ import annotations

from dataclasses import dataclass

from .prompt import render_chat


@dataclass
class ContextTokens:
    ids: list[int]  # exactly what `Oracle.ask(text, raw=raw)` would read
    texts: list[str]  # what each token adds to the text ("" for the later bytes of a split character)
    special: list[bool]  # the tokenizer's special tokens (<|im_start|>, BOS, ...)
    shown: list[int]  # the positions the viewer scores and draws


def context_tokens(tokenizer, text: str, *, raw: bool = False, show_template: bool = False) -> ContextTokens:
    """Tokenize `text` the way `Oracle.ask` does (a user turn with the generation prompt, or plain text
    with `raw=True`) and cut it into per-token pieces from the tokenizer's offsets.

    A token's piece runs from the end of the previous token to its own end, so pieces include the spaces
    a tokenizer leaves out of its offsets and, joined, give back the text. By default only the tokens
    overlapping the user's text are shown; `show_template=True` shows the template's tokens too."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("the viewer needs a fast (Rust) tokenizer: it reads token offsets")
    if raw:
        rendered, start = text, 0
        enc = tokenizer(text, return_offsets_mapping=True)  # special tokens added, as Oracle.ask(raw=True)
    else:
        rendered = render_chat(tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)
        enc = tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=True)
        start = rendered.find(text)
        if start < 0:  # a template that strips its content
            text = text.strip()
            start = rendered.find(text)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    lo, hi = (start, start + len(text)) if start >= 0 else (0, len(rendered))
    special_ids = set(tokenizer.all_special_ids)
    texts, shown, prev = [], [], 0
    for pos, (tid, (s, e)) in enumerate(zip(ids, offsets)):
        if e <= s and s == 0 and tid in special_ids:  # added by the post-processor, not in the text
            texts.append(tokenizer.convert_ids_to_tokens(tid))
            if show_template:
                shown.append(pos)
            continue
        in_text = s < hi and e > lo
        a, b = (prev, e) if show_template or not in_text else (max(prev, lo), min(e, hi))
        texts.append(rendered[a:b] if b > a else "")
        prev = max(prev, e)
        if in_text or show_template:
            shown.append(pos)
    return ContextTokens(ids=ids, texts=texts, special=[t in special_ids for t in ids], shown=shown)
