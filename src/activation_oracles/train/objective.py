"""The training objective as one module: base-model context forward, injected oracle forward, and the
cross-entropy at labelled positions only (the LM head never sees unlabelled positions).

Wrapping all of it in one `nn.Module` lets DDP/FSDP see a single forward per micro-batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attention import mask_kind, packed_masks
from ..hooks import AdapterSwitch, BlockTap, Injector, ModeSwitch, collect_activations, inject_flat, position_ids_from_mask
from ..models import check_layer, decoder_layers, unwrap
from ..precision import autocast_ctx
from .batching import OracleBatch


def backbone_of(model: nn.Module) -> nn.Module:
    """The decoder stack that returns hidden states (no LM head) of a causal LM, PEFT layers included."""
    base = unwrap(model)
    dec = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, base.base_model_prefix, base)
    if dec is base:
        raise ValueError(f"cannot find the decoder stack inside {type(base).__name__}")
    return dec


def collect_sources(model: nn.Module, ctx_ids, ctx_mask, layers, *, position_ids=None, autocast: str | None = None):
    """{layer: [C, Lc, D]} block outputs of the base model (adapter off, dropout off) for left-padded
    contexts, or for packed ones ([1, T], `position_ids` restarting at each context, no mask); one forward
    that stops after the deepest layer."""
    with autocast_ctx(autocast, ctx_ids.device):
        return collect_activations(model, ctx_ids, ctx_mask, layers=layers, position_ids=position_ids)


def collect_groups(model: nn.Module, ctx_ids: list, ctx_mask: list, ctx_layers: list, ctx_pos: list, *,
                   autocast: str | None = None):
    """collect_sources for each context group (OracleBatch.ctx_*): [{layer: [C_g, L_g, D]}, ...]."""
    return [collect_sources(model, i, m, layers, position_ids=p, autocast=autocast)
            for i, m, layers, p in zip(ctx_ids, ctx_mask, ctx_layers, ctx_pos)]


def gather_flat(acts: list[dict[int, torch.Tensor]], gathers, n: int) -> torch.Tensor:
    """[n, D] source vectors in the flat, example-major order of the placeholders: one indexing op per
    (layer, context group), with indices the collator built (OracleBatch.gathers)."""
    first = next(iter(acts[0].values()))
    out = first.new_empty((n, first.shape[-1]))
    for layer, g, rows, cols, slots in gathers:
        out[slots] = acts[g][layer][rows, cols]
    return out


def gather_vectors(acts: list[dict[int, torch.Tensor]], b: OracleBatch) -> list[torch.Tensor]:
    """Per example, its [K, D] source vectors ([n_layers x K, D], layer-major, for a multi-layer example)."""
    return list(gather_flat(acts, b.gathers, len(b.inject_rows)).split([len(p) for p in b.inject_positions]))


class OracleObjective(nn.Module):
    """forward(**batch_kwargs(batch)) -> (per-token cross-entropy [N], batch row of each token [N])."""

    def __init__(self, model: nn.Module, *, hook_layer: int = 1, coefficient: float = 1.0,
                 autocast: str | None = None, injection_grad: str = "detached"):
        super().__init__()
        self.model = model
        self.hook_layer = hook_layer
        self.coefficient = coefficient
        self.autocast = autocast
        self.injection_grad = injection_grad

    def forward(self, ctx_ids=None, ctx_mask=None, input_ids=None, attention_mask=None, ctx_layers=None, ctx_pos=None,
                label_rows=None, label_cols=None, label_targets=None, inject_rows=None, inject_cols=None,
                inject_bounds=None, gathers=None, call=None):
        if call is not None:  # other work on the model, run inside this module's forward (see fsdp.run_in_root)
            return call(self.model)
        with torch.profiler.record_function("ao.collect"):
            acts = collect_groups(self.model, ctx_ids, ctx_mask, ctx_layers, ctx_pos, autocast=self.autocast)
        vectors = gather_flat(acts, gathers, len(inject_rows))
        del acts  # only the gathered vectors live on through the oracle forward and backward
        base = unwrap(self.model)
        head = base.get_output_embeddings()
        with inject_flat(self.model, inject_rows, inject_cols, vectors, hook_layer=self.hook_layer,
                         coefficient=self.coefficient, grad=self.injection_grad, bounds=inject_bounds):
            with autocast_ctx(self.autocast, input_ids.device):
                out = backbone_of(self.model)(input_ids=input_ids, attention_mask=attention_mask,
                                              position_ids=position_ids_from_mask(attention_mask), use_cache=False)
                hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
                logits = head(hidden[label_rows, label_cols])  # the LM head only where there is a target
        logits = logits.float()
        cap = getattr(getattr(base, "config", None), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return F.cross_entropy(logits, label_targets, reduction="none"), label_rows


class _Parts:
    """What the packed objective reads on every step, found once (kept off the module tree: a plain holder)."""


class PackedObjective(nn.Module):
    """The objective on PackedBatch tensors: forward(**batch_kwargs(batch)) -> (per-target cross-entropy [N],
    loss slot of each target [N]); the loss is (ce * label_weight).sum().

    Everything that would otherwise walk the model on every step is found once here: the decoder blocks,
    the adapter layers to switch off and the modules to put in eval mode for the context forward, the
    collection hooks (armed per forward) and the injection hook (armed for the oracle forward)."""

    def __init__(self, model: nn.Module, *, hook_layer: int = 1, coefficient: float = 1.0,
                 autocast: str | None = None, injection_grad: str = "detached"):
        super().__init__()
        from .lean import lean_lora, lean_norms

        self.model = model
        self.autocast = autocast
        self.lean_layers = lean_lora(model) + lean_norms(model)  # (the same functions with fewer ops: lean.py)
        self.graph_capture = False  # (set while a CUDA graph is captured: autocast without its cache)
        base = unwrap(model)
        p = self._p = _Parts()
        p.config = base.config
        p.blocks = decoder_layers(model)
        check_layer(len(p.blocks), hook_layer, "train.hook_layer")
        p.inner, p.backbone, p.head = base, backbone_of(model), base.get_output_embeddings()
        p.tap = BlockTap(p.blocks)
        p.adapters, p.modes = AdapterSwitch(model), ModeSwitch(model)
        p.injector = Injector(p.blocks[hook_layer], coefficient=coefficient, grad=injection_grad)
        p.kind = mask_kind(base.config)  # None: transformers builds the masks (packed position ids)
        p.dtype = base.get_input_embeddings().weight.dtype
        p.cap = getattr(base.config, "final_logit_softcapping", None)

    def close(self) -> None:
        """Remove the hooks and the lean LoRA forward this objective put on the model."""
        from .lean import plain_lora

        self._p.tap.close()
        self._p.injector.close()
        plain_lora(self.model)

    def masks(self, seq: torch.Tensor):
        p = self._p
        return None if p.kind is None else packed_masks(p.config, seq, p.kind, p.dtype)

    def _autocast(self, device):
        return autocast_ctx(self.autocast, device, cache=not self.graph_capture)

    def collect(self, ctx_ids, ctx_pos, ctx_seq, layers) -> dict[int, torch.Tensor]:
        """{layer: [1, Tc, D]} block outputs of the base model (adapter off, dropout off) for a packed
        context row: one forward, stopped after the deepest of `layers`."""
        p = self._p
        # (inference mode: the outputs are read, never differentiated, and its ops cost the host less)
        with torch.inference_mode(), p.modes.eval(), p.adapters.off(), self._autocast(ctx_ids.device):
            return p.tap.run(lambda: p.inner(input_ids=ctx_ids, attention_mask=self.masks(ctx_seq),
                                             position_ids=ctx_pos, use_cache=False), layers)

    def forward(self, ctx_ids, ctx_pos, ctx_seq, ids, pos, seq, src_layer, src_col, inject_col, inject_on,
                label_col, label_target, label_task, label_weight=None, layers=(), bounds=None, call=None):
        if call is not None:  # (see OracleObjective.forward)
            return call(self.model)
        p = self._p
        with torch.profiler.record_function("ao.collect"):
            acts = self.collect(ctx_ids, ctx_pos, ctx_seq, layers)
            stacked = torch.stack([acts[layer][0] for layer in layers])  # [layers, Tc, D]
            vectors = stacked[src_layer, src_col] * inject_on[:, None].to(stacked.dtype)
        del acts, stacked
        with p.injector.armed(None, inject_col, vectors, bounds=bounds), self._autocast(ids.device):
            out = p.backbone(input_ids=ids, attention_mask=self.masks(seq), position_ids=pos, use_cache=False)
            hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
            logits = p.head(hidden[0, label_col])  # the LM head only where there is a target
        logits = logits.float()
        if p.cap:
            logits = torch.tanh(logits / p.cap) * p.cap
        return F.cross_entropy(logits, label_target, reduction="none"), label_task


def batch_kwargs(b) -> dict:
    if not isinstance(b, OracleBatch):  # a PackedBatch
        return dict(b.tensors, layers=b.layers, bounds=b.bounds)
    return dict(ctx_ids=b.ctx_ids, ctx_mask=b.ctx_mask, input_ids=b.input_ids, attention_mask=b.attention_mask,
                ctx_layers=b.ctx_layers, ctx_pos=b.ctx_pos, label_rows=b.label_rows, label_cols=b.label_cols, label_targets=b.label_targets,
                inject_rows=b.inject_rows, inject_cols=b.inject_cols, inject_bounds=b.inject_bounds,
                gathers=b.gathers)
