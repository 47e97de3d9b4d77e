"""The training objective as one module: base-model context forward, injected oracle forward, and the
cross-entropy at labelled positions only (the LM head never sees unlabelled positions).

Wrapping all of it in one `nn.Module` lets DDP/FSDP see a single forward per micro-batch.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import collect_activations, inject, position_ids_from_mask
from ..models import unwrap
from ..prompt import IGNORE_INDEX
from .batching import OracleBatch, layer_tuple


def backbone_of(model: nn.Module) -> nn.Module:
    """The decoder stack that returns hidden states (no LM head) of a causal LM, PEFT layers included."""
    base = unwrap(model)
    dec = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, base.base_model_prefix, base)
    if dec is base:
        raise ValueError(f"cannot find the decoder stack inside {type(base).__name__}")
    return dec


def autocast_ctx(mode: str | None, device: torch.device):
    if mode == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def collect_sources(model: nn.Module, ctx_ids, ctx_mask, layers, *, autocast: str | None = None):
    """{layer: [C, Lc, D]} block outputs of the base model (adapter off, dropout off) for left-padded
    contexts; one forward that stops after the deepest layer."""
    with autocast_ctx(autocast, ctx_ids.device):
        return collect_activations(model, ctx_ids, ctx_mask, layers=layers)


def collect_groups(model: nn.Module, ctx_ids: list, ctx_mask: list, layers, *, autocast: str | None = None):
    """collect_sources for each context length group: [{layer: [C_g, L_g, D]}, ...]."""
    return [collect_sources(model, i, m, layers, autocast=autocast) for i, m in zip(ctx_ids, ctx_mask)]


def gather_vectors(acts: list[dict[int, torch.Tensor]], src) -> list[torch.Tensor]:
    """Per example, the [K, D] source vectors at its layer and context positions ([n_layers x K, D],
    layer-major, for a multi-layer example)."""
    dev = next(iter(acts[0].values())).device
    out = []
    for layer, g, row, pos in src:
        idx = torch.tensor(pos, device=dev)
        out.append(torch.cat([acts[g][x][row, idx] for x in layer_tuple(layer)]))
    return out


class OracleObjective(nn.Module):
    """forward(**batch tensors) -> (per-token cross-entropy [N], batch row of each token [N])."""

    def __init__(self, model: nn.Module, *, hook_layer: int = 1, coefficient: float = 1.0,
                 autocast: str | None = None, injection_grad: str = "detached"):
        super().__init__()
        self.model = model
        self.hook_layer = hook_layer
        self.coefficient = coefficient
        self.autocast = autocast
        self.injection_grad = injection_grad

    def forward(self, ctx_ids, ctx_mask, input_ids, attention_mask, labels, src, layers, inject_positions):
        acts = collect_groups(self.model, ctx_ids, ctx_mask, layers, autocast=self.autocast)
        vectors = gather_vectors(acts, src)
        base = unwrap(self.model)
        head = base.get_output_embeddings()
        with inject(self.model, vectors, inject_positions, hook_layer=self.hook_layer, coefficient=self.coefficient,
                    grad=self.injection_grad):
            with autocast_ctx(self.autocast, input_ids.device):
                out = backbone_of(self.model)(input_ids=input_ids, attention_mask=attention_mask,
                                              position_ids=position_ids_from_mask(attention_mask), use_cache=False)
                hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
                targets = labels[:, 1:]
                sel = targets != IGNORE_INDEX
                logits = head(hidden[:, :-1][sel])
        logits = logits.float()
        cap = getattr(getattr(base, "config", None), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        ce = F.cross_entropy(logits, targets[sel], reduction="none")
        return ce, sel.nonzero()[:, 0]


def batch_kwargs(b: OracleBatch) -> dict:
    return dict(ctx_ids=b.ctx_ids, ctx_mask=b.ctx_mask, input_ids=b.input_ids, attention_mask=b.attention_mask,
                labels=b.labels, src=b.src, layers=b.layers, inject_positions=b.inject_positions)
