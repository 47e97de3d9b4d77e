"""Leaner forwards for the training step: the same functions with far fewer ops (on a GPU every op is host
time before any kernel runs).

LoRA linears (`lean_lora`):

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


def _dropout(x: torch.Tensor, p: float):
    """(dropped x, what the backward needs): F.dropout's own computation, so the masks are PEFT's: the fused
    kernel on a GPU, a scaled Bernoulli noise elsewhere."""
    if x.is_cuda:
        return torch.native_dropout(x, p, True)
    noise = torch.empty_like(x).bernoulli_(1 - p).div_(1 - p)
    return x * noise, noise


class _LoraLinear(torch.autograd.Function):
    """y = x W^T + b + s * drop(x) A^T B^T on [N, in] inputs; gradients for x, A and B only."""

    @staticmethod
    def forward(ctx, x, weight, bias, a, b, scaling: float, p: float, dtype):
        x, weight, bias, a, b = (_cast(t, dtype) for t in (x, weight, bias, a, b))
        xd, mask = _dropout(x, p) if p > 0 else (x, None)
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
            if mask is not None:  # (a bool mask: the fused kernel's; else the scaled noise itself)
                gxd = (torch.ops.aten.native_dropout_backward(gxd, mask, 1.0 / (1.0 - ctx.p))
                       if mask.dtype == torch.bool else gxd.mul_(mask))
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
    """Undo `lean_lora` and `lean_norms`."""
    for m in model.modules():
        for key in ("_ao_lean", "_ao_lean_norm"):
            if key in m.__dict__:
                del m.__dict__[key]
                m.__dict__.pop("forward", None)


# ----------------------------------------------------------------------------- RMS norms

# RMSNorm as transformers writes it (Llama, Qwen, Mistral, ...): x in float32, times rsqrt(mean(x^2) + eps),
# back to x's dtype, times the weight: eight ops forward and some fifteen backward per norm, four norms per
# Qwen3 block. torch's fused kernel does the normalisation in one op each way; which of the two common ways
# the weight is applied (w * y, or Gemma's (1 + w) * y before the cast) is tried on a probe input against the
# module's own forward, and a module class is changed only where one of them gives its numbers.
_NORM_FORMS = {
    "weight": lambda y, w, dtype: w * y.to(dtype),
    "one_plus_weight": lambda y, w, dtype: (y * (1.0 + w.float())).to(dtype),
}


def _eps(m: nn.Module):
    for name in ("variance_epsilon", "eps"):
        v = getattr(m, name, None)
        if isinstance(v, float):
            return v
    return None


def _norm_forward(self, x):
    form, eps = self.__dict__["_ao_lean_norm"]
    y = torch.ops.aten._fused_rms_norm(x.float(), [x.shape[-1]], None, eps)[0]
    return _NORM_FORMS[form](y, self.weight, x.dtype)


def _norm_form(m: nn.Module, eps: float) -> str | None:
    """The form that computes this norm module's own forward on a probe (float32 and its dtype), or None."""
    d = m.weight.shape[0]
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(3, 5, d, generator=g).to(m.weight.device)
    for form, fn in _NORM_FORMS.items():
        ok = True
        for dtype in {torch.float32, m.weight.dtype}:
            x = probe.to(dtype)
            with torch.no_grad():
                try:
                    want = type(m).forward(m, x)
                except Exception:  # noqa: BLE001 - not a norm over the last dimension: left as it is
                    return None
                got = fn(torch.ops.aten._fused_rms_norm(x.float(), [d], None, eps)[0], m.weight, dtype)
            tol = 1e-5 if dtype == torch.float32 else 1e-2
            if got.dtype != want.dtype or not torch.allclose(got.float(), want.float(), rtol=tol, atol=tol):
                ok = False
                break
        if ok:
            return form
    return None


def lean_norms(model: nn.Module) -> int:
    """Give every norm module of `model` (a leaf with a 1-D weight and an eps) whose function one of the RMS
    forms computes the fused forward; returns how many. Checked once per module class on a probe; the others
    (LayerNorm, anything else) keep their own forward."""
    if not hasattr(torch.ops.aten, "_fused_rms_norm"):
        return 0
    forms: dict[type, str | None] = {}
    n = 0
    for m in model.modules():
        w, eps = getattr(m, "weight", None), _eps(m)
        if eps is None or not isinstance(w, nn.Parameter) or w.dim() != 1 or list(m.children()):
            continue
        if type(m) not in forms:
            forms[type(m)] = _norm_form(m, eps)
        if forms[type(m)] is None:
            continue
        m.__dict__["_ao_lean_norm"] = (forms[type(m)], eps)
        m.forward = types.MethodType(_norm_forward, m)
        n += 1
    return n
