"""Batched steered passes of the oracle: left-pad the prompts, inject each row's vectors at its
placeholders, then generate or score answer choices.

The query API (`oracle.py`), the trainer's in-training evaluation and `ao eval` all come here, so
there is one place that decides how padding shifts the placeholder positions and how the injection
is set up. Whatever adapter is active on `model` answers; the callers choose it.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .hooks import cache_kwarg, collect_activations, inject, position_ids_from_mask
from .models import decoder_layers, model_device, unwrap

# Rows that start with at least this many identical tokens (a chat template's system prompt and turn
# header) run them once, cached, instead of once per row; fewer are not worth the extra forward.
SHARED_PREFIX_MIN = 8


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """[B, W] ids and attention mask, left-padded; and each row's offset (pads in front of it)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    offsets = []
    for row, s in enumerate(seqs):
        off = width - len(s)
        ids[row, off:] = torch.as_tensor(s, dtype=torch.long)
        mask[row, off:] = 1
        offsets.append(off)
    return ids, mask, offsets


def pack_sequences(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """[1, T] ids of the sequences end to end, their [1, T] position ids (restarting at 0 at each
    sequence, from which transformers builds the block-diagonal mask of packed sequences), and each
    sequence's start in the row; the unpadded counterpart of `left_pad`."""
    lengths = [len(s) for s in seqs]
    starts = [0]
    for n in lengths[:-1]:
        starts.append(starts[-1] + n)
    ids = torch.tensor([[t for s in seqs for t in s]], dtype=torch.long)
    pos = torch.cat([torch.arange(n) for n in lengths])[None] if seqs else torch.zeros(1, 0, dtype=torch.long)
    return ids, pos, starts


def packing_error(model: torch.nn.Module, *, lengths: Sequence[int] = (5, 3, 7), collect=None,
                  layer: int | None = None) -> float:
    """Largest relative difference between the activations of short random sequences run packed into one
    row and run left-padded through transformers' own masks, at `layer` (default: the model's second block,
    or its only one). Near 0 (dtype rounding) when the packed path keeps the sequences apart and numbers
    their positions right; of order 1 when they see each other. `collect(ids [1, T], pos [1, T], seq [T],
    layer) -> [T, D]` is the packed path to check (default: transformers' own packed-sequence detection from
    position ids, no mask)."""
    n_blocks = len(decoder_layers(model))
    layer = min(1, n_blocks - 1) if layer is None else layer
    vocab = unwrap(model).get_input_embeddings().weight.shape[0]
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]
    ids, mask, offsets = left_pad(seqs, 0)
    padded = collect_activations(model, ids.to(dev), mask.to(dev), layers=[layer])[layer]
    ids, pos, starts = pack_sequences(seqs)
    if collect is None:
        packed = collect_activations(model, ids.to(dev), layers=[layer], position_ids=pos.to(dev))[layer][0]
    else:
        seq = torch.repeat_interleave(torch.arange(len(seqs)), torch.tensor([len(x) for x in seqs]))
        packed = collect(ids.to(dev), pos.to(dev), seq.to(dev), layer)
    ref = torch.cat([padded[i, off:] for i, off in enumerate(offsets)]).float()
    return float((packed.float() - ref).norm(dim=-1).max() / ref.norm(dim=-1).clamp_min(1e-6).max())


def shared_prefix(seqs: Sequence[Sequence[int]], limit: int) -> int:
    """How many first tokens every row has in common, at most `limit`."""
    first, n = seqs[0], max(0, min(limit, *(len(s) for s in seqs)))
    for k in range(n):
        if any(s[k] != first[k] for s in seqs[1:]):
            return k
    return n


_PREFIX_OK: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prefix_sharing_ok(model: torch.nn.Module) -> bool:
    """Whether this model's forward gives the same activations with a shared prefix cached as without
    (`prefix_sharing_error` within its dtype's rounding); measured once per model."""
    key = unwrap(model)
    if key not in _PREFIX_OK:
        tol = 1e-3 if next(key.parameters()).dtype == torch.float32 else 5e-2
        try:
            _PREFIX_OK[key] = prefix_sharing_error(model) < tol
        except Exception:  # noqa: BLE001 - a model whose cache does not take this path: run rows whole
            _PREFIX_OK[key] = False
    return _PREFIX_OK[key]


def prefix_sharing_error(model: torch.nn.Module, *, lengths: Sequence[int] = (9, 12, 10), prefix: int = 6) -> float:
    """Largest relative difference between the last block's activations of short random rows that start
    with the same `prefix` tokens, run with that prefix once (cached) and run left-padded whole. Near 0
    (dtype rounding) when the model's forward honours the cache, mask and position ids; of order 1 when not."""
    layer = len(decoder_layers(model)) - 1
    vocab = unwrap(model).get_input_embeddings().weight.shape[0]
    g = torch.Generator().manual_seed(0)
    head = torch.randint(1, vocab, (prefix,), generator=g).tolist()
    seqs = [head + torch.randint(1, vocab, (n - prefix,), generator=g).tolist() for n in lengths]
    ids, mask, offsets = left_pad(seqs, 0)
    dev = model_device(model)
    ref = collect_activations(model, ids.to(dev), mask.to(dev), layers=[layer])[layer]
    got = _collect_shared(model, seqs, 0, prefix, [layer], False)[0][layer]
    ref = torch.cat([ref[i, off:] for i, off in enumerate(offsets)]).float()
    got = torch.cat([got[i, off:] for i, off in enumerate(offsets)]).float()
    return float((got - ref).norm(dim=-1).max() / ref.norm(dim=-1).clamp_min(1e-6).max())


@torch.no_grad()
def collect_padded(model, seqs: list[list[int]], pad_id: int, *, layers: Sequence[int], use_adapter: bool = False,
                   share_prefix: bool = True) -> tuple[dict[int, torch.Tensor], list[int]]:
    """`collect_activations` of left-padded `seqs`: ({layer: [B, W, D]}, each row's offset), as `left_pad`
    lays them out. The tokens every row starts with are run once, cached, when there are at least
    `SHARED_PREFIX_MIN` of them and the model passes `prefix_sharing_ok`."""
    p = shared_prefix(seqs, min(len(s) for s in seqs) - 1) if share_prefix and len(seqs) > 1 else 0
    if p >= SHARED_PREFIX_MIN and prefix_sharing_ok(model):
        return _collect_shared(model, seqs, pad_id, p, layers, use_adapter)
    ids, mask, offsets = left_pad(seqs, pad_id)
    dev = model_device(model)
    return collect_activations(model, ids.to(dev), mask.to(dev), layers=layers, use_adapter=use_adapter), offsets


def _collect_shared(model, seqs, pad_id, p, layers, use_adapter):
    """`collect_padded` with the first `p` tokens (the same in every row) run once."""
    from transformers import DynamicCache

    dev = model_device(model)
    cache = DynamicCache(config=unwrap(model).config)
    head = collect_activations(model, torch.tensor([seqs[0][:p]], device=dev), layers=layers,
                               use_adapter=use_adapter, past_key_values=cache)
    cache.batch_repeat_interleave(len(seqs))
    ids, mask, offsets = left_pad([s[p:] for s in seqs], pad_id)
    tail = collect_activations(model, ids.to(dev), mask.to(dev), layers=layers, use_adapter=use_adapter,
                               past_key_values=cache)
    out = {}
    for x in layers:
        h, t = head[x][0], tail[x]
        full = t.new_zeros(t.shape[0], p + t.shape[1], t.shape[2])
        for row, off in enumerate(offsets):  # [pads, shared prefix, the row's own tokens]
            full[row, off : off + p] = h
            full[row, off + p :] = t[row, off:]
        out[x] = full
    return out, offsets


def _prefix_cache(model, prefix: list[int], rows: int, injected=None, *, hook_layer: int = 1,
                  coefficient: float = 1.0):
    """The cache of `prefix` run once through `model` (its active adapter), with `injected` = (vectors,
    positions) steered in, repeated for `rows` rows."""
    steer = contextlib.nullcontext()
    if injected is not None:
        steer = inject(model, [injected[0]], [injected[1]], hook_layer=hook_layer, coefficient=coefficient)
    with steer:
        out = model(input_ids=torch.tensor([prefix], device=model_device(model)), use_cache=True, logits_to_keep=1)
    cache = out.get("cache") if out.get("cache") is not None else out.get("past_key_values")
    cache.batch_repeat_interleave(rows)
    return cache


def steered_batch(model, tokenizer, prompt_ids, placeholder_positions, vectors, *, hook_layer: int = 1,
                  coefficient: float = 1.0):
    """(ids, mask, steer): left-padded prompts on the model's device and the context manager that
    injects each row's vectors at its (shifted) placeholders; a no-op context when `vectors` is None."""
    ids, mask, offsets = left_pad(prompt_ids, tokenizer.pad_token_id)
    dev = model_device(model)
    steer = contextlib.nullcontext()
    if vectors is not None:
        positions = [[off + p for p in ps] for off, ps in zip(offsets, placeholder_positions)]
        steer = inject(model, vectors, positions, hook_layer=hook_layer, coefficient=coefficient)
    return ids.to(dev), mask.to(dev), steer


@dataclass
class Generation:
    """What one batched `generate` produced, per row: the answer text, its token ids (up to and including
    the end-of-turn token) and, when asked for, each token's log-probability under the model."""

    texts: list[str]
    token_ids: list[list[int]]
    token_logprobs: list[list[float]] | None = None


def _stop_ids(model, tokenizer) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}


@torch.no_grad()
def generate_steered(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    placeholder_positions: list[list[int]],
    vectors: list[torch.Tensor] | None,
    *,
    hook_layer: int = 1,
    coefficient: float = 1.0,
    max_new_tokens: int = 40,
    do_sample: bool = False,
    temperature: float = 1.0,
    return_logprobs: bool = False,
) -> Generation:
    """One batched `generate` over oracle prompts, each steered at its placeholders by its vectors
    (`vectors=None`: no injection, the question alone). Uses whatever adapter is active on `model`.

    Log-probabilities are those of the model's own distribution (temperature 1, no top-k/top-p), so a
    sampled answer and a greedy one are scored alike."""
    ids, mask, steer = steered_batch(model, tokenizer, prompt_ids, placeholder_positions, vectors,
                                     hook_layer=hook_layer, coefficient=coefficient)
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id)
    if do_sample:
        gen_kwargs["temperature"] = temperature
    else:  # keep the model's sampling defaults from warning about being ignored
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    if return_logprobs:
        gen_kwargs.update(output_logits=True, return_dict_in_generate=True)
    with steer:
        out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
    seqs = out.sequences if return_logprobs else out
    new = seqs[:, ids.shape[1]:]
    stop = _stop_ids(model, tokenizer)
    token_ids = []
    for row in new.tolist():
        end = next((i + 1 for i, t in enumerate(row) if t in stop), len(row))
        token_ids.append(row[:end])
    logprobs = None
    if return_logprobs:
        steps = torch.stack(out.logits, 1).float().log_softmax(-1)  # [B, T, V]
        picked = steps.gather(-1, new[:, : steps.shape[1], None].to(steps.device))[..., 0].tolist()
        logprobs = [lp[: len(t)] for lp, t in zip(picked, token_ids)]
    texts = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return Generation(texts, token_ids, logprobs)


def generate_answers(model, tokenizer, prompt_ids, placeholder_positions, vectors, **kwargs) -> list[str]:
    """The answer texts of `generate_steered` (same arguments)."""
    return generate_steered(model, tokenizer, prompt_ids, placeholder_positions, vectors, **kwargs).texts


def _shared_part(prompt_ids, placeholder_positions, vectors, limit: int) -> tuple[int, int]:
    """(p, k): every prompt starts with the same p tokens (at most `limit`), and its first k injections are
    the same too (same positions, equal vectors), all of them before p. The template's system prompt is
    such a part, and so are the placeholders of a context's template tokens, whose activations the
    contexts share (`collect_padded` reads them once)."""
    p = shared_prefix(prompt_ids, limit)
    if vectors is None:
        return p, 0
    first_pos, first_vec, k = placeholder_positions[0], vectors[0], 0
    while k < len(first_pos) and first_pos[k] < p and all(
            len(ps) > k and ps[k] == first_pos[k] and torch.equal(v[k], first_vec[k])
            for ps, v in zip(placeholder_positions[1:], vectors[1:])):
        k += 1
    nxt = [ps[k] for ps in placeholder_positions if len(ps) > k]  # each row's first own injection
    return min([p, *nxt]), k


def _steered_logits(model, tokenizer, prompt_ids, placeholder_positions, vectors, *, keep: int, hook_layer: int,
                    coefficient: float) -> torch.Tensor:
    """[B, keep, V] float32 logits at the last `keep` positions of each steered (left-padded) prompt. The
    part every prompt shares (`_shared_part`: the same tokens and injections) is run once and cached when
    it is long enough (`collect_padded`'s rule); each row runs only the rest."""
    p = k = 0
    if len(prompt_ids) > 1:
        p, k = _shared_part(prompt_ids, placeholder_positions, vectors, min(len(s) for s in prompt_ids) - keep)
        if p < SHARED_PREFIX_MIN or not prefix_sharing_ok(model):
            p = k = 0
    past, steer_kw = {}, dict(hook_layer=hook_layer, coefficient=coefficient)
    if p:
        shared = (vectors[0][:k], placeholder_positions[0][:k]) if k else None
        past[cache_kwarg(model)] = _prefix_cache(model, list(prompt_ids[0][:p]), len(prompt_ids), shared, **steer_kw)
        prompt_ids = [s[p:] for s in prompt_ids]
        placeholder_positions = [[x - p for x in ps[k:]] for ps in placeholder_positions]
        if vectors is not None:
            vectors = [v[k:] for v in vectors] if any(placeholder_positions) else None
    ids, mask, steer = steered_batch(model, tokenizer, prompt_ids, placeholder_positions, vectors, **steer_kw)
    positions = p + position_ids_from_mask(mask)
    if p:
        mask = torch.cat([mask.new_ones(mask.shape[0], p), mask], 1)
    with steer:
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=bool(p),
                     logits_to_keep=keep, **past).logits.float()


@torch.no_grad()
def next_token_logits(model, tokenizer, prompt_ids: list[list[int]], placeholder_positions: list[list[int]],
                      vectors: list[torch.Tensor] | None, *, hook_layer: int = 1, coefficient: float = 1.0):
    """[B, V] float32 logits of the first answer token of each steered prompt, from one forward."""
    return _steered_logits(model, tokenizer, prompt_ids, placeholder_positions, vectors, keep=1,
                           hook_layer=hook_layer, coefficient=coefficient)[:, -1]


def choice_token_ids(tokenizer, choices: tuple[str, ...]) -> list[int]:
    """The first token of each choice as the assistant would start its answer with it."""
    ids = [tokenizer.encode(c, add_special_tokens=False)[0] for c in choices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"choices {choices} share their first token {ids}; they cannot be told apart in one step")
    return ids


CHOICE_METHODS = ("auto", "first_token", "sequence")


@dataclass
class ChoiceScores:
    """Per prompt: `probs` [B, C] over the choices (rows sum to 1), `mass` [B] the full-vocabulary
    probability of the choices' first tokens at the first answer position (how much of its answer the
    oracle puts on the choices at all), `formatted` whether greedy decoding would itself start with one
    of the choices' first tokens, and the `method` that produced them."""

    probs: torch.Tensor
    mass: torch.Tensor
    formatted: list[bool]
    method: str


def _choice_tokens(tokenizer, choices) -> list[list[int]]:
    if len(choices) < 2:
        raise ValueError(f"choices={choices!r}: give at least two")
    toks = [tokenizer.encode(c, add_special_tokens=False) for c in choices]
    for c, t in zip(choices, toks):
        if not t:
            raise ValueError(f"choice {c!r} has no tokens")
    for i, a in enumerate(toks):
        for j, b in enumerate(toks):
            if i != j and b[: len(a)] == a:
                raise ValueError(f"choice {choices[i]!r} is a token prefix of {choices[j]!r}: the probability of "
                                 "the shorter one would include the longer; rephrase the choices")
    return toks


def resolve_choice_method(tokenizer, choices, method: str = "auto") -> str:
    """The method `choice_probs` uses for these choices ("auto" resolved), after checking that it can tell
    them apart: raises ValueError before any forward otherwise."""
    if method not in CHOICE_METHODS:
        raise ValueError(f"method={method!r}: use one of {', '.join(CHOICE_METHODS)}")
    firsts = [t[0] for t in _choice_tokens(tokenizer, tuple(choices))]
    distinct = len(set(firsts)) == len(firsts)
    if method == "auto":
        return "first_token" if distinct else "sequence"
    if method == "first_token" and not distinct:
        choice_token_ids(tokenizer, tuple(choices))  # raises, naming the shared first token
    return method


@torch.no_grad()
def choice_probs(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    placeholder_positions: list[list[int]],
    vectors: list[torch.Tensor] | None,
    *,
    choices: tuple[str, ...] = ("Yes", "No"),
    hook_layer: int = 1,
    coefficient: float = 1.0,
    method: str = "auto",
) -> ChoiceScores:
    """How likely the oracle answers with each choice, for a batch of steered prompts.

    `method="first_token"`: softmax over the choices' first tokens at the first answer position, one
    forward (choices must start with distinct tokens). `"sequence"`: softmax over each choice's whole
    token sequence (sum of its tokens' log-probabilities, teacher-forced), one forward of B x C rows.
    `"auto"`: first_token when the first tokens tell the choices apart, else sequence."""
    method = resolve_choice_method(tokenizer, choices, method)
    toks = _choice_tokens(tokenizer, tuple(choices))
    firsts = [t[0] for t in toks]
    n_c = len(choices)
    steer = dict(hook_layer=hook_layer, coefficient=coefficient)
    if method == "first_token":
        first = next_token_logits(model, tokenizer, prompt_ids, placeholder_positions, vectors, **steer).log_softmax(-1)
        cids = torch.tensor(firsts, device=first.device)
        scores = first[:, cids]
    else:
        rows = [list(p) + t for p in prompt_ids for t in toks]
        pos = [ps for ps in placeholder_positions for _ in toks]
        vecs = None if vectors is None else [v for v in vectors for _ in toks]
        keep = max(len(t) for t in toks) + 1
        logp = _steered_logits(model, tokenizer, rows, pos, vecs, keep=keep, **steer).log_softmax(-1)
        cids = torch.tensor(firsts, device=logp.device)
        # row (b, c) ends with choice c's m tokens: they are predicted from the m positions before them
        seq = torch.empty(len(rows), device=logp.device)
        for r in range(len(rows)):
            t = toks[r % n_c]
            m = len(t)
            pred = logp[r, keep - 1 - m : keep - 1]  # [m, V]
            seq[r] = pred.gather(-1, torch.tensor(t, device=logp.device)[:, None]).sum()
        scores = seq.view(-1, n_c)
        first = logp.view(-1, n_c, keep, logp.shape[-1])[:, 0, keep - 1 - len(toks[0])]  # prompt's last position
    return ChoiceScores(probs=scores.softmax(-1), mass=first.exp()[:, cids].sum(-1),
                        formatted=torch.isin(first.argmax(-1), cids).tolist(), method=method)


def choose_answers(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    placeholder_positions: list[list[int]],
    vectors: list[torch.Tensor] | None,
    *,
    choices: tuple[str, ...] = ("Yes", "No"),
    hook_layer: int = 1,
    coefficient: float = 1.0,
) -> tuple[list[str], list[bool]]:
    """Forced choice in one forward: for each prompt, the choice whose first token the oracle rates
    highest at the first answer position, and whether greedy decoding would itself start with one of
    the choices (the format check). A thin layer over `choice_probs(method="first_token")`."""
    s = choice_probs(model, tokenizer, prompt_ids, placeholder_positions, vectors, choices=choices,
                     hook_layer=hook_layer, coefficient=coefficient, method="first_token")
    return [choices[i] for i in s.probs.argmax(-1).tolist()], s.formatted
