"""Rows that start with the same tokens (a chat template's system prompt) run them once, cached: the
activations and the scores must be those of the rows run whole, on every architecture we support."""

import pytest
import torch
from conftest import ARCHS, make_tiny_model

import activation_oracles as ao
from activation_oracles import steering
from activation_oracles.hooks import collect_activations
from activation_oracles.steering import (SHARED_PREFIX_MIN, collect_padded, left_pad, prefix_sharing_error,
                                         prefix_sharing_ok, shared_prefix)


def test_shared_prefix():
    assert shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]], 10) == 2
    assert shared_prefix([[1, 2, 3], [1, 2, 3]], 10) == 3 and shared_prefix([[1, 2, 3], [1, 2, 3]], 1) == 1
    assert shared_prefix([[7], [8]], 5) == 0 and shared_prefix([[1, 2]], -3) == 0


@pytest.mark.parametrize("arch", ARCHS)
def test_shared_prefix_equals_whole_rows(arch):
    model = make_tiny_model(arch, seed=1)
    assert prefix_sharing_error(model) < 1e-5 and prefix_sharing_ok(model)
    g = torch.Generator().manual_seed(2)
    head = torch.randint(1, 1000, (SHARED_PREFIX_MIN + 3,), generator=g).tolist()
    seqs = [head + torch.randint(1, 1000, (n,), generator=g).tolist() for n in (1, 6, 3)]
    got, offsets = collect_padded(model, seqs, 0, layers=[1, 3])
    ids, mask, ref_offsets = left_pad(seqs, 0)
    ref = collect_activations(model, ids, mask, layers=[1, 3])
    assert offsets == ref_offsets
    for layer in (1, 3):
        for row, off in enumerate(offsets):
            assert torch.allclose(got[layer][row, off:], ref[layer][row, off:], atol=1e-5, rtol=1e-4)


def test_scores_with_and_without_a_shared_prefix(smol_tokenizer, monkeypatch):
    """The oracle's prompts share the template's system prompt and the injections of the contexts'
    template tokens: scored together with those cached, each equals the prompt scored alone; and the
    shared path really ran (one prefix forward of one row)."""
    oracle = ao.Oracle(make_tiny_model("llama", seed=4), smol_tokenizer)
    contexts = ["I loved it.", "The train was late again today.", "Prices went up."]
    rows = []
    real = steering._prefix_cache

    def spy(model, prefix, n, injected=None, **kw):
        rows.append((len(prefix), n, 0 if injected is None else len(injected[1])))
        return real(model, prefix, n, injected, **kw)

    monkeypatch.setattr(steering, "_prefix_cache", spy)
    together = oracle.score(contexts, "Is it positive?", positions="all")
    # the template's tokens, and the placeholders of the contexts' template tokens (the same vectors), once
    assert rows and all(p >= SHARED_PREFIX_MIN and n == 3 and k >= SHARED_PREFIX_MIN for p, n, k in rows), rows
    alone = [oracle.score(c, "Is it positive?", positions="all")[0] for c in contexts]
    for a, b in zip(together, alone):
        assert a.text == b.text and abs(a.probs["Yes"] - b.probs["Yes"]) < 1e-5
