"""The `ao` command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from .audit.cli import register as register_audit
from .cliargs import parse_ints
from .data.cli import app as data_app
from .eval.cli import register as register_eval
from .oracle import parse_positions  # noqa: F401  (re-exported: `ao ask --positions`)
from .plan import register as register_plan
from .serve.cli import register as register_serve
from .train.cli import register as register_train
from .view.cli import register as register_view

app = typer.Typer(
    help="Activation Oracles: train, evaluate and query LLMs that read activations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
register_train(app)
register_eval(app)
register_plan(app)
register_audit(app)
register_view(app)
register_serve(app)


@app.command()
def demo(
    out: str = typer.Option("demo_out", "--out", "-o", help="Where the adapter, report and plots go."),
    preset: str = typer.Option("cpu-smollm2", "--preset", help="Training preset."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override the preset's step count."),
    data_scale: float | None = typer.Option(None, "--data-scale", help="Scale the built-in mixture's counts."),
    max_per_group: int = typer.Option(60, "--max-per-group", help="Held-out questions per task and variant."),
):
    """Build the offline mixture, train an oracle (CPU, or the GPU if there is one), evaluate it against three
    baselines."""
    from .demo import run_demo

    run_demo(out, preset=preset, max_steps=max_steps, data_scale=data_scale, max_per_group=max_per_group)


@app.command()
def ask(
    context: str = typer.Option(..., "--context", "-c", help="Text fed to the target model."),
    question: list[str] = typer.Option(..., "--question", "-q", help="Question for the oracle (repeatable)."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Base model spec."),
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Oracle LoRA adapter: a directory, a hub id, "
                                       "or 'published' (the authors' oracle for --model; see `ao oracles`)."),
    layer: int | None = typer.Option(None, "--layer", help="Absolute source layer (overrides --layer-percent)."),
    layers: str | None = typer.Option(None, "--layers", help="Several source layers at once (a multi-layer "
                                      "oracle), e.g. 7,15,22."),
    layer_percent: float | None = typer.Option(None, "--layer-percent", help="Source layer as % of depth "
                                               "(default 50, or the adapter's layers for a multi-layer oracle)."),
    positions: str = typer.Option("all", "--positions", "-p", help="all | last | N | A:B | N,M,..."),
    mode: str = typer.Option("full", "--mode", help="full | tokens | segment"),
    raw: bool = typer.Option(False, "--raw", help="Feed the context as plain text, without the chat template."),
    source: str = typer.Option("orig", "--source", help="orig | lora | diff: read the base model, the fine-tuned "
                               "target (--target-adapter), or their difference."),
    target_adapter: str | None = typer.Option(None, "--target-adapter", help="LoRA of the target model."),
    scores: str | None = typer.Option(None, "--scores", help="Comma-separated choices, e.g. Yes,No: print each "
                                      "choice's probability instead of generating."),
    max_new_tokens: int = typer.Option(40, "--max-new-tokens"),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, "--temperature"),
    num_samples: int = typer.Option(1, "--num-samples", help="Samples per query (implies --sample); prints each "
                                    "distinct answer with its agreement rate."),
    logprobs: bool = typer.Option(False, "--logprobs", help="Also print each answer's log-probability."),
    controls: bool = typer.Option(False, "--controls", help="Also answer with no injection and with an "
                                  "unrelated neutral context at the same positions, printed side by side."),
    batch_size: int = typer.Option(64, "--batch-size", help="Contexts per forward and prompts per generate."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per answer on stdout."),
    device: str | None = typer.Option(None, "--device"),
    dtype: str | None = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16"),
    quantization: str | None = typer.Option(None, "--quantization", help="8bit | 4bit (bitsandbytes, GPU)."),
    device_map: str | None = typer.Option(None, "--device-map", help="'auto': spread a large model over GPUs."),
):
    """Ask an oracle questions about the activations of a context."""
    from transformers.utils import logging as hf_logging

    from .oracle import Oracle

    hf_logging.disable_progress_bar()
    runs = (None, "no_injection", "unrelated") if controls else (None,)
    choices = tuple(c.strip() for c in scores.split(",") if c.strip()) if scores else None
    load = {k: v for k, v in dict(device=device, dtype=dtype, quantization=quantization,
                                  device_map=device_map).items() if v is not None}
    qs = question[0] if len(question) == 1 else list(question)
    try:
        common = dict(layer=layer, layers=parse_ints(layers, "--layers"), layer_percent=layer_percent,
                      positions=parse_positions(positions), mode=mode, raw=raw, source=source,
                      target_adapter=target_adapter, batch_size=batch_size)
        oracle = Oracle.from_pretrained(model, adapter, **load)
        if choices:
            results = [oracle.score(context, qs, choices, control=c, **common) for c in runs]
        else:
            results = [oracle.ask(context, qs, max_new_tokens=max_new_tokens, do_sample=sample or num_samples > 1,
                                  temperature=temperature, num_samples=num_samples, group_samples=num_samples > 1,
                                  return_logprobs=logprobs, control=c, **common) for c in runs]
    except (ValueError, FileNotFoundError, OSError, ImportError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        for answers in results:
            for a in answers:
                typer.echo(json.dumps(a.to_dict()))
    else:
        _print_answers(results, controls)
    sys.stdout.flush()


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


def _print_answers(results, controls: bool) -> None:
    """Answers grouped by query: one header per query, then its answer(s) for each control run."""
    def key(a):
        return (a.context_index, a.question, tuple(a.positions))

    by_query = [{} for _ in results]
    for i, answers in enumerate(results):
        for a in answers:
            by_query[i].setdefault(key(a), []).append(a)
    for k, first in by_query[0].items():
        a = first[0]
        where = f"positions {a.positions[0]}" if len(a.positions) == 1 else f"{len(a.positions)} positions"
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

    try:
        files = do_push(adapter_dir, repo, private=private, dry_run=dry_run)
    except (ValueError, FileNotFoundError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    verb = "would upload" if dry_run else "uploaded"
    typer.echo(f"{verb} to {repo}{' (private)' if private else ''}:")
    for f in files:
        typer.echo(f"  {f}")
    if dry_run:
        typer.echo(f"model card written to {Path(adapter_dir) / 'README.md'}")


def main():  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
