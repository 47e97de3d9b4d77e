"""Forward hooks: norm-matched injection into the oracle, and early-stopping activation collection."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence

import torch
from torch import nn

from .models import check_layer, decoder_layers, hidden_size, unwrap


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def flatten_injection(vectors, positions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn per-row vectors/positions into flat (rows, cols, vecs) index tensors.

    `vectors`: a list (one per batch row) of [K_b, D] tensors, or a [B, K, D] tensor.
    `positions`: a list of lists of ints (ragged K_b allowed), or a [B, K] tensor.
    """
    if isinstance(vectors, torch.Tensor) and vectors.dim() == 2:
        vectors = [vectors]
        positions = [positions]
    if isinstance(positions, torch.Tensor):
        positions = positions.tolist()
    if len(vectors) != len(positions):
        raise ValueError(f"vectors has {len(vectors)} rows but positions has {len(positions)}")
    rows, cols, vecs = [], [], []
    for b, (v, p) in enumerate(zip(vectors, positions)):
        p = [int(x) for x in p]
        if v.dim() != 2 or v.shape[0] != len(p):
            raise ValueError(f"row {b}: vectors of shape {tuple(v.shape)} do not match {len(p)} positions")
        rows += [b] * len(p)
        cols += p
        vecs.append(v)
    if not vecs:
        raise ValueError("nothing to inject: vectors is empty")
    return torch.tensor(rows), torch.tensor(cols), torch.cat([v.reshape(v.shape[0], -1) for v in vecs])


INJECTION_GRADS = ("detached", "through_norm")


def steer(hidden: torch.Tensor, rows, cols, vecs, coefficient: float = 1.0, *,
          grad: str = "detached") -> torch.Tensor:
    """h' = h + c * ||h|| * v / ||v|| at (rows, cols), in float32, returned as a new tensor.

    grad="detached" (the paper's reference): the added vector is a constant for autograd, so
    dh'/dh is the identity. grad="through_norm": the gradient also flows through ||h||."""
    if grad not in INJECTION_GRADS:
        raise ValueError(f"grad={grad!r}: use one of {', '.join(INJECTION_GRADS)}")
    h = hidden[rows, cols].float()
    v = vecs.float()
    unit = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    added = coefficient * h.norm(dim=-1, keepdim=True) * unit
    new = h + (added.detach() if grad == "detached" else added)
    return hidden.index_put((rows, cols), new.to(hidden.dtype))


@contextlib.contextmanager
def inject(
    model: nn.Module,
    vectors,
    positions,
    *,
    hook_layer: int = 1,
    coefficient: float = 1.0,
    grad: str = "detached",
):
    """While active, the output of decoder block `hook_layer` at each (row b, position p) becomes
    h + coefficient * ||h|| * v / ||v||. Only prefill passes are steered; cached decode steps
    (one new token) pass through untouched. `grad`: see `steer`."""
    rows, cols, vecs = flatten_injection(vectors, positions)
    with inject_flat(model, rows, cols, vecs, hook_layer=hook_layer, coefficient=coefficient, grad=grad):
        yield


@contextlib.contextmanager
def inject_flat(
    model: nn.Module,
    rows: torch.Tensor,
    cols: torch.Tensor,
    vecs: torch.Tensor,
    *,
    hook_layer: int = 1,
    coefficient: float = 1.0,
    grad: str = "detached",
    bounds: tuple[int, int] | None = None,
):
    """`inject` on flat index tensors: vecs[i] goes to (rows[i], cols[i]). `bounds` = (max row, max col),
    when the caller knows them, spares reading device tensors back (a GPU sync) for the range check."""
    layers = decoder_layers(model)
    check_layer(len(layers), hook_layer, "hook_layer")
    if grad not in INJECTION_GRADS:
        raise ValueError(f"grad={grad!r}: use one of {', '.join(INJECTION_GRADS)}")
    d = hidden_size(model)
    if vecs.shape[-1] != d:
        raise ValueError(f"vectors have width {vecs.shape[-1]} but the model's hidden size is {d}")
    if bounds is None:
        if (cols < 0).any():
            raise ValueError("positions must be non-negative indices into the padded batch")
        bounds = (int(rows.max()), int(cols.max()))
    max_row, max_col = bounds
    cache: dict[torch.device, tuple] = {}

    def hook(module, args, output):
        hidden = _hidden(output)
        if hidden.shape[1] == 1 and max_col > 0:
            return None  # a decode step: the placeholders were steered during prefill
        if max_row >= hidden.shape[0] or max_col >= hidden.shape[1]:
            raise ValueError(
                f"injection at row {max_row}, position {max_col} is outside the batch {tuple(hidden.shape[:2])}"
            )
        dev = hidden.device
        if dev not in cache:
            cache[dev] = (rows.to(dev), cols.to(dev), vecs.to(dev))
        return _replace_hidden(output, steer(hidden, *cache[dev], coefficient, grad=grad))

    handle = layers[hook_layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


class _StopForward(Exception):
    pass


def cache_kwarg(model: nn.Module) -> str:
    """The name of the KV-cache argument of this model's forward: `cache` in recent transformers,
    `past_key_values` before (and still accepted, with a deprecation warning, for a while)."""
    return "cache" if "cache" in inspect.signature(unwrap(model).forward).parameters else "past_key_values"


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so a left-padded row reads exactly as it
    would alone (a plain forward otherwise numbers the pad tokens too)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


@contextlib.contextmanager
def _adapters_off(model: nn.Module):
    """Base weights only, dropout off; the caller's train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
            with model.disable_adapter():
                yield
        else:
            yield
    finally:
        model.train(was_training)


def collect_activations(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    layers: Sequence[int],
    use_adapter: bool = False,
    position_ids: torch.Tensor | None = None,
    past_key_values=None,
) -> dict[int, torch.Tensor]:
    """Residual stream (block outputs) at `layers`: {layer: [B, L, D]}, from one forward that stops
    after the deepest requested block. On a PEFT model the adapter is off unless `use_adapter`.
    `position_ids` without a mask: packed sequences (positions restart at 0 at each one; transformers
    builds the block-diagonal mask from them). `past_key_values`: a cache of tokens that come before
    `input_ids` in every row (see `steering.collect_padded`), filled in place up to the deepest block;
    `attention_mask` then covers `input_ids` only."""
    blocks = decoder_layers(model)
    wanted = sorted({check_layer(len(blocks), int(layer), "layers") for layer in layers})
    if not wanted:
        raise ValueError("layers must name at least one decoder block")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
        attention_mask = None if attention_mask is None else attention_mask[None]
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: the context has no tokens")
    deepest = wanted[-1]
    out: dict[int, torch.Tensor] = {}

    def make_hook(i):
        def hook(module, args, output):
            out[i] = _hidden(output)
            if i == deepest:
                raise _StopForward

        return hook

    handles = [blocks[i].register_forward_hook(make_hook(i)) for i in wanted]
    ctx = contextlib.nullcontext() if use_adapter else _adapters_off(model)
    inner = unwrap(model) if not use_adapter else model
    try:
        with ctx, torch.no_grad():
            was_training = inner.training
            if use_adapter:
                inner.eval()
            try:
                kwargs, use_cache = {}, False
                if past_key_values is not None:
                    past = past_key_values.get_seq_length()
                    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
                    attention_mask = torch.cat([mask.new_ones(mask.shape[0], past), mask], 1)
                    kwargs.update({cache_kwarg(inner): past_key_values}, position_ids=past + position_ids_from_mask(mask))
                    use_cache = True
                elif position_ids is not None:
                    if attention_mask is not None:
                        raise ValueError("give position_ids (packed sequences) or attention_mask, not both")
                    kwargs["position_ids"] = position_ids if position_ids.dim() == 2 else position_ids[None]
                elif attention_mask is not None:  # (for a mask without padding these are the default positions)
                    kwargs["position_ids"] = position_ids_from_mask(attention_mask)
                inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache, **kwargs)
            except _StopForward:
                pass
            finally:
                inner.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return {i: out[i] for i in wanted}

