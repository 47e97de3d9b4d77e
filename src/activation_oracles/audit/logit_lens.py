"""Logit lens: a residual-stream vector read out through the model's final norm and unembedding.

The final norm is found by structure, not by name: among the modules beside the decoder-block list
(siblings under the same parent), the one whose output is exactly the unembedding's input in a
probe forward pass.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models import decoder_layers, model_device, unwrap


def _siblings_of_blocks(model: nn.Module) -> list[nn.Module]:
    base = unwrap(model)
    blocks = decoder_layers(base)
    for mod in base.modules():
        children = list(mod.children())
        if any(c is blocks for c in children):
            return [c for c in children if c is not blocks and not isinstance(c, nn.Embedding)]
    return []


@torch.no_grad()
def final_norm(model: nn.Module) -> nn.Module:
    """The module that turns the last block's output into the unembedding's input."""
    base = unwrap(model)
    head = base.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(base).__name__} has no output embeddings to read a logit lens through")
    cands = [c for c in _siblings_of_blocks(base) if any(True for _ in c.parameters()) or len(list(c.children())) == 0]
    seen: dict[int, torch.Tensor] = {}
    head_in: list[torch.Tensor] = []
    hooks = [c.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, o[0] if isinstance(o, tuple) else o))
             for i, c in enumerate(cands)]
    hooks.append(head.register_forward_hook(lambda m, a, o: head_in.append(a[0])))
    try:
        ids = torch.tensor([[1, 2, 3]], device=model_device(base))
        base(input_ids=ids, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    for i, c in enumerate(cands):
        out = seen.get(i)
        if out is not None and head_in and out.shape == head_in[0].shape and torch.equal(out, head_in[0]):
            return c
    raise ValueError(f"could not find the final norm of {type(base).__name__}: no module beside the decoder "
                     "blocks feeds the unembedding")


@torch.no_grad()
def logit_lens_probs(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """[L, D] residual vectors -> [L, V] next-token probabilities through final norm + unembedding."""
    norm, head = final_norm(model), unwrap(model).get_output_embeddings()
    h = hidden.to(next(head.parameters()).dtype)
    return torch.softmax(head(norm(h)).float(), dim=-1)


def top_tokens(tokenizer, probs: torch.Tensor, k: int = 10) -> list[str]:
    """The k most probable tokens of a [V] distribution, decoded and stripped, empties skipped."""
    out = []
    for t in probs.argsort(descending=True)[: 4 * k].tolist():
        s = tokenizer.decode([t]).strip()
        if s and s not in out:
            out.append(s)
        if len(out) == k:
            break
    return out
