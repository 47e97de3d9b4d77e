"""The `ao` command line.

Every command runs inside one error boundary (cliargs.guard_commands, applied after all registrations at the
end of this file): input a user can fix is reported as `error: ...` with exit status 2. Heavy modules (torch,
transformers, datasets) are imported inside the commands, so that `ao --help` answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .audit.cli import register as register_audit
from .cliargs import (
    Group, choice_option, count_option, device_option, dtype_option, guard_commands, parse_choices, parse_ints,
    percent_option, positive_option,
)
from .data.cli import app as data_app
from .eval.cli import register as register_eval
from .serve.cli import register as register_serve
from .train.cli import register as register_train
from .view.cli import register as register_view


def __getattr__(name: str):
    if name == "parse_positions":  # re-exported for `ao ask --positions`; oracle.py imports torch
        from .oracle import parse_positions

        return parse_positions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


app = typer.Typer(
    help="Activation Oracles: train, evaluate and query LLMs that read activations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=Group,  # usage errors print as `error: ...` too
)
app.add_typer(data_app, name="data")
register_train(app)
register_eval(app)
register_audit(app)
register_view(app)
register_serve(app)


@app.command()
def demo(
    out: str = typer.Option("demo_out", "--out", "-o", help="Where the adapter, report and plots go."),
    preset: str = typer.Option("cpu-smollm2", "--preset", help="Training preset."),
    max_steps: int | None = count_option(None, "--max-steps", help="Override the preset's step count (>= 1)."),
    data_scale: float | None = positive_option(None, "--data-scale", help="Scale the built-in mixture's counts "
                                               "(> 0)."),
    max_per_group: int = count_option(60, "--max-per-group", help="Held-out questions per task and variant."),
    data: str | None = typer.Option(None, "--data", help="Train and evaluate on this mixture directory (built by "
                                    "`ao data build`) instead of the built-in offline mixture."),
):
    """Build the offline mixture, train an oracle (CPU, or the GPU if there is one), evaluate it against three
    baselines."""
    from .fsutil import check_writable_dir
    from .train.config import load_config

    check_writable_dir(out, "--out")
    load_config(preset, {})  # an unknown preset or a broken one, before anything is built
    from .demo import run_demo

    if data is not None and not (Path(data) / "ao_data.json").is_file():
        raise ValueError(f"--data {data}: not a mixture built by `ao data build` (no ao_data.json in it); build one "
                         f"with `ao data build ... --out {data}`")
    if data is not None and data_scale is not None:
        raise ValueError("--data-scale scales the built-in mixture; with --data build DIR at the size you want")
    run_demo(out, preset=preset, max_steps=max_steps, data_scale=data_scale, max_per_group=max_per_group, data=data)


def _check_adapters(model: str, adapter: str | None, target_adapter: str | None) -> None:
    """The adapters `ao ask` names exist (and the target's files are whole), before any model loads."""
    from .registry import resolve_adapter

    resolve_adapter(model, adapter, name="--adapter")
    if target_adapter is not None:
        from .adapters import verify_adapter_files

        verify_adapter_files(resolve_adapter(model, target_adapter, name="--target-adapter"),
                             f"--target-adapter {target_adapter}")


def _text_positions(oracle, context: str, raw: bool, spec, positions: str) -> list[int]:
    """--positions counted within the user's text: the prompt positions it picks."""
    from .oracle import resolve_positions

    span = oracle.text_positions(context, raw=raw)
    try:
        return [span[i] for i in resolve_positions(spec, len(span))]
    except ValueError as e:
        raise ValueError(f"--positions {positions!r}: {e} (your text has {len(span)} tokens; "
                         "--include-template counts over the whole prompt)") from None


@app.command()
def ask(
    context: str = typer.Option(..., "--context", "-c", help="Text fed to the target model."),
    question: list[str] = typer.Option(..., "--question", "-q", help="Question for the oracle (repeatable)."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Base model spec."),
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Oracle LoRA adapter: a directory, a hub id, "
                                       "or 'published' (the authors' oracle for --model; see `ao oracles`)."),
    layer: int | None = count_option(None, "--layer", minimum=0,
                                     help="Absolute source layer (overrides --layer-percent)."),
    layers: str | None = typer.Option(None, "--layers", help="Several source layers at once (a multi-layer "
                                      "oracle), e.g. 7,15,22."),
    layer_percent: float | None = percent_option(None, "--layer-percent",
                                                 help="Source layer as % of depth (default 50, or the adapter's "
                                                      "layers for a multi-layer oracle)."),
    positions: str = typer.Option("all", "--positions", "-p", help="all | last | N | A:B | N,M,... counted "
                                  "within your text (the chat template's tokens left out; see --include-template)."),
    include_template: bool = typer.Option(False, "--include-template", help="Read the chat template's tokens too "
                                          "(system prompt, role markers): --positions then counts over the whole "
                                          "prompt."),
    mode: str = choice_option("full", "--mode", choices=("full", "tokens", "segment")),
    raw: bool = typer.Option(False, "--raw", help="Feed the context as plain text, without the chat template."),
    source: str = choice_option("orig", "--source", choices=("orig", "lora", "diff"),
                                help="orig | lora | diff: read the base model, the fine-tuned target "
                                     "(--target-adapter), or their difference."),
    target_adapter: str | None = typer.Option(None, "--target-adapter", help="LoRA of the target model."),
    scores: str | None = typer.Option(None, "--scores", help="Comma-separated choices, e.g. Yes,No: print each "
                                      "choice's probability instead of generating."),
    max_new_tokens: int = count_option(40, "--max-new-tokens"),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    temperature: float = positive_option(1.0, "--temperature"),
    num_samples: int = count_option(1, "--num-samples", help="Samples per query (implies --sample); prints each "
                                    "distinct answer with its agreement rate."),
    logprobs: bool = typer.Option(False, "--logprobs", help="Also print each answer's log-probability."),
    controls: bool = typer.Option(False, "--controls", help="Also answer with no injection and with an "
                                  "unrelated neutral context at the same positions, printed side by side."),
    batch_size: int = count_option(64, "--batch-size", help="Contexts per forward and prompts per generate."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per answer on stdout."),
    device: str | None = device_option(),
    dtype: str | None = dtype_option(),
    quantization: str | None = choice_option(None, "--quantization", choices=("8bit", "4bit"),
                                             help="8bit | 4bit (bitsandbytes, GPU)."),
    device_map: str | None = typer.Option(None, "--device-map", help="'auto': spread a large model over GPUs."),
):
    """Ask an oracle questions about the activations of a context (by default the tokens of your text)."""
    choices = parse_choices(scores, "--scores")  # every value checked before torch and the model load
    layer_list = parse_ints(layers, "--layers")
    if not context.strip():
        raise ValueError("--context is empty: give some text")
    _check_adapters(model, adapter, target_adapter)
    from transformers.utils import logging as hf_logging

    from .oracle import Oracle, parse_positions

    hf_logging.disable_progress_bar()
    spec = parse_positions(positions)
    runs = (None, "no_injection", "unrelated") if controls else (None,)
    load = {k: v for k, v in dict(device=device, dtype=dtype, quantization=quantization,
                                  device_map=device_map).items() if v is not None}
    qs = question[0] if len(question) == 1 else list(question)
    oracle = Oracle.from_pretrained(model, adapter, **load)
    if not include_template:  # --positions counts within the user's text, as `ao view` shows it
        spec = _text_positions(oracle, context, raw, spec, positions)
    common = dict(layer=layer, layers=layer_list, layer_percent=layer_percent, positions=spec, mode=mode, raw=raw,
                  source=source, target_adapter=target_adapter, batch_size=batch_size)
    if choices:
        results = [oracle.score(context, qs, choices, control=c, **common) for c in runs]
    else:
        results = [oracle.ask(context, qs, max_new_tokens=max_new_tokens, do_sample=sample or num_samples > 1,
                              temperature=temperature, num_samples=num_samples, group_samples=num_samples > 1,
                              return_logprobs=logprobs, control=c, **common) for c in runs]
    if as_json:
        for answers in results:
            for a in answers:
                typer.echo(json.dumps(a.to_dict()))
    else:
        _print_answers(results, controls, _token_texts(oracle, context, raw))
    sys.stdout.flush()


def _token_texts(oracle, context: str, raw: bool) -> list[str]:
    from .tokens import context_tokens

    return context_tokens(oracle.tokenizer, context, raw=raw, show_template=True).texts


CONTROL_LABELS = {None: "A:", "no_injection": "no injection:", "unrelated": "unrelated:"}


def _answer_text(a) -> str:
    if a.probs is not None:
        return " | ".join(f"{c} {p:.3f}" for c, p in a.probs.items())
    out = a.text
    if a.agreement is not None:
        out += f"   (agreement {a.agreement:.2f})"
    if a.logprob is not None:
        out += f"   (log-prob {a.logprob:.2f})"
    return out


def _print_answers(results, controls: bool, texts: list[str] = ()) -> None:
    """Answers grouped by query: one header per query (with the token read, for a single position), then its
    answer(s) for each control run."""
    def key(a):
        return (a.context_index, a.question, tuple(a.positions))

    by_query = [{} for _ in results]
    for i, answers in enumerate(results):
        for a in answers:
            by_query[i].setdefault(key(a), []).append(a)
    for k, first in by_query[0].items():
        a = first[0]
        p = a.positions[0]
        where = (f"positions {p} {texts[p]!r}" if p < len(texts) else f"positions {p}") if len(a.positions) == 1 \
            else f"{len(a.positions)} positions"
        src = f"layer {a.layer}" if len(a.layers or [a.layer]) == 1 else "layers " + ",".join(map(str, a.layers))
        typer.echo(f"[{src}, {where}] Q: {a.question}")
        for run in by_query:
            for b in run.get(k, []):
                label = CONTROL_LABELS[b.control] if controls else "A:"
                typer.echo(f"  {label:<13} {_answer_text(b)}" if controls else f"  {label} {_answer_text(b)}")


@app.command()
def oracles(as_json: bool = typer.Option(False, "--json", help="One JSON object per oracle.")):
    """List the published oracle adapters (use one with --adapter published)."""
    from .registry import COLLECTION, PUBLISHED

    for p in PUBLISHED:
        if as_json:
            typer.echo(json.dumps(p.to_dict()))
        else:
            note = f"  ({p.notes})" if p.notes else ""
            typer.echo(f"{p.base_model:<36} {p.adapter}  [{p.confirmed}]{note}")
    if not as_json:
        typer.echo(f"\n[reference]: id found in the authors' code; [listings]: id from listings of {COLLECTION}")


@app.command()
def push(
    adapter_dir: str = typer.Argument(..., help="A trained adapter directory (e.g. runs/x/adapter)."),
    repo: str = typer.Option(..., "--repo", help="Hub repository id, e.g. user/oracle-qwen3-8b."),
    private: bool = typer.Option(False, "--private", help="Create the repository as private."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Write README.md into the adapter directory and list "
                                 "the files that would be uploaded; no network."),
):
    """Upload an oracle adapter, its ao_config.json and a generated model card to the Hugging Face hub."""
    from .push import push as do_push

    files = do_push(adapter_dir, repo, private=private, dry_run=dry_run, log=lambda m: typer.echo(m, err=True))
    verb = "would upload" if dry_run else "uploaded"
    typer.echo(f"{verb} to {repo}{' (private)' if private else ''}:")
    for f in files:
        typer.echo(f"  {f}")
    if dry_run:
        typer.echo(f"model card written to {Path(adapter_dir) / 'README.md'}")


@app.command("plan")
def plan_command(
    config: str = typer.Argument(..., help="Preset name (paper-qwen3-8b, ...) or training YAML."),
    gpus: int = count_option(1, "--gpus", help="GPUs the run uses (DDP, or FSDP per train.distributed)."),
    gpu_memory: float = positive_option(80.0, "--gpu-memory", help="Memory per GPU in GB (H100: 80, H200: 141)."),
    data: str = typer.Option(None, "--data", help="Mixture dir whose length percentile to plan for "
                                                  "(default: data.path, else the paper mixture sample)."),
    set_: list[str] = typer.Option(None, "--set", "-s", help="Any config field: section.key=value (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
):
    """Peak memory per GPU of a training config, from the model config alone (meta device: no weights, no
    download): one line per component, whether it fits, and which setting to change if not."""
    from .train.plan import plan_memory
    from .train.config import load_config, parse_set

    plan = plan_memory(load_config(config, parse_set(set_)), gpus=gpus, gpu_memory_gb=gpu_memory, data=data)
    typer.echo(json.dumps(plan.to_dict(), indent=1) if as_json else plan.report())
    if plan.fits is False:
        raise typer.Exit(1)


guard_commands(app)  # last, after every command is registered: each runs inside the error boundary


def main():  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
