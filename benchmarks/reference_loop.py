"""A training step written the way the paper's reference loop works (our own code, for the benchmarks;
not a script): what `train_step.py` and `gpu_train.py` compare our step with, on the same batches.

What it keeps from the reference implementation (adamkarvonen/activation_oracles, nl_probes/):
- activations: every context of the batch (no deduplication, no length groups) left-padded to the
  longest, one forward with a hook on each requested layer that stops after the deepest one;
- injection: a forward hook that loops over the batch rows in Python, adding the detached
  ||h|| v/||v|| at each row's placeholder positions;
- loss: the oracle batch left-padded, `model(..., labels=...)`, so logits over the full vocabulary at
  every position, then the mean cross-entropy over the labelled ones;
- AdamW (PyTorch's default implementation), gradient clipping at 1.0.
"""

from __future__ import annotations

import contextlib

import torch

from activation_oracles.hooks import _adapters_off
from activation_oracles.models import decoder_layers, unwrap
from activation_oracles.prompt import IGNORE_INDEX
from activation_oracles.steering import left_pad


class _Stop(Exception):
    pass


def _left_pad(seqs, pad_id, device):
    ids, mask, offs = left_pad(seqs, pad_id)
    return ids.to(device), mask.to(device), offs


def collect(model, rows, pad_id, device, autocast):
    """Per row, the [K, D] source vectors: one padded forward over every row's context, hooks on all
    requested layers, stopped after the deepest."""
    base = unwrap(model)
    blocks = decoder_layers(model)
    wanted = sorted({int(r["layer"]) for r in rows})
    ids, mask, offs = _left_pad([r["context_input_ids"] for r in rows], pad_id, device)
    got = {}

    def hook_for(layer):
        def hook(module, args, output):
            got[layer] = output[0] if isinstance(output, tuple) else output
            if layer == wanted[-1]:
                raise _Stop
        return hook

    handles = [blocks[i].register_forward_hook(hook_for(i)) for i in wanted]
    try:
        with _adapters_off(model), torch.no_grad(), autocast:
            base(input_ids=ids, attention_mask=mask)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return [got[int(r["layer"])][i, [p + offs[i] for p in r["context_positions"]]] for i, r in enumerate(rows)]


def reference_step(model, opt, rows, pad_id, *, hook_layer: int = 1, device="cpu", autocast_dtype=None,
                   foreach: bool | None = None) -> float:
    """One optimiser step on `rows` (data-schema dicts); returns the loss. `foreach`: clipping's kernels
    (None: torch's default for the device, which is foreach on a GPU)."""
    dev = torch.device(device)
    autocast = (torch.autocast(device_type=dev.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    phase = torch.profiler.record_function  # the phases our step marks too (host_cost.py, gpu_train --profile)
    with phase("ao.collect"):
        vectors = collect(model, rows, pad_id, dev, autocast)
    ids, mask, offs = _left_pad([r["input_ids"] for r in rows], pad_id, dev)
    labels, _, _ = _left_pad([r["labels"] for r in rows], IGNORE_INDEX, dev)
    positions = [[p + offs[i] for p in r["positions"]] for i, r in enumerate(rows)]

    def hook(module, args, output):
        h = output[0] if isinstance(output, tuple) else output
        if h.shape[1] <= 1:
            return output
        for b in range(h.shape[0]):  # a Python loop over the batch, as in the reference
            pos = torch.tensor(positions[b], dtype=torch.long, device=h.device)
            orig = h[b, pos, :]
            v = vectors[b].to(orig.dtype)
            steered = torch.nn.functional.normalize(v, dim=-1) * orig.norm(dim=-1, keepdim=True)
            h[b, pos, :] = (steered.detach() + orig).to(h.dtype)  # (under autocast the sum is float32)
        return output

    model.train()
    handle = decoder_layers(model)[hook_layer].register_forward_hook(hook)
    try:
        with phase("ao.forward"), autocast:
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss  # full-vocabulary logits
    finally:
        handle.remove()
    with phase("ao.backward"):
        loss.backward()
    with phase("ao.optimizer"):
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0, foreach=foreach)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return float(loss.detach())
