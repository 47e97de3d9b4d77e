"""Left-padded batches stay finite under SDPA kernels that return NaN for empty attention rows (the CUDA
fused kernels do; the CPU kernel returns zeros, so the CUDA behaviour is emulated here)."""

import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_model
from transformers.masking_utils import AttentionMaskInterface

from activation_oracles.attention import guard_padded_attention, unmask_empty_rows
from activation_oracles.steering import left_pad


def _nan_on_empty_rows(q, k, v, attn_mask=None, **kw):
    out = _SDPA(q, k, v, attn_mask=attn_mask, **kw)
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        empty = ~attn_mask.any(-1, keepdim=True)  # [B, H|1, Q, 1]
        out = out.masked_fill(empty.expand(-1, out.shape[1], -1, out.shape[-1]), float("nan"))
    return out


_SDPA = F.scaled_dot_product_attention


def test_unmask_empty_rows():
    m = torch.tensor([[[[False, False], [True, False]]]])
    assert unmask_empty_rows(m).tolist() == [[[[True, True], [True, False]]]]
    assert unmask_empty_rows(None) is None


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3"])
def test_left_padded_forward_is_finite_and_unchanged(monkeypatch, arch):
    model = make_tiny_model(arch)
    model.config._attn_implementation = "sdpa"
    ids, mask, offs = left_pad([[5, 6, 7, 8, 9, 10], [11, 12, 13]], pad_id=0)
    with torch.no_grad():
        alone = model(torch.tensor([[11, 12, 13]])).logits[0]
    monkeypatch.setattr(F, "scaled_dot_product_attention", _nan_on_empty_rows)
    original = AttentionMaskInterface._global_mapping["sdpa"]
    unguarded = getattr(original, "__wrapped__", original)
    monkeypatch.setitem(AttentionMaskInterface._global_mapping, "sdpa", unguarded)
    with torch.no_grad():
        bad = model(ids, attention_mask=mask).logits
    assert torch.isnan(bad[1]).all() and torch.isfinite(bad[0]).all()  # what a GPU did before the guard
    assert guard_padded_attention()
    pos = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.no_grad():
        good = model(ids, attention_mask=mask, position_ids=pos).logits
    assert torch.isfinite(good).all()
    torch.testing.assert_close(good[1, offs[1]:], alone, rtol=1e-4, atol=1e-5)
