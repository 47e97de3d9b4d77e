"""Fully sharded training (FSDP2, `torch.distributed.fsdp.fully_shard`) of the oracle objective.

Units: every decoder block (found by structure, as `decoder_layers` finds them), the input embeddings
and an untied LM head each become a unit whose weights are gathered only while it runs; the objective
itself is the root unit, so that a forward entered through it (training, validation loss, and the
generation of the in-training evaluation, see `run_in_root`) finds every unit ready.

Why not Accelerate's FSDP plugin: Accelerate 1.15 applies it to GPU process groups only and silently
trains with DDP on CPU processes, so the same code could not be tested without GPUs. Accelerate still
launches the processes and picks the devices; the sharding is done here, the same way on CPU (gloo)
and GPU (NCCL).

Checkpoints: the optimizer state is saved sharded with `torch.distributed.checkpoint` (every rank
writes its own shard; resuming on the same number of processes continues exactly), the LoRA weights
are gathered (they are small) into a normal adapter directory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..models import decoder_layers, unwrap


def shard(objective: nn.Module) -> nn.Module:
    """Shard the objective's model in place: decoder blocks, embeddings, an untied head, then the root."""
    from torch.distributed.fsdp import fully_shard

    base = unwrap(objective.model)
    for block in decoder_layers(objective.model):
        fully_shard(block)
    emb, head = base.get_input_embeddings(), base.get_output_embeddings()
    tied = head is not None and head.weight is emb.weight
    if not tied:  # (tied: both stay in the root unit, gathered for the whole forward)
        fully_shard(emb)
        if head is not None:
            fully_shard(head)
    fully_shard(objective)
    return objective


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def full_lora_state(objective: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable (LoRA) weights as full CPU tensors, keyed as in the unsharded PEFT model; a
    collective: every rank must call it, in the same order."""
    out = {}
    for name, p in objective.named_parameters():
        if p.requires_grad:
            t = p.full_tensor() if hasattr(p, "full_tensor") else p
            out[name[len("model."):] if name.startswith("model.") else name] = t.detach().cpu()
    return out


def save_optimizer(objective: nn.Module, opt, directory: Path) -> None:
    """Every rank writes its optimizer shard under `directory` (a collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(objective, opt)}, checkpoint_id=str(directory))


def load_optimizer(objective: nn.Module, opt, directory: Path) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    state = {"optimizer": get_optimizer_state_dict(objective, opt)}
    dcp.load(state, checkpoint_id=str(directory))
    set_optimizer_state_dict(objective, opt, state["optimizer"])


def run_in_root(objective: nn.Module, fn):
    """fn(peft_model) run inside the root unit's forward (its weights gathered, every unit initialised):
    how work that does not go through the objective's own forward (generation) runs under FSDP."""
    return objective(call=fn)
