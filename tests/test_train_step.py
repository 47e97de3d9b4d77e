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
