"""Who answers an audit's questions: the trained oracle and its controls, the organism itself, and
(taboo) a logit lens. Oracle-based methods all go through `Oracle.ask`.

- oracle:       the trained oracle reads the organism's activations
- untrained:    the same injection into the base model with the oracle adapter off (Patchscopes)
- no_injection: the trained oracle, nothing injected (the question's prior)
- unrelated:    the trained oracle reads the base model's activations of an unrelated prompt at the
                corresponding positions (false positives)
- black_box:    the organism is asked directly; its reply is scored
- logit_lens:   the organism's residual at the source layer through final norm and unembedding
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..models import layer_from_percent
from ..prompt import chat_ids
from .generators.common import GENERIC_CHAT
from .logit_lens import logit_lens_probs, top_tokens
from .organism import generate_replies
from .protocols import Item

ORACLE_METHODS = ("oracle", "untrained", "no_injection", "unrelated")
METHODS = (*ORACLE_METHODS, "black_box", "logit_lens")
# Unrelated contexts: ordinary requests that carry no secret (one per item, cycled).
UNRELATED = tuple(q for q, _ in GENERIC_CHAT)


@dataclass
class Reading:
    """How the oracle reads a target prompt."""

    layer_percent: float = 50
    input: str = "full"  # full | segment | tokens
    segment: tuple[int, int | None] = (-10, None)
    token: str | int = "assistant"
    positions: object = None  # explicit selection (overrides input)
    from_user: bool = False  # a `positions` slice counts from the first token of the user's text
    with_reply: bool = False  # read the prompt and the organism's reply


@dataclass
class Sampling:
    num_samples: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    max_new_tokens: int = 20


def assistant_offset(tokenizer, messages: list[dict]) -> int:
    """Index, counted from the end, of the assistant start-of-turn token: the first token the chat
    template adds as the generation prompt (-3 on Gemma-2, -7 on Qwen3 with thinking off)."""
    with_gen = chat_ids(tokenizer, messages, add_generation_prompt=True)
    without = chat_ids(tokenizer, messages, add_generation_prompt=False)
    return -(len(with_gen) - len(without))


def user_text_start(tokenizer, messages: list[dict]) -> int:
    """Index of the first token of the last user turn's text: where the ids of the same conversation
    with two different texts first differ (past any system prompt a template adds by default)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")

    def ids(text):
        msgs = [dict(m) for m in messages]
        msgs[last]["content"] = text
        return chat_ids(tokenizer, msgs, add_generation_prompt=messages[-1]["role"] == "user")

    a, b = ids("apple pie"), ids("zebra crossing")
    return next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)


def selection(reading: Reading, tokenizer, messages: list[dict]):
    """(positions, mode) for Oracle.ask."""
    if reading.positions is not None:
        pos = reading.positions
        if reading.from_user and isinstance(pos, slice):
            start = user_text_start(tokenizer, messages)
            pos = slice(start + (pos.start or 0), None if pos.stop is None else start + pos.stop)
        return pos, "full"
    if reading.input == "full":
        return "all", "full"
    if reading.input == "segment":
        return slice(*reading.segment), "segment"
    if reading.input == "tokens":
        tok = reading.token
        if tok == "assistant":
            if messages[-1]["role"] != "user":
                raise ValueError("--token assistant reads the generation prompt; it cannot be used with --with-reply")
            tok = assistant_offset(tokenizer, messages)
        return int(tok), "tokens"
    raise ValueError(f"--input {reading.input!r}: use full, segment or tokens")


def alignment(pos) -> str:
    """How the unrelated control maps the positions read onto the unrelated prompt: positions counted
    from the end (the last tokens, the assistant token: the chat template's tail is the same in both)
    keep their index from the end, positions counted from the start keep theirs, the full sequence
    maps proportionally."""
    if pos == "all":
        return "proportional"
    if pos == "last":
        return "end"
    first = (pos.start or 0) if isinstance(pos, slice) else pos if isinstance(pos, int) else list(pos)[0]
    return "end" if first < 0 else "start"


def unrelated_prompts(items: list[Item], scorer) -> list[list[dict]]:
    """An unrelated prompt per item: the generic requests in turn, one per distinct target prompt (so
    an organism and the base model read on the same prompt get the same one); a request the audit's
    scorer would credit with the item's secret (about the Moon, for the taboo word "moon") is skipped."""
    slot: dict[str, int] = {}
    out = []
    for it in items:
        i = slot.setdefault(it.prompt_text, len(slot))
        order = [UNRELATED[(i + k) % len(UNRELATED)] for k in range(len(UNRELATED))]
        text = next((u for u in order if not scorer(u, it.truth)), order[0])
        out.append([{"role": "user", "content": text}])
    return out


def _contexts(items: list[Item], replies: dict[int, str] | None, reading: Reading) -> list[list[dict]]:
    if not reading.with_reply:
        return [it.messages for it in items]
    return [it.messages + [{"role": "assistant", "content": replies[id(it)]}] for it in items]


def ask_oracle(oracle, method: str, items: list[Item], questions: list[str], *, reading: Reading,
               sampling: Sampling, source: str, replies: dict[int, str] | None = None, seed: int = 0,
               batch_size: int = 64, unrelated: list[list[dict]] | None = None) -> list[list]:
    """Each item's `num_samples` answers (`OracleAnswer`s) to its question under `method`, through
    `Oracle.ask` and its controls: `untrained` = `oracle.adapter_disabled()`, `no_injection` and
    `unrelated` = `control=` (the same oracle prompts; `unrelated[i]` is item i's unrelated prompt,
    read by the base model)."""
    if method not in ORACLE_METHODS:
        raise ValueError(f"method {method!r}: use one of {', '.join(ORACLE_METHODS)}")
    if method == "unrelated" and (unrelated is None or len(unrelated) != len(items)):
        raise ValueError("the unrelated method needs one unrelated prompt per item")
    layer = layer_from_percent(oracle.model, reading.layer_percent)
    contexts = _contexts(items, replies, reading)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, (it, ctx) in enumerate(zip(items, contexts)):
        pos, mode = selection(reading, oracle.tokenizer, ctx)
        reads_target = method in ("oracle", "untrained") and not it.read_base
        u = i if method == "unrelated" else None
        # one Oracle.ask per (target, selection, unrelated prompt); the unrelated prompts repeat
        key = (it.organism.adapter if reads_target else None, str(pos), mode,
               None if u is None else unrelated[u][-1]["content"])
        groups[key].append(i)
    out: list[list] = [[] for _ in items]
    weights = oracle.adapter_disabled() if method == "untrained" else contextlib.nullcontext()
    with weights:
        for (adapter, _, mode, _), idx in groups.items():
            pos, _ = selection(reading, oracle.tokenizer, contexts[idx[0]])
            control = {}
            if method == "no_injection":
                control = dict(control="no_injection")
            elif method == "unrelated":
                control = dict(control="unrelated", unrelated_context=unrelated[idx[0]],
                               unrelated_align=alignment(pos))
            torch.manual_seed(seed)
            answers = oracle.ask(
                [contexts[i] for i in idx], [questions[i] for i in idx] if len(idx) > 1 else questions[idx[0]],
                layer=layer, positions=pos, mode=mode, target_adapter=adapter,
                source=source if adapter is not None else "orig",
                max_new_tokens=sampling.max_new_tokens, do_sample=sampling.do_sample,
                temperature=sampling.temperature, num_samples=sampling.num_samples, batch_size=batch_size,
                **control,
            )
            for a in answers:
                out[idx[a.context_index]].append(a)
    return out


def organism_replies(oracle, items: list[Item], *, max_new_tokens: int = 48, seed: int = 0, black_box: bool = False,
                     progress: bool = False) -> dict[int, str]:
    """Replies (greedy) of each item's organism to its target prompt, or to its black-box question;
    negatives (read_base) get the base model's replies. Keyed by id(item)."""
    groups: dict[str | None, list[Item]] = defaultdict(list)
    for it in items:
        groups[None if it.read_base else it.organism.adapter].append(it)
    out = {}
    for adapter, its in groups.items():
        prompts = [(it.black_box or it.messages) if black_box else it.messages for it in its]
        with oracle.target_weights(adapter) as model:
            texts = generate_replies(model, oracle.tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed,
                                     progress=progress, desc="organism replies")
        out.update({id(it): t for it, t in zip(its, texts)})
    return out


@torch.no_grad()
def logit_lens_answers(oracle, items: list[Item], *, reading: Reading, k: int = 20,
                       progress: bool = False) -> list[list[str]]:
    """Per item: the top-k tokens of the organism's residual at the source layer, averaged over the
    positions the oracle reads, through the final norm and unembedding (most probable first)."""
    from ..hooks import collect_activations

    layer = layer_from_percent(oracle.model, reading.layer_percent)
    out = []
    for it in tqdm(items, desc="logit lens", disable=not progress, leave=False):
        ids = chat_ids(oracle.tokenizer, it.messages, add_generation_prompt=True)
        pos, mode = selection(reading, oracle.tokenizer, it.messages)
        with oracle.target_weights(None if it.read_base else it.organism.adapter) as model:
            x = torch.tensor([ids], device=next(model.parameters()).device)
            h = collect_activations(model, x, layers=[layer], use_adapter=not it.read_base)[layer][0]
        sel = _resolve(pos, len(ids))
        probs = logit_lens_probs(oracle.model, h[sel]).mean(0)
        out.append(top_tokens(oracle.tokenizer, probs, k))
    return out


def _resolve(pos, length: int) -> list[int]:
    from ..oracle import resolve_positions

    return resolve_positions(pos, length)
