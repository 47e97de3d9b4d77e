"""Memory planning (`ao plan`) and the OOM preflight."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from activation_oracles.train.plan import plan_memory
from activation_oracles.train import ConfigError, load_config, train

GB = 1e9


def test_paper_qwen3_plan_is_offline_and_matches_a_hand_calculation():
    """Qwen3-8B from the shipped config (no network): weights, LoRA, gradients and AdamW by hand."""
    plan = plan_memory(load_config("paper-qwen3-8b"), gpus=1, gpu_memory_gb=80)
    d, i, v, n, q, kv = 4096, 12288, 151936, 36, 32 * 128, 8 * 128
    block = d * (q + 2 * kv) + q * d + 3 * d * i + 2 * d + 2 * 128  # projections, 2 norms, q/k norms
    params = 2 * v * d + n * block + d  # untied embeddings and head, final norm
    lora = n * 64 * ((d + q) + 2 * (d + kv) + (q + d) + 2 * (d + i) + (i + d))
    lines = dict(plan.lines)
    assert plan.details["params"] == params == 8_190_735_360
    assert plan.details["lora_params"] == lora == 174_587_904
    assert lines["base weights (bfloat16)"] == 2 * params
    assert lines["LoRA weights (r 64, 174.6 M, float32)"] == lines["LoRA gradients"] == 4 * lora
    assert lines["AdamW state (2 per LoRA weight)"] == 8 * lora
    assert plan.lengths["oracle"] > 100 and plan.lengths["context"] > 400 and plan.micro_batch == 16
    assert plan.activations_checkpointed < plan.activations_plain / 10
    assert plan.fits and 40 * GB < plan.total < 80 * GB
    assert "does NOT fit" in plan_memory(load_config("paper-qwen3-8b"), gpu_memory_gb=24).report()


def test_ao_plan_cli_advice_sharding_and_quantisation():
    from typer.testing import CliRunner

    from activation_oracles.cli import app

    r = CliRunner().invoke(app, ["plan", "paper-gemma2-9b", "--gpu-memory", "40"])
    assert r.exit_code == 1 and "does NOT fit in 40 GB" in r.output
    first = r.output.split("does NOT fit in 40 GB")[1].splitlines()[1]
    assert first.startswith("  - model.gradient_checkpointing=true") and first.endswith("(fits)")
    r = CliRunner().invoke(app, ["plan", "paper-gemma2-9b", "--gpus", "4", "--set", "train.distributed=fsdp", "--json"])
    fsdp = json.loads(r.output)
    assert fsdp["micro_batch"] == 4 and abs(fsdp["lines"]["base weights (bfloat16, sharded)"] * 4 - 18.48) < 0.01
    r = CliRunner().invoke(app, ["plan", "paper-llama3.3-70b", "--gpus", "4", "--gpu-memory", "141", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["fits"] is True and out["lines"]["base weights (8bit)"] > 70  # int8 blocks, float32 the rest
    r = CliRunner().invoke(app, ["plan", "paper-qwen3-8b", "--gpus", "3"])
    assert r.exit_code == 2 and "not divisible" in r.output


def _measured_cpu_peak(cfg, rows, tok):
    """Bytes alive at the start of a (second) training step plus the largest net allocation during it,
    read from the PyTorch profiler's memory events: what the step really allocates on the CPU."""
    from accelerate import Accelerator
    from torch.profiler import ProfilerActivity, profile

    from activation_oracles.models import load_model
    from activation_oracles.train.step import apply_lora, make_objective, make_optimizer, train_step

    model, _ = load_model(cfg.model.spec, dtype=cfg.model.dtype, device="cpu")
    model = apply_lora(model, cfg)
    acc = Accelerator(cpu=True)
    obj = make_objective(model, cfg)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg, "cpu")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    denom = float(sum(sum(1 for x in r["labels"][1:] if x != -100) for r in rows))
    for p in model.parameters():  # an AdamW step on zero gradients allocates its state
        if p.requires_grad:
            p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    alive = sum(p.numel() * p.element_size() for p in model.parameters())
    alive += sum(t.numel() * t.element_size() for st in opt.state.values() for t in st.values() if torch.is_tensor(t))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        train_step(acc, obj, opt, sched, [rows], tok.pad_token_id, cfg, denom)
    cur = peak = 0
    for e in sorted(prof.profiler.kineto_results.events(), key=lambda e: e.start_ns()):
        if e.name() == "[memory]":
            cur += e.nbytes()
            peak = max(peak, cur)
    return alive + peak


@pytest.mark.slow
def test_plan_is_within_25_percent_of_a_real_cpu_step(smol):
    """SmolLM2-135M (cpu-smollm2, float32, batch 2) on the worst-case batch the plan assumes."""
    from activation_oracles.models import layer_from_percent
    from activation_oracles.train.synthetic import synthetic_row

    cfg = load_config("cpu-smollm2", {"train.autocast": None, "train.batch_size": 2})
    plan = plan_memory(cfg, gpus=1, gpu_memory_gb=None, cuda=False)
    L = plan.lengths
    rng = np.random.default_rng(0)
    layer = layer_from_percent(30, 50)
    rows = [synthetic_row(rng, oracle=L["oracle"], context=L["context"], k=L["k"], labels=L["labels"], layer=layer,
                          vocab=len(smol[1])) for _ in range(2)]
    measured = _measured_cpu_peak(cfg, rows, smol[1])
    assert abs(plan.total - measured) / measured < 0.25, (plan.report(), measured / GB)


# ----------------------------------------------------------------------------- preflight


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, smol_tokenizer):
    from conftest import make_tiny_model
    from test_train_helpers import make_dataset

    d = tmp_path_factory.mktemp("pre")
    make_tiny_model("llama").save_pretrained(d / "tiny")
    smol_tokenizer.save_pretrained(d / "tiny")
    return d / "tiny", make_dataset(smol_tokenizer, d / "mix")


def _cfg(model_dir, out, preflight):
    return {"model": {"spec": str(model_dir)}, "optim": {"lr": 3e-3}, "lora": {"r": 8, "alpha": 16, "dropout": 0.1},
            "train": {"batch_size": 4, "max_steps": 3, "seed": 1, "preflight": preflight},
            "eval": {"final": False}, "output": {"dir": str(out), "progress": False}}


def test_preflight_changes_nothing(tiny_run, tmp_path):
    """Dropout draws, weights and losses of a run with the preflight equal those of one without."""
    from safetensors.torch import load_file

    model_dir, mix = tiny_run
    runs = [train(_cfg(model_dir, tmp_path / str(p), p), data=str(mix)) for p in (False, True)]
    losses = [[json.loads(x)["loss"] for x in (r / "metrics.jsonl").read_text().splitlines()] for r in runs]
    assert losses[0] == losses[1]
    a, b = (load_file(r / "adapter" / "adapter_model.safetensors") for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_preflight_out_of_memory_fails_early_with_the_plan(tiny_run, tmp_path, monkeypatch):
    from activation_oracles.train.objective import OracleObjective

    model_dir, mix = tiny_run
    calls = []

    real = OracleObjective.forward

    def oom(self, **kw):
        if kw["input_ids"].device.type == "meta":  # (the plan in the message runs the objective on meta)
            return real(self, **kw)
        calls.append(1)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(OracleObjective, "forward", oom)
    with pytest.raises(ConfigError) as e:
        train(_cfg(model_dir, tmp_path / "run", True), data=str(mix))
    msg = str(e.value)
    assert e.value.field == "train.batch_size" and "before training started" in msg and "Tried to allocate" in msg
    assert "total (peak per GPU)" in msg and len(calls) == 1  # the plan is in the message; no step ran
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
