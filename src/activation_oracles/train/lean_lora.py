"""PEFT's LoRA linear layers with a leaner forward and backward for the training step: the same function,
far fewer ops.

PEFT's `lora.Linear.forward` runs the base layer, then per active adapter the dropout, A and B modules, a
multiplication by the scaling and an addition, with Python bookkeeping around each (argument checks,
adapter lookups, dtype casts), and autograd records every one of those ops: about 13 ops forward and 20
backward per adapted linear, seven linears per block, some 8,000 of a Qwen3-8B step's 13,000. On a GPU each
is host time before any kernel runs. Here one autograd Function computes

    y = x W^T + b + scaling * dropout(x) A^T B^T

with the two products on 2D views and the LoRA term added in place (`addmm_`), and writes the backward by
hand (the frozen W gets no gradient): no module calls, nothing recorded op by op.

It applies only where that is exactly PEFT's computation: one active vanilla LoRA adapter on a plain
`nn.Linear`, not merged, and adapter and base weights of one dtype (or under autocast, which casts them
alike). Every other call goes to PEFT's own forward.
"""

from __future__ import annotations

import types

import torch
from torch import nn


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return t if t is None or t.dtype == dtype else t.to(dtype)


class _LoraLinear(torch.autograd.Function):
    """y = x W^T + b + s * drop(x) A^T B^T on [N, in] inputs; gradients for x, A and B only."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling: float, p: float, dtype):
        x, weight, bias, a, b = (_cast(t, dtype) for t in (x, weight, bias, a, b))
        xd, mask = torch.native_dropout(x, p, True) if p > 0 else (x, None)
        h = xd.mm(a.t())
        out = x.mm(weight.t()) if bias is None else torch.addmm(bias, x, weight.t())
        out.addmm_(h, b.t(), alpha=scaling)
        ctx.save_for_backward(xd, h, weight, a, b, mask)
        ctx.scaling, ctx.p = scaling, p
        return out

    @staticmethod
    def backward(ctx, g):
        xd, h, weight, a, b, mask = ctx.saved_tensors
        s = ctx.scaling
        g = g.to(h.dtype)
        gh = g.mm(b).mul_(s)  # d/dh
        grad_a = gh.t().mm(xd) if ctx.needs_input_grad[3] else None
        grad_b = g.t().mm(h).mul_(s) if ctx.needs_input_grad[4] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            gxd = gh.mm(a)
            if mask is not None:
                gxd = torch.ops.aten.native_dropout_backward(gxd, mask, 1.0 / (1.0 - ctx.p))
            grad_x = g.mm(weight).add_(gxd)
        return grad_x, None, None, grad_a, grad_b, None, None, None


def _lean_forward(self, x, *args, **kwargs):
    lean = self.__dict__.get("_ao_lean")
    if lean is None or args or kwargs or self.merged_adapters:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.base_layer
    if self._disable_adapters:
        return torch.nn.functional.linear(x, base.weight, base.bias)
    name, a, b, dropout = lean
    w = base.weight
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
    elif a.weight.dtype == w.dtype == x.dtype:
        dtype = w.dtype
    else:  # (mixed dtypes without autocast: PEFT's own casts and promotion)
        return type(self).forward(self, x)
    if self.active_adapters != [name]:
        return type(self).forward(self, x)
    p = dropout.p if dropout is not None and dropout.training else 0.0
    shape = x.shape
    out = _LoraLinear.apply(x.reshape(-1, shape[-1]), w, base.bias, a.weight, b.weight, self.scaling[name], p, dtype)
    return out.view(*shape[:-1], out.shape[-1])


def lean_lora(model: nn.Module) -> int:
    """Give every LoRA linear of `model` that qualifies the lean forward; returns how many. Idempotent."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:
        return 0
    n = 0
    for m in model.modules():
        if type(m) is not LoraLinear or type(m.base_layer) is not nn.Linear or getattr(m, "fan_in_fan_out", False):
            continue
        names = list(m.lora_A.keys())
        if len(names) != 1 or names[0] in getattr(m, "lora_variant", {}) or getattr(m, "lora_bias", {}).get(names[0]):
            continue
        if m.base_layer.weight.requires_grad or (m.base_layer.bias is not None and m.base_layer.bias.requires_grad):
            continue  # (the hand-written backward gives the base layer no gradient)
        name = names[0]
        drop = m.lora_dropout[name]
        drop = drop if isinstance(drop, nn.Dropout) else None
        m.__dict__["_ao_lean"] = (name, m.lora_A[name], m.lora_B[name], drop)
        m.forward = types.MethodType(_lean_forward, m)
        n += 1
    return n


def plain_lora(model: nn.Module) -> None:
    """Undo `lean_lora`."""
    for m in model.modules():
        if "_ao_lean" in m.__dict__:
            del m.__dict__["_ao_lean"]
            m.__dict__.pop("forward", None)
