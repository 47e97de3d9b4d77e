"""Batched steered passes of the oracle: left-pad the prompts, inject each row's vectors at its
placeholders, then generate or score answer choices.

The query API (`oracle.py`), the trainer's in-training evaluation and `ao eval` all come here, so
there is one place that decides how padding shifts the placeholder positions and how the injection
is set up. Whatever adapter is active on `model` answers; the callers choose it.
"""

from __future__ import annotations

import contextlib

import torch

from .hooks import inject, position_ids_from_mask
from .models import model_device


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


@torch.no_grad()
def generate_answers(
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
) -> list[str]:
    """One batched `generate` over oracle prompts, each steered at its placeholders by its vectors
    (`vectors=None`: no injection, the question alone). Uses whatever adapter is active on `model`."""
    ids, mask, steer = steered_batch(model, tokenizer, prompt_ids, placeholder_positions, vectors,
                                     hook_layer=hook_layer, coefficient=coefficient)
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id)
    if do_sample:
        gen_kwargs["temperature"] = temperature
    else:  # keep the model's sampling defaults from warning about being ignored
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    with steer:
        out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
    return [t.strip() for t in tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]


@torch.no_grad()
def next_token_logits(model, tokenizer, prompt_ids: list[list[int]], placeholder_positions: list[list[int]],
                      vectors: list[torch.Tensor] | None, *, hook_layer: int = 1, coefficient: float = 1.0):
    """[B, V] float32 logits of the first answer token of each steered prompt, from one forward."""
    ids, mask, steer = steered_batch(model, tokenizer, prompt_ids, placeholder_positions, vectors,
                                     hook_layer=hook_layer, coefficient=coefficient)
    with steer:
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                     use_cache=False, logits_to_keep=1).logits[:, -1].float()


def choice_token_ids(tokenizer, choices: tuple[str, ...]) -> list[int]:
    """The first token of each choice as the assistant would start its answer with it."""
    ids = [tokenizer.encode(c, add_special_tokens=False)[0] for c in choices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"choices {choices} share their first token {ids}; they cannot be told apart in one step")
    return ids


@torch.no_grad()
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
    the choices (the format check). Same injection rules as `generate_answers`, no decoding loop."""
    logits = next_token_logits(model, tokenizer, prompt_ids, placeholder_positions, vectors,
                               hook_layer=hook_layer, coefficient=coefficient)
    cids = torch.tensor(choice_token_ids(tokenizer, choices), device=logits.device)
    picked = logits[:, cids].argmax(-1).tolist()
    formatted = torch.isin(logits.argmax(-1), cids).tolist()
    return [choices[i] for i in picked], formatted
