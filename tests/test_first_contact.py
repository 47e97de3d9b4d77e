"""First contact without a traceback (issue 25): one error boundary for every command, a run directory with
one owner, numbers checked at parse time, the model's inputs guarded, files read strictly, and the defaults
a newcomer meets. Each section is one category of the issue; every bad input must exit 2 with `error: ...`
naming the option, argument or file, and no traceback."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import make_tiny_model
from typer.testing import CliRunner

import activation_oracles as ao
from activation_oracles.cli import app

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}


def refused(args, *needles, code=2):
    """Run `ao ARGS` in-process: exit `code`, every needle in the message, no traceback."""
    result = runner.invoke(app, args)
    out = result.output
    assert result.exit_code == code, out
    assert "Traceback" not in out and not isinstance(result.exception, (TypeError, AttributeError)), out
    for n in needles:
        assert n in out, out
    return out


def _tiny_dir(path: Path, tokenizer, hidden: int = 32) -> Path:
    """A saved 4-block llama with SmolLM2's tokenizer; `hidden` sets its width."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.LlamaConfig(vocab_size=49152, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    tf.AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory, smol_tokenizer):
    """Two tiny model directories of different widths and a LoRA adapter of the narrow one."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("models")
    narrow, wide = _tiny_dir(root / "narrow", smol_tokenizer, 32), _tiny_dir(root / "wide", smol_tokenizer, 64)
    peft = get_peft_model(make_tiny_model("llama"), LoraConfig(r=4, target_modules="all-linear"))
    peft.save_pretrained(root / "adapter32")
    return {"narrow": narrow, "wide": wide, "adapter": root / "adapter32"}


# ----------------------------------------------------------------------------- 1. one error boundary


def test_every_registered_command_runs_inside_the_boundary():
    from activation_oracles.cli import app as top

    def commands(a):
        yield from (c.callback for c in a.registered_commands)
        for g in a.registered_groups:
            yield from commands(g.typer_instance)

    assert all(getattr(cb, "_ao_guarded", False) for cb in commands(top))


@pytest.mark.parametrize("args,needles", [
    (["demo", "--preset", "nope"], ["error: config: unknown preset 'nope'"]),
    (["ask", "-c", "hi", "-q", "Q?", "--dtype", "float64x"], ["error:", "--dtype", "'float64x'", "float32"]),
    (["ask", "-c", "hi", "-q", "Q?", "--device", "gpu7"], ["error:", "--device", "not a device"]),
    (["ask", "-c", "hi", "-q", "Q?", "--adapter", "/no/such/adapter"], ["error: --adapter '/no/such/adapter'"]),
    (["data", "build", "--bogus"], ["error: No such option: --bogus", "data build --help`"]),
    (["train", "cpu-smollm2", "--set", "nonsense"], ["error: --set: 'nonsense'"]),
    (["audit", "taboo", "--segment", "a:b"], ["error: --segment 'a:b'"]),
])
def test_bad_values_are_one_error_line(args, needles):
    refused(args, *needles)


def test_cuda_without_a_gpu_is_named():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    refused(["ask", "-c", "hi", "-q", "Q?", "--device", "cuda"], "--device", "no CUDA GPU is visible here")


def test_unwritable_outputs_are_refused_before_the_slow_part(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    t0 = time.time()
    refused(["demo", "--out", str(afile)], f"--out {afile}: is a file, not a directory")
    refused(["data", "build", "--out", str(afile / "sub")], f"{afile} is a file")
    refused(["eval", "--out", str(afile)], "--out")
    refused(["organism", "build", "taboo", "--word", "moon", "--out", str(afile)], "--out", "is a file")
    refused(["view", "-c", "hi", "-q", "Q?", "--out", str(tmp_path)], "--out", "is a directory")
    assert time.time() - t0 < 30  # no model was loaded, nothing was built


def test_read_only_and_full_disks_name_the_directory(tmp_path, monkeypatch):
    import tempfile

    from activation_oracles.cliargs import user_message
    from activation_oracles.fsutil import check_writable_dir

    def denied(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(ValueError, match=f"--out {tmp_path}/x: cannot write there.*Read-only file system"):
        check_writable_dir(tmp_path / "x", "--out")
    monkeypatch.undo()
    full = OSError(errno.ENOSPC, "No space left on device", "/data/run/checkpoints")
    assert user_message(full).startswith("no space left on the device holding /data/run/checkpoints")
    assert "read-only" in user_message(OSError(errno.EROFS, "x", "/mnt/ro"))
    assert user_message(ModuleNotFoundError("No module named 'bitsandbytes'", name="bitsandbytes")).endswith(
        "(install it: pip install 'activation-oracles[gpu]')")
    assert user_message(RuntimeError("a bug")) is None  # a bug is not a user error


def test_disk_full_during_a_checkpoint_names_the_run(tmp_path):
    from activation_oracles.train.checkpoint import CheckpointError, disk_errors

    with pytest.raises(CheckpointError, match=f"writing a checkpoint into {tmp_path} failed.*--resume {tmp_path}"):
        with disk_errors(tmp_path):
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0")
    with pytest.raises(CheckpointError, match="no space left"):
        with disk_errors(tmp_path):
            raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RuntimeError, match="unrelated"):  # anything else is not disguised as a full disk
        with disk_errors(tmp_path):
            raise RuntimeError("unrelated")


def test_a_bug_keeps_its_traceback(monkeypatch):
    import activation_oracles.push as push

    monkeypatch.setattr(push, "push", lambda *a, **k: {}["boom"])
    result = runner.invoke(app, ["push", "x", "--repo", "a/b", "--dry-run"])
    assert result.exit_code == 1
    assert "Traceback" in result.output and "internal error: KeyError is a bug" in result.output


def test_missing_optional_package_is_named_before_the_slow_part(monkeypatch, tmp_path):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else
                        find_spec(name, *a))
    refused(["eval", "--out", str(tmp_path / "e")], "error: ao eval's linear probe needs sklearn",
            "pip install scikit-learn")
    assert not (tmp_path / "e").exists()


def test_adapter_of_another_model_and_truncated_files(models, tmp_path):
    from activation_oracles.adapters import AdapterError

    with pytest.raises(AdapterError, match="adapter trained for hidden size 32; this model has 64"):
        ao.Oracle.from_pretrained(str(models["wide"]), str(models["adapter"]), device="cpu")
    refused(["ask", "-m", str(models["wide"]), "-a", str(models["adapter"]), "-c", "hi", "-q", "Q?"],
            "adapter trained for hidden size 32; this model has 64")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in models["adapter"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(AdapterError, match="adapter_model.safetensors is corrupt or truncated"):
        ao.Oracle.from_pretrained(str(models["narrow"]), str(broken), device="cpu")  # before the model loads
    refused(["push", str(broken), "--repo", "me/x", "--dry-run"], "corrupt or truncated")


# ----------------------------------------------------------------------------- 2. a run directory has one owner


@pytest.fixture(scope="module")
def run_setup(tmp_path_factory, smol_tokenizer):
    from test_train_helpers import make_dataset

    root = tmp_path_factory.mktemp("owner")
    tiny = root / "tiny"
    make_tiny_model("llama").save_pretrained(tiny)
    smol_tokenizer.save_pretrained(tiny)
    return tiny, make_dataset(smol_tokenizer, root / "mix")


def _cfg(tiny, out, **train):
    return {"model": {"spec": str(tiny)}, "lora": {"r": 4, "alpha": 8},
            "train": {"batch_size": 4, "max_steps": 2, "seed": 1, **train},
            "eval": {"every": 0, "final": False}, "output": {"dir": str(out), "save_every": 1, "progress": False}}


def test_second_writer_is_refused_naming_the_first(run_setup, tmp_path):
    """Two concurrent `ao train` on one --out: the second is refused, naming the first one's pid."""
    tiny, mix = run_setup
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(tiny, tmp_path / "run", max_steps=100_000)))
    first = subprocess.Popen([sys.executable, "-m", "activation_oracles.train", str(cfg), "--data", str(mix)],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / "run" / ".ao-train.lock"
        deadline = time.time() + 240
        while not (lock.exists() and lock.read_text()) and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read()[-2000:]
        t0 = time.time()
        refused(["train", str(cfg), "--data", str(mix)], "being written by another training run",
                f"pid {first.pid}")
        assert time.time() - t0 < 30
        done = tmp_path / "run" / "checkpoints" / "step_1" / "MANIFEST.json"
        while not done.exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        assert done.exists(), first.stderr.read()[-2000:] if first.poll() is not None else "no checkpoint yet"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed: the kernel dropped its lock; a new run is told what the directory holds and how to take it over
    out = refused(["train", str(cfg), "--data", str(mix), "--max-steps", "2"], "already holds another run",
                  "checkpoints up to step")
    assert "--resume" in out and "--overwrite" in out


def test_new_run_into_another_run_is_refused_unless_overwrite(run_setup, tmp_path):
    from activation_oracles.train import ConfigError, train

    tiny, mix = run_setup
    run = train(_cfg(tiny, tmp_path / "run"), data=str(mix))
    assert (run / "checkpoints" / "step_2").is_dir()
    with pytest.raises(ConfigError, match="already holds another run .*checkpoints up to step 2"):
        train(_cfg(tiny, run, max_steps=3), data=str(mix))
    with pytest.raises(ConfigError, match="train.max_steps: 1 is below step 2 of the checkpoint"):
        train(resume=str(run), overrides={"train.max_steps": 1})
    before = (run / "adapter" / "adapter_model.safetensors").read_bytes()
    assert (run / "adapter" / "adapter_model.safetensors").read_bytes() == before  # untouched
    # a killed writer's temporary directories are removed when the next owner starts
    stale = run / "checkpoints" / ".step_9-ao999999999@00000000-x"
    from activation_oracles.fsutil import _host_tag

    stale = run / "checkpoints" / f".step_9-ao999999999@{_host_tag()}-x"
    stale.mkdir()
    (stale / "optimizer.pt").write_bytes(b"half")
    (run / "checkpoints" / "step_2" / "keep").write_text("")  # (checked below: --overwrite removes it all)
    run = train(_cfg(tiny, run, max_steps=1), data=str(mix), overwrite=True)
    assert not stale.exists() and [p.name for p in (run / "checkpoints").iterdir()] == ["step_1"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1


def test_final_evaluation_has_a_progress_bar(run_setup, tmp_path, capfd):
    from activation_oracles.train import train

    tiny, mix = run_setup
    cfg = _cfg(tiny, tmp_path / "run", max_steps=1)
    cfg["eval"] = {"final": True, "max_examples": 4, "max_loss_examples": 4, "batch_size": 2}
    cfg["output"]["progress"] = True
    train(cfg, data=str(mix))
    err = capfd.readouterr().err
    assert "eval loss" in err and "eval answers" in err  # the minutes after the training bar are not silent


# ----------------------------------------------------------------------------- kill -9, then rerun


def _hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob(".*") if p.name != ".ao-train.lock")


def test_killed_data_build_leaves_nothing_after_the_rerun(tmp_path):
    """kill -9 in the middle of `ao data build`, then the same command: the same data, no temporary left."""
    out = tmp_path / "mix"
    args = [sys.executable, "-m", "activation_oracles.cli", "data", "build", "--out", str(out), "--scale", "0.05",
            "--quiet"]
    p = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not any(x.name.startswith(".mix-") for x in tmp_path.iterdir()) and time.time() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not out.exists() and any(x.name.startswith(".mix-") for x in tmp_path.iterdir())  # killed mid-write
    done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [x.name for x in tmp_path.iterdir()] == ["mix"]  # the killed build's temporary is gone
    clean = tmp_path.parent / f"{tmp_path.name}-clean"
    subprocess.run([*args[:6], str(clean / "mix"), *args[7:]], env=ENV, check=True, timeout=600)
    a, b = (json.loads((d / "ao_data.json").read_text()) for d in (out, clean / "mix"))
    assert a["key"] == b["key"] and a["counts"] == b["counts"]


# ----------------------------------------------------------------------------- 3. numbers at parse time


@pytest.mark.parametrize("args,option", [
    (["demo", "--max-steps", "0"], "--max-steps"),
    (["demo", "--data-scale", "-1"], "--data-scale"),
    (["demo", "--max-per-group", "0"], "--max-per-group"),
    (["data", "build", "--out", "x", "--scale", "0"], "--scale"),
    (["data", "build", "--out", "x", "--seed", "-5"], "--seed"),
    (["view", "-c", "hi", "-q", "Q?", "--serve", "--port", "99999"], "--port"),
    (["plan", "cpu-smollm2", "--gpu-memory", "-1"], "--gpu-memory"),
    (["audit", "taboo", "--max-prompts", "0"], "--max-prompts"),
    (["audit", "taboo", "--input", "bogus"], "--input"),
    (["organism", "build", "taboo", "--out", "x", "--max-steps", "0"], "--max-steps"),
    (["organism", "build", "taboo", "--out", "x", "--batch-size", "0"], "--batch-size"),
    (["eval", "--max-per-group", "0"], "--max-per-group"),
    (["train", "cpu-smollm2", "--lr", "0"], "--lr"),
    (["ask", "-c", "hi", "-q", "Q?", "--temperature", "nan"], "--temperature"),
    (["ask", "-c", "hi", "-q", "Q?", "--scores", ","], "--scores"),
    (["ask", "-c", "hi", "-q", "Q?", "--layers", ","], "--layers"),
])
def test_numbers_are_checked_at_parse_time(args, option):
    t0 = time.time()
    out = refused(args, "error:", option)
    assert time.time() - t0 < 30, out


def test_numbers_are_checked_in_the_api_too():
    from activation_oracles.audit.sft import SFTConfig
    from activation_oracles.data import DataError, MixtureConfig
    from activation_oracles.demo import run_demo
    from activation_oracles.train.plan import plan_memory
    from activation_oracles.train import load_config

    with pytest.raises(DataError, match="scale=0 must be a number > 0"):
        MixtureConfig.builtin(scale=0)
    with pytest.raises(DataError, match="seed=-5 must be an integer >= 0"):
        MixtureConfig.builtin(seed=-5).validate()
    with pytest.raises(ValueError, match="max_steps=0 must be at least 1"):
        run_demo("unused", max_steps=0)
    with pytest.raises(ValueError, match="gpu_memory_gb=-1 must be greater than 0"):
        plan_memory(load_config("cpu-smollm2"), gpu_memory_gb=-1)
    with pytest.raises(ValueError, match="max_steps=0 must be at least 1"):
        SFTConfig(max_steps=0).validate()


# ----------------------------------------------------------------------------- 4. the model's inputs guarded


@pytest.fixture(scope="module")
def tiny_oracle(smol_tokenizer):
    return ao.Oracle(make_tiny_model("llama", seed=5), smol_tokenizer)  # 512 positions, width 32


@pytest.mark.parametrize("call,error,match", [
    (lambda o: o.ask(123, "Q?"), TypeError, "context must be text"),
    (lambda o: o.ask("hi " * 600, "Q?"), ValueError, "context has 6.. tokens but this model reads at most 512"),
    (lambda o: o.ask([1, 2, 10**6], "Q?"), ValueError, "token id 1000000 is outside this model's vocabulary"),
    (lambda o: o.ask(torch.full((2, 32), float("nan")), "Q?"), ValueError, "vector 0 holds NaN"),
    (lambda o: o.ask(torch.zeros(2, 32), "Q?"), ValueError, "vector 0 is all zeros"),
    (lambda o: o.ask([{"role": "user"}], "Q?"), ValueError, "message 0 needs 'role' and 'content'"),
    (lambda o: o.ask([{"role": "wizard", "content": "x"}], "Q?"), ValueError, "role 'wizard'"),
    (lambda o: o.ask("hi", 5), TypeError, "question must be a string"),
    (lambda o: o.ask("hi", "Q?", layer="3"), TypeError, "layer must be an integer"),
    (lambda o: o.ask("hi", "Q?", positions=1.5), TypeError, "positions must be"),
    (lambda o: o.ask("hi", "Q?", max_new_tokens=0), ValueError, "max_new_tokens=0 must be at least 1"),
    (lambda o: o.ask("hi " * 290, "Q?", layers=[1, 2]), ValueError,
     r"positions: .* positions x 2 layer\(s\) make an oracle prompt of .* this model reads at most 512"),
    (lambda o: o.ask("hi", "Q?", max_new_tokens=500), ValueError,
     r"max_new_tokens=500: .* ask for at most \d+ new tokens"),
    (lambda o: o.score("hi", "Q?", choices="Yes"), TypeError, "not the string 'Yes'"),
    (lambda o: o.score("hi", "Q?", choices=["Yes"]), ValueError, "at least two different"),
])
def test_model_inputs_are_guarded(tiny_oracle, call, error, match):
    with pytest.raises(error, match=match):
        call(tiny_oracle)


def test_from_pretrained_checks_its_arguments():
    with pytest.raises(TypeError, match="base must be a model spec string"):
        ao.Oracle.from_pretrained(123)
    with pytest.raises(ValueError, match="dtype='float64x'"):
        ao.load_model("smollm2-135m", dtype="float64x")


# ----------------------------------------------------------------------------- 5. files read strictly


def test_files_are_read_as_strict_utf8(tmp_path):
    yml = tmp_path / "mix.yaml"
    yml.write_bytes("seed: 1\nmodel: caf\xe9\n".encode("latin-1"))
    refused(["data", "build", str(yml), "--out", str(tmp_path / "m")], f"{yml}: not utf-8 text", "line 2", "iconv")
    data = tmp_path / "chats.json"
    data.write_bytes(json.dumps([{"messages": [{"role": "user", "content": "Caf\u00e9?"},
                                               {"role": "assistant", "content": "Oui."}]}],
                                ensure_ascii=False).encode("latin-1"))
    refused(["organism", "build", "taboo", "--word", "moon", "--data", str(data), "--out", str(tmp_path / "o")],
            f"{data}: not utf-8 text")
    cfg = tmp_path / "train.yaml"
    cfg.write_bytes("name: caf\xe9\n".encode("latin-1"))
    refused(["train", str(cfg)], f"config: {cfg}: not utf-8 text")


def test_adapter_is_verified_against_its_manifest_before_push(models, tmp_path):
    from activation_oracles.train.checkpoint import write_manifest

    d = tmp_path / "adapter"
    d.mkdir()
    for f in models["adapter"].iterdir():
        if f.name != "README.md":  # (the trainer's adapters carry no card: push writes one)
            (d / f.name).write_bytes(f.read_bytes())
    write_manifest(d)
    assert runner.invoke(app, ["push", str(d), "--repo", "me/x", "--dry-run"]).exit_code == 0
    weights = d / "adapter_model.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 1  # one bit of one weight: the header still parses
    weights.write_bytes(bytes(raw))
    refused(["push", str(d), "--repo", "me/x", "--dry-run"], "adapter_model.safetensors fails its SHA-256 check")


# ----------------------------------------------------------------------------- 6. the defaults a newcomer meets


def test_ask_reads_the_users_text_by_default(smol):
    base = ["ask", "-c", "I loved this film.", "-q", "Is it positive?", "--mode", "tokens", "--scores", "Yes,No",
            "--json"]
    rows = [json.loads(x) for x in runner.invoke(app, base).stdout.splitlines() if x.startswith("{")]
    text = ao.Oracle(*smol).text_positions("I loved this film.")
    assert [r["positions"][0] for r in rows] == text and len(text) == 5  # I / loved / this / film / .
    rows = [json.loads(x) for x in runner.invoke(app, [*base, "--positions", "-2:"]).stdout.splitlines()
            if x.startswith("{")]
    assert [r["positions"][0] for r in rows] == text[-2:]
    rows = [json.loads(x) for x in runner.invoke(app, [*base, "--positions", "0", "--include-template"]).stdout
            .splitlines() if x.startswith("{")]
    assert rows[0]["positions"] == [0]  # the template's first token, asked for


def test_data_says_plainly_that_it_replaces_the_recipe(tmp_path):
    from activation_oracles.data import MixtureConfig, build_mixture
    from activation_oracles.train import load_config
    from activation_oracles.train.dataset import builtin_mixture_config, recipe_note

    cfg = load_config("cpu-smollm2", {"data.builtin_scale": 0.01})
    plain = tmp_path / "plain"
    build_mixture(MixtureConfig.builtin(scale=0.01), out_dir=plain, log=lambda m: None)
    note = recipe_note(cfg, plain)
    assert note.startswith(f"--data {plain} replaces the config's data recipe (data.mixture builtin and "
                           "data.builtin_mixture)")
    assert "train sst2, md_gender, ner, tense;" in note  # the recipe's four tasks, named
    same = tmp_path / "same"
    build_mixture(builtin_mixture_config(cfg, scale=0.02), out_dir=same, log=lambda m: None)
    assert recipe_note(cfg, same) is None  # the recipe's own mixture at another size (`ao demo --data-scale`)


def test_eval_report_shows_the_bar_only_when_asked(tmp_path):
    from activation_oracles.eval.classification import GroupResult, MethodScore, summarize
    from activation_oracles.eval.report import write_report

    def g(acc_o, acc_p):
        r = GroupResult("sst2", "multi", 10)
        for m, c in (("oracle", acc_o), ("untrained", 5), ("no_injection", 5), ("probe", acc_p)):
            r.scores[m] = MethodScore(correct=c, formatted=10, n=10, hits=[1] * c + [0] * (10 - c))
        return r

    results = [g(9, 10)]
    summary = summarize(results)
    assert "bar" in summary
    assert "The bar" not in write_report(tmp_path / "a", results, summary).read_text()
    assert "## The bar, part by part" in write_report(tmp_path / "b", results, summary, bar=True).read_text()
    assert json.loads((tmp_path / "a" / "results.json").read_text())["summary"]["bar"]  # the numbers stay


def test_organism_that_did_not_learn_is_flagged():
    from activation_oracles.audit.build import behaviour_summary
    from activation_oracles.audit.sft import learned

    assert learned({"first_loss": 3.2, "final_loss": 1.1})
    assert not learned({"first_loss": 3.20, "final_loss": 3.75})
    meta = {"kind": "taboo", "base_model": "m", "secret": {"word": "moon"}, "build_seconds": 1.0, "behaviour": {},
            "training": {"steps": 4, "first_loss": 3.2, "final_loss": 3.75, "learned": False,
                         "warning": "the fine-tune's loss did not fall (3.2 -> 3.75)"}}
    assert "  warning: the fine-tune's loss did not fall (3.2 -> 3.75)" in behaviour_summary(meta).splitlines()


def test_reference_engels_files_load(tmp_path):
    from activation_oracles.data.classification import load_task

    (tmp_path / "engels").mkdir()
    (tmp_path / "engels" / "5_hist_fig_ismale.csv").write_text(
        "prompt,prompt_len,target\n" + "".join(f"Person number {i} lived here.,{5 + i},{i % 2}\n" for i in range(20)))
    (tmp_path / "paraphrases").mkdir()
    (tmp_path / "paraphrases" / "question.json").write_text(json.dumps(
        {"engels": {"5_hist_fig_ismale": {"property": ["Is this person male?"], "not_property": ["Is it female?"]}}}))
    task = load_task("engels", tmp_path)
    assert len(task.items) == 20
    assert sum(bool(ys) for _, ys in task.items) == 10 and {y for _, ys in task.items for y in ys} == {
        "5_hist_fig_ismale"}


def test_help_imports_neither_torch_nor_transformers():
    code = ("import sys, activation_oracles.cli, activation_oracles as ao; "
            "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr[-2000:]
