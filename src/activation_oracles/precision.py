"""Mixed precision: the one autocast rule the trainer, the in-training evaluation and `ao eval` share."""

from __future__ import annotations

import contextlib

import torch


def autocast_ctx(mode: str | None, device: torch.device, *, cache: bool = True):
    """bf16 autocast for mode "bf16", else nothing. `cache=False` while capturing a CUDA graph (casts cached
    across a captured region would be freed under it)."""
    if mode == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext()
