"""Left padding without NaN under SDPA.

Every batched pass here is left-padded (generation needs it). A left-pad query row may attend only to
earlier keys, and the padding mask removes all of them, so its attention row is empty. PyTorch's fused
SDPA kernels on CUDA return NaN for an empty row, and the next layer spreads it along the whole sequence
through 0 x NaN when real queries mix the (masked) pad values. transformers 5 dropped the mask fix it
used to apply (`allow_torch_fix` is a no-op), so a plain left-padded forward on a GPU returns NaN logits
for every padded row: training losses become NaN, batched answers empty.

`guard_padded_attention()` wraps transformers' SDPA mask builder once per process: rows with no key to
attend to attend to every key instead. Only pad queries have such rows, and their outputs are never
read, so real tokens are computed exactly as before.
"""

from __future__ import annotations

import functools

import torch

_GUARDED = "_ao_no_empty_rows"


def unmask_empty_rows(mask):
    """A boolean [B, H, Q, K] mask with every all-False query row set all-True; other masks unchanged."""
    if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.dim() == 4:
        return mask | ~mask.any(dim=-1, keepdim=True)
    return mask


def guard_padded_attention() -> bool:
    """Install the guard on transformers' "sdpa" mask function (idempotent). False when this
    transformers has no mask interface (older releases still fixed empty rows themselves)."""
    try:
        from transformers.masking_utils import AttentionMaskInterface
    except ImportError:
        return False
    mapping = AttentionMaskInterface._global_mapping
    original = mapping.get("sdpa")
    if original is None or getattr(original, _GUARDED, False):
        return original is not None

    @functools.wraps(original)
    def sdpa_mask(*args, **kwargs):
        return unmask_empty_rows(original(*args, **kwargs))

    setattr(sdpa_mask, _GUARDED, True)
    mapping["sdpa"] = sdpa_mask
    return True
