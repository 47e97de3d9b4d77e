"""The shared optimiser step: statistics kept on the device, compiled decoder blocks."""

from __future__ import annotations

import torch

from activation_oracles.train.batching import collate
from activation_oracles.train.objective import OracleObjective, batch_kwargs


def _lora(tiny, arch="qwen3"):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    return get_peft_model(tiny(arch), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 init_lora_weights=False, lora_dropout=0.0))


def test_compiled_blocks_give_the_same_loss_and_gradients(tiny, smol_tokenizer):
    """Regional torch.compile (dynamo; the eager backend keeps the test fast on CPU) around PEFT blocks:
    the injection and early-stop hooks still run outside the graphs, the numbers do not change."""
    from test_train_helpers import make_rows

    from activation_oracles.train.step import compile_blocks, uncompile_blocks

    model = _lora(tiny)
    model.train()
    rows = make_rows(smol_tokenizer, layers=(1, 2))
    obj = OracleObjective(model)
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for compiled in (False, True, False):
        if compiled:
            compile_blocks(model, backend="eager")
        for chunk in (rows[:6], rows[6:13]):  # two shapes: dynamic lengths and batch sizes
            ce, which = obj(**batch_kwargs(collate(chunk, smol_tokenizer.pad_token_id)))
            ce.sum().backward()
            results.append((ce.detach(), which, [p.grad.clone() for p in params]))
            model.zero_grad(set_to_none=True)
        uncompile_blocks(model)
    for ref, got in ((results[0], results[2]), (results[1], results[3]), (results[0], results[4])):
        assert torch.equal(ref[1], got[1])
        torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(ref[2], got[2]):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    assert not hasattr(next(iter(model.base_model.model.model.layers)), "_ao_eager_forward")


def test_train_step_reports_what_the_objective_computes(tiny, smol_tokenizer):
    from accelerate import Accelerator
    from test_train_helpers import make_rows

    from activation_oracles.train import load_config
    from activation_oracles.train.step import make_objective, make_optimizer, train_step

    cfg = load_config({"train": {"batch_size": 8, "grad_accum": 2}, "optim": {"lr": 1e-3}})
    model = _lora(tiny)
    model.eval()  # no dropout: the reference pass below sees the same network
    rows = make_rows(smol_tokenizer, layers=(1, 2))[:8]
    for r, t in zip(rows, ["spqa", "classification"] * 4):
        r["task"] = t
    ref = collate(rows, smol_tokenizer.pad_token_id)
    with torch.no_grad():
        ce, which = OracleObjective(model)(**batch_kwargs(ref))
    acc = Accelerator(cpu=True)
    objective = make_objective(model, cfg)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, "cpu")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    before = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    out = train_step(acc, objective, opt, sched, [rows[:4], rows[4:]], smol_tokenizer.pad_token_id, cfg,
                     denom=float(ref.label_tokens))
    assert abs(out["loss"] - float(ce.mean())) < 1e-5
    spqa = torch.tensor([i % 2 == 0 for i in range(8)])[which]
    assert abs(out["loss/spqa"] - float(ce[spqa].mean())) < 1e-5
    assert abs(out["loss/classification"] - float(ce[~spqa].mean())) < 1e-5
    assert out["tokens"] == ref.real_tokens and out["context_tokens"] == ref.context_tokens
    assert out["grad_norm"] > 0 and out["lr"] == 1e-3
    after = [p.detach() for p in model.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after))


def test_packed_contexts_give_the_padded_loss_and_gradients(tiny, smol_tokenizer):
    """train.context_packing: each deepest-layer group of contexts runs as one unpadded row whose forward
    stops at that layer, and the loss and LoRA gradients are those of the padded groups, for each family
    shape whose mask transformers builds from packed position ids."""
    from test_train_helpers import make_rows

    rows = make_rows(smol_tokenizer, layers=(1, 3))[:12]
    first = list(rows[0]["context_input_ids"])
    for i, r in enumerate(rows):  # contexts of different lengths; every 4th row shares the first context
        k = len(r["context_positions"])
        ctx = first if i % 4 == 0 else r["context_input_ids"][: max(k, 3 + i % 5)]
        r["context_input_ids"], r["context_positions"] = ctx, list(range(len(ctx) - k, len(ctx)))
        r["layer"] = 3 if i == 0 else 1 if i % 4 == 0 else r["layer"]
    packed = collate(rows, smol_tokenizer.pad_token_id, context_packing=True)
    assert [t.shape[0] for t in packed.ctx_ids] == [1, 1] and all(m is None for m in packed.ctx_mask)
    assert packed.ctx_layers == [[1], [1, 3]]  # the shared context serves layer 1 from the deeper group
    assert packed.pad_tokens == packed.input_ids.numel() - packed.real_tokens  # no context token is padding
    for arch in ("qwen3", "llama", "gemma2", "gpt_neox"):
        model = _lora(tiny, arch)
        model.eval()  # no dropout: both passes see the same network
        obj = OracleObjective(model)
        params = [p for p in model.parameters() if p.requires_grad]
        got = []
        for pack in (False, True):
            ce, which = obj(**batch_kwargs(collate(rows, smol_tokenizer.pad_token_id, context_packing=pack)))
            ce.sum().backward()
            got.append((ce.detach(), which, [p.grad.clone() for p in params]))
            model.zero_grad(set_to_none=True)
        assert torch.equal(got[0][1], got[1][1])
        torch.testing.assert_close(got[1][0], got[0][0], rtol=1e-4, atol=1e-5, msg=arch)
        for a, b in zip(got[0][2], got[1][2]):
            torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-6, msg=arch)


def test_padded_context_groups_stop_at_their_own_deepest_layer(smol_tokenizer):
    from test_train_helpers import make_rows

    rows = make_rows(smol_tokenizer, layers=(1, 3))[:8]
    for i, r in enumerate(rows):  # two length groups: short contexts read layer 1 only
        if r["layer"] == 1:
            r["context_input_ids"] = r["context_input_ids"][:2] + [i + 7]
            r["context_positions"] = [2] * len(r["context_positions"])
        else:
            r["context_input_ids"] = [5] * 30 + [i + 7]
            r["context_positions"] = [30] * len(r["context_positions"])
    b = collate(rows, smol_tokenizer.pad_token_id, context_pad_tolerance=0.1)
    assert len(b.ctx_ids) == 2 and b.ctx_layers == [[3], [1]] and b.layers == [1, 3]


def test_context_packing_is_turned_off_for_a_model_that_mixes_packed_sequences(tiny, monkeypatch):
    """The start-of-training check: a forward that ignores packed position ids (simulated by numbering
    the packed row as one sequence) differs from padded runs, so packing is switched off with a warning."""
    import pytest

    import activation_oracles.steering as steering
    from activation_oracles.train import load_config
    from activation_oracles.train.step import check_context_packing

    model = tiny("llama")
    cfg = load_config({"train": {"context_packing": True}})
    # float32 rounding only: packed and padded matmuls differ in shape, so some BLAS kernels (AMD EPYC
    # here) sum in another order and differ by ~3e-8; a leak between sequences is above 0.1 (below)
    assert check_context_packing(model, cfg) < 1e-6 and cfg.train.context_packing
    assert check_context_packing(model, cfg, sharded=True) is None  # FSDP: one padded group on every rank
    real = steering.collect_activations

    def one_sequence(model, ids, mask=None, *, layers, position_ids=None, **kw):
        if position_ids is not None:
            position_ids = torch.arange(ids.shape[1])[None]
        return real(model, ids, mask, layers=layers, position_ids=position_ids, **kw)

    monkeypatch.setattr(steering, "collect_activations", one_sequence)
    with pytest.warns(UserWarning, match="context_packing.*differ by"):
        err = check_context_packing(model, cfg)
    assert err > 0.1 and cfg.train.context_packing is False
