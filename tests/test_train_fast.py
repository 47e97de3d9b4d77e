"""The GPU path of the training step, checked on the CPU: packed batches compute the padded objective, a step
reads nothing back from the device, shapes settle into a few buckets, compiled blocks stop recompiling,
the captured step gives the eager step's numbers, token-budget batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from activation_oracles.train import batching, packed
from activation_oracles.train.batching import collate, epoch_batches
from activation_oracles.train.objective import OracleObjective, PackedObjective, batch_kwargs
from activation_oracles.train.packed import collate_packed
from activation_oracles.train.sync_guard import SyncError, SyncGuard
from activation_oracles.train.synthetic import synthetic_row

VOCAB = 49152


def _lora(tiny, arch="qwen3", dropout=0.0, seed=0, layers=None):
    from peft import LoraConfig, get_peft_model

    from conftest import make_tiny_model

    model = make_tiny_model(arch, seed=seed) if layers is None else make_tiny_model(arch, seed=seed, layers=layers)
    torch.manual_seed(seed)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                            init_lora_weights=False, lora_dropout=dropout))


def _rows(n=10, seed=0, layers=(1, 2, 3)):
    """Rows of every kind the trainer meets: single- and multi-token inputs, rows sharing a context,
    multi-layer rows, several tasks."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        r = synthetic_row(rng, oracle=int(rng.integers(12, 30)), context=int(rng.integers(k + 2, 25)), k=k,
                          labels=int(rng.integers(1, 5)), layer=layers[i % len(layers)], vocab=VOCAB,
                          task=("spqa", "classification", "context_prediction", "other")[i % 4])
        rows.append(r)
    rows[3]["context_input_ids"] = list(rows[2]["context_input_ids"])  # a shared context runs once
    rows[3]["context_positions"] = rows[2]["context_positions"][-len(rows[3]["positions"]):]
    m = rows[4]  # a multi-layer row: the same positions read at two layers, layer-major
    m["layers"] = [layers[0], layers[-1]]
    m["layer"] = layers[0]
    m["positions"] = list(range(2, 2 + 2 * len(m["context_positions"])))
    return rows


def _loss_and_grads(model, objective, batch, weight=None):
    ce, _ = objective(**batch_kwargs(batch))
    (ce * weight).sum().backward() if weight is not None else ce.sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad(set_to_none=True)
    return ce.detach(), grads


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma2", "gemma3", "gpt_neox", "mistral"])
def test_packed_objective_computes_the_padded_objective(tiny, arch):
    """Contexts in one row, oracle prompts in another, masks built on the device: per-target losses and
    LoRA gradients equal the padded objective's, on single/multi-token, shared-context and multi-layer rows."""
    model = _lora(tiny, arch)
    model.train()  # (LoRA dropout 0: train mode changes nothing but what the step runs in)
    rows = _rows()
    ref_ce, ref_g = _loss_and_grads(model, OracleObjective(model), collate(rows, 0))
    obj = PackedObjective(model)
    try:
        assert obj.lean_layers > 0
        ce, g = _loss_and_grads(model, obj, collate_packed(rows))
    finally:
        obj.close()
    torch.testing.assert_close(ce, ref_ce, rtol=1e-4, atol=1e-5)
    for a, b in zip(g, ref_g):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_packed_masks_follow_sliding_windows(tiny):
    """Gemma-3 alternates sliding-window and full layers: a context longer than the window reads the same
    through the step's masks as through transformers' own (the start-of-run check, train.step.check_packing)."""
    from conftest import _tiny_config
    from transformers import AutoModelForCausalLM

    from activation_oracles.train.step import check_packing

    cfg = _tiny_config("gemma3", layers=7)
    cfg.sliding_window = 6
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg)
    obj = PackedObjective(model)
    try:
        assert check_packing(obj, None) < 1e-4  # (probes 5, 3, 7 and 9 tokens at a block past both kinds)
    finally:
        obj.close()


def test_shape_buckets_change_nothing_but_the_shapes(tiny):
    """Rounding a packed batch up to bucket sizes adds padding slots that add nothing: same per-target
    losses (padding targets weigh 0), same gradients."""
    from activation_oracles.train.shapes import ShapeBuckets

    model = _lora(tiny)
    rows = _rows()
    obj = PackedObjective(model)
    try:
        exact = collate_packed(rows, scale=0.1)
        shapes = ShapeBuckets(layers=(1, 2, 3), context=[64, 256], oracle=[320], placeholders=[48], labels=[64])
        padded = collate_packed(rows, scale=0.1, shapes=shapes)
        assert padded.key[:4] == (256, 320, 48, 64) and padded.pad_tokens > exact.pad_tokens
        ce, g = _loss_and_grads(model, obj, exact, exact.label_weight)
        ce2, g2 = _loss_and_grads(model, obj, padded, padded.label_weight)
    finally:
        obj.close()
    n = exact.label_tokens
    torch.testing.assert_close(ce2[:n], ce, rtol=1e-5, atol=1e-6)
    for a, b in zip(g2, g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_sync_guard_finds_what_would_make_a_gpu_wait():
    lin = torch.nn.Linear(4, 4)
    guard = SyncGuard(fail=False)
    guard.mark_module(lin)
    host = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    with guard:
        host.nonzero(), host.tolist(), float(host[0, 0])  # host tensors: nothing to wait for
        y = lin(torch.randn(3, 4))
        y.sum().backward()
        assert guard.violations == []
        float(y.sum())
        y[y > 0]
        y.cpu()
        y.detach().nonzero()
        if y.sum() > 0:
            pass
        with guard.allowed():
            y.tolist()
    ops = [v.op for v in guard.violations]
    assert ops == ["Tensor.__float__", "aten.index.Tensor with a boolean mask", "Tensor.cpu",
                   "aten.nonzero.default", "Tensor.__bool__"], ops
    assert all("test_train_fast.py" in v.where for v in guard.violations)
    with pytest.raises(SyncError, match="item"), SyncGuard() as strict:
        strict.mark(y)
        y.sum().item()


def _step_setup(tiny, over, *, dropout=0.05, seed=0):
    from accelerate import Accelerator

    from activation_oracles.train import load_config
    from activation_oracles.train.step import make_objective, make_optimizer

    cfg = load_config({"optim": {"lr": 1e-3}, "lora": {"dropout": dropout}, **over})
    model = _lora(tiny, dropout=dropout, seed=seed)
    model.train()
    objective = make_objective(model, cfg)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, "cpu")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return cfg, model, Accelerator(cpu=True), objective, opt, sched


def _denom(rows):
    return float(sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows))


def test_a_packed_step_reads_nothing_back_from_the_device(tiny, monkeypatch):
    """Three optimiser steps (two micro-batches each, packed, bucketed) under SyncGuard: no op that would
    synchronise a GPU with its host, until the one read-back the loop asks for when it logs. The padded
    step, for contrast, has transformers' padding checks and its read-back."""
    from activation_oracles.train.shapes import ShapeBuckets
    from activation_oracles.train.step import train_step

    cfg, model, acc, objective, opt, sched = _step_setup(tiny, {"train": {"packing": True, "shape_buckets": 2,
                                                                         "grad_accum": 2, "batch_size": 10}})
    shapes = ShapeBuckets(layers=(1, 2, 3), context=[128, 256], oracle=[256, 512], placeholders=[64], labels=[64])
    guard = SyncGuard(fail=True)
    guard.mark_module(model)
    monkeypatch.setattr(packed, "to_device", guard.marked_transfer(packed.to_device))
    with guard:
        for seed in range(3):
            rows = _rows(seed=seed)
            stats = train_step(acc, objective, opt, sched, [rows[:5], rows[5:]], 0, cfg, _denom(rows), shapes=shapes)
        with guard.allowed():
            out = stats.read()
    assert out["loss"] > 0 and out["grad_norm"] > 0 and out["tokens"] == sum(len(r["input_ids"]) for r in rows)
    assert set(out) >= {"loss/spqa", "loss/classification", "loss/context_prediction"}

    cfg, model, acc, objective, opt, sched = _step_setup(tiny, {"train": {"packing": False}})
    guard = SyncGuard(fail=False)
    guard.mark_module(model)
    monkeypatch.setattr(batching, "to_device", guard.marked_transfer(batching.to_device))
    with guard:
        rows = _rows()
        train_step(acc, objective, opt, sched, [rows], 0, cfg, _denom(rows)).read()
    where = " ".join(v.where for v in guard.violations)
    assert "masking_utils" in where and "step.py" in where


def test_packed_step_reports_what_the_padded_step_reports(tiny):
    """The same numbers from the padded step, the packed one and the packed one in buckets (whose padding
    targets count in no loss)."""
    from activation_oracles.train.shapes import ShapeBuckets
    from activation_oracles.train.step import train_step

    buckets = ShapeBuckets(layers=(1, 2, 3), context=[512], oracle=[512], placeholders=[64], labels=[64])
    outs = []
    for packing, shapes in ((False, None), (True, None), (True, buckets)):
        cfg, model, acc, objective, opt, sched = _step_setup(tiny, {"train": {"packing": packing}}, dropout=0.0)
        rows = _rows()
        outs.append(train_step(acc, objective, opt, sched, [rows[:4], rows[4:]], 0, cfg, _denom(rows),
                               shapes=shapes).read())
    a = outs[0]
    for b in outs[1:]:
        for k in ("loss", "loss/spqa", "loss/classification", "loss/context_prediction", "grad_norm"):
            assert b[k] == pytest.approx(a[k], rel=1e-4), k
        assert b["tokens"] == a["tokens"] and b["context_tokens"] == a["context_tokens"]


def test_compiled_blocks_stop_compiling_after_warm_up(tiny):
    """200 steps of paper-length batches (the paper mixture's sampled lengths) through regional torch.compile
    with shape buckets: a bounded number of graphs, all made in the first steps, none after."""
    from torch._dynamo.testing import CompileCounter

    from activation_oracles.train.shapes import ShapeBuckets, micro_batch_sizes
    from activation_oracles.train.step import compile_blocks, train_step, uncompile_blocks
    from activation_oracles.train.synthetic import load_lengths, synthetic_batches

    torch._dynamo.reset()
    cfg, model, acc, objective, opt, sched = _step_setup(tiny, {"train": {"packing": True, "shape_buckets": 4,
                                                                         "batch_size": 4}})
    lengths = load_lengths()
    batches = synthetic_batches(lengths, 200, 4, VOCAB, [1, 2, 3], seed=0)
    per_row = {"oracle": np.array([[len(r["input_ids"]) for r in b] for b in batches]).ravel(),
               "context": np.array([[len(r["context_input_ids"]) for r in b] for b in batches]).ravel(),
               "placeholders": np.array([[len(r["positions"]) for r in b] for b in batches]).ravel(),
               "labels": np.array([[_denom([r]) for r in b] for b in batches]).ravel().astype(int)}
    sizes = micro_batch_sizes(per_row, [np.arange(4 * i, 4 * i + 4) for i in range(200)], 1)
    shapes = ShapeBuckets.from_sizes(sizes, 4, (1, 2, 3))
    counter = CompileCounter()
    compile_blocks(model, backend=counter)
    try:
        seen = []
        for rows in batches:
            train_step(acc, objective, opt, sched, [rows], 0, cfg, _denom(rows), shapes=shapes)
            seen.append(counter.frame_count)
    finally:
        uncompile_blocks(model)
        objective.close()
        torch._dynamo.reset()
    assert 0 < seen[-1] <= 8, seen[-1]
    assert seen[9] == seen[-1], f"compiled again after step 10: {seen[9]} -> {seen[-1]}"


def test_graphed_step_gives_the_eager_steps_numbers(tiny):
    """GraphedStep's control flow with a stand-in for CUDA graphs (capture keeps the function, replay calls
    it; static buffers, gradients kept between steps, the optimiser as its own graph): the same losses,
    gradient norms and weights as the eager step, dropout on (the warm-up before a capture leaves the
    random state as it was)."""
    from activation_oracles.train.graphs import EagerGraphs, GraphedStep
    from activation_oracles.train.shapes import ShapeBuckets
    from activation_oracles.train.step import train_step

    shapes = ShapeBuckets(layers=(1, 2, 3), context=[128, 256], oracle=[256, 512], placeholders=[64], labels=[64])
    over = {"train": {"packing": True, "shape_buckets": 2, "batch_size": 10, "grad_accum": 2}}
    batches = [_rows(seed=s) for s in range(5)]
    results = []
    for graphed in (False, True):
        torch.manual_seed(1)
        cfg, model, acc, objective, opt, sched = _step_setup(tiny, over)
        torch.manual_seed(2)
        step = GraphedStep(acc, objective, opt, sched, cfg, shapes, backend=EagerGraphs()) if graphed else None
        got = []
        for rows in batches:
            micro = [rows[:5], rows[5:]]
            s = (step(micro, 0, _denom(rows)) if graphed else
                 train_step(acc, objective, opt, sched, micro, 0, cfg, _denom(rows), shapes=shapes))
            got.append(s.read())
        results.append((got, [p.detach().clone() for p in model.parameters() if p.requires_grad]))
        if graphed:
            assert step.captures >= 2 and len(step.micro) >= 1
    (eager, we), (graph, wg) = results
    for a, b in zip(eager, graph):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5) and b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    for a, b in zip(we, wg):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_token_budget_batches():
    """train.batch_tokens: batches are runs of the length-sorted order whose tokens fit the budget; every
    row but the epoch's tail is used once; the order is a function of (seed, epoch)."""
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 200, size=500)
    costs = lengths + rng.integers(5, 300, size=500)
    b1 = epoch_batches(lengths, 16, seed=3, epoch=0, costs=costs, budget=2000)
    b2 = epoch_batches(lengths, 16, seed=3, epoch=0, costs=costs, budget=2000)
    assert all(np.array_equal(x, y) for x, y in zip(b1, b2))
    assert all(costs[b].sum() <= 2000 or len(b) == 1 for b in b1)
    used = np.concatenate(b1)
    assert len(set(used.tolist())) == len(used) and len(used) > 450
    assert np.mean([costs[b].sum() for b in b1]) > 1500  # (full batches, not crumbs)
    assert not all(np.array_equal(x, y) for x, y in
                   zip(b1, epoch_batches(lengths, 16, seed=3, epoch=1, costs=costs, budget=2000)))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, smol_tokenizer):
    from conftest import make_tiny_model
    from test_train_helpers import make_dataset

    d = tmp_path_factory.mktemp("tiny-qwen3")
    make_tiny_model("qwen3").save_pretrained(d)
    smol_tokenizer.save_pretrained(d)
    return d, make_dataset(smol_tokenizer, tmp_path_factory.mktemp("data") / "mix")


def _cfg(model_dir, out, **train):
    return {"model": {"spec": str(model_dir)}, "optim": {"lr": 3e-3}, "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
            "train": {"batch_size": 4, "max_steps": 6, "seed": 1, **train},
            "eval": {"every": 0, "max_examples": 2, "max_loss_examples": 4},
            "output": {"dir": str(out), "progress": False, "log_every": 2}}


def test_the_trainer_on_the_gpu_path(tiny_run, tmp_path, capsys):
    """The whole trainer with packing, shape buckets and a logging interval: its logged losses are the
    padded run's (same batches, no dropout), it says which buckets it chose; a token-budget run trains."""
    from activation_oracles.train import train

    model_dir, mix = tiny_run
    runs = [train(_cfg(model_dir, tmp_path / "padded"), data=str(mix)),
            train(_cfg(model_dir, tmp_path / "packed", packing=True, shape_buckets=4), data=str(mix))]
    assert "shape buckets (" in capsys.readouterr().out
    rows = [[json.loads(ln) for ln in (r / "metrics.jsonl").read_text().splitlines()] for r in runs]
    assert [r["step"] for r in rows[1]] == [2, 4, 6] == [r["step"] for r in rows[0]]
    for a, b in zip(*rows):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    budget = train(_cfg(model_dir, tmp_path / "budget", packing=True, batch_tokens=600, max_steps=3), data=str(mix))
    assert (budget / "adapter" / "adapter_model.safetensors").is_file()
