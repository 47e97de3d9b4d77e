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


# ----------------------------------------------------------------------------- masks built on the device

MASK_KINDS = ("bool", "float")


def mask_kind(config) -> str | None:
    """How this model's attention takes a ready 4D mask: "bool" (SDPA, and any implementation whose masks
    transformers builds as for SDPA), "float" (eager: added to the scores), or None (flash-attention and
    others take no 4D mask; transformers must build theirs)."""
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, sdpa_mask
    except ImportError:
        return None
    fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(getattr(config, "_attn_implementation", None))
    fn = getattr(fn, "__wrapped__", fn)  # (our guard wraps the SDPA one)
    return "bool" if fn is sdpa_mask else "float" if fn is eager_mask else None


def sliding_windows(config) -> dict[str, int | None]:
    """The attention window of each layer type the model's forward builds a mask for: {"full_attention":
    None} for a plain causal model; with "sliding_attention" (Gemma 2/3, Qwen with sliding layers) its
    window; a model that slides every layer (Mistral's `sliding_window` without layer types) windows the
    full-attention mask too."""
    cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
    window = getattr(cfg, "sliding_window", None)
    types = set(getattr(cfg, "layer_types", None) or [])
    if types:
        out: dict[str, int | None] = {"full_attention": None}
        if any("sliding" in t for t in types):
            out["sliding_attention"] = window
        return out
    on = window is not None and getattr(cfg, "use_sliding_window", True) is not False
    return {"full_attention": window if on else None}


_CAUSAL: dict[tuple, torch.Tensor] = {}  # (T, window, device) -> [T, T] lower triangle (a run has few sizes)


def _causal(n: int, window: int | None, device) -> torch.Tensor:
    key = (n, window, str(device))
    if key not in _CAUSAL:
        if len(_CAUSAL) > 64:
            _CAUSAL.clear()
        idx = torch.arange(n, device=device)
        ok = idx[None, :] <= idx[:, None]
        if window is not None:
            ok = ok & ((idx[:, None] - idx[None, :]) < window)
        _CAUSAL[key] = ok
    return _CAUSAL[key]


def packed_mask(seq: torch.Tensor, kind: str, dtype: torch.dtype, window: int | None = None) -> torch.Tensor:
    """[1, 1, T, T] mask of a packed row from its sequence ids [T]: causal within each sequence (and
    within `window` positions), nothing across sequences. Made on the device with a few ops, no read-back."""
    ok = (seq[:, None] == seq[None, :]) & _causal(seq.shape[0], window, seq.device)
    if kind == "float":
        ok = torch.zeros(ok.shape, dtype=dtype, device=seq.device).masked_fill_(~ok, torch.finfo(dtype).min)
    return ok[None, None]


def packed_masks(config, seq: torch.Tensor, kind: str, dtype: torch.dtype):
    """What the model's forward takes as `attention_mask` for a packed row: one 4D mask, or {layer type: 4D
    mask} for models whose layers differ in their windows (their forwards accept such a mapping)."""
    windows = sliding_windows(config)
    masks = {t: packed_mask(seq, kind, dtype, w) for t, w in windows.items()}
    return masks["full_attention"] if len(masks) == 1 else masks
