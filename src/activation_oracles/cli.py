"""The `ao` command line."""

from __future__ import annotations

import json
import sys

import typer

from .audit.cli import register as register_audit
from .data.cli import app as data_app
from .eval.cli import register as register_eval
from .oracle import parse_positions  # noqa: F401  (re-exported: `ao ask --positions`)
from .train.cli import register as register_train

app = typer.Typer(
    help="Activation Oracles: train, evaluate and query LLMs that read activations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data_app, name="data")
register_train(app)
register_eval(app)
register_audit(app)


@app.command()
def demo(
    out: str = typer.Option("demo_out", "--out", "-o", help="Where the adapter, report and plots go."),
    preset: str = typer.Option("cpu-smollm2", "--preset", help="Training preset."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Override the preset's step count."),
    data_scale: float | None = typer.Option(None, "--data-scale", help="Scale the built-in mixture's counts."),
    max_per_group: int = typer.Option(100, "--max-per-group", help="Held-out questions per task and variant."),
):
    """Build the offline mixture, train an oracle on CPU, evaluate it against three baselines."""
    from .demo import run_demo

    run_demo(out, preset=preset, max_steps=max_steps, data_scale=data_scale, max_per_group=max_per_group)


@app.command()
def ask(
    context: str = typer.Option(..., "--context", "-c", help="Text fed to the target model."),
    question: list[str] = typer.Option(..., "--question", "-q", help="Question for the oracle (repeatable)."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Base model spec."),
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Oracle LoRA adapter (dir or hub id)."),
    layer: int | None = typer.Option(None, "--layer", help="Absolute source layer (overrides --layer-percent)."),
    layer_percent: float = typer.Option(50, "--layer-percent", help="Source layer as % of depth."),
    positions: str = typer.Option("all", "--positions", "-p", help="all | last | N | A:B | N,M,..."),
    mode: str = typer.Option("full", "--mode", help="full | tokens | segment"),
    raw: bool = typer.Option(False, "--raw", help="Feed the context as plain text, without the chat template."),
    max_new_tokens: int = typer.Option(40, "--max-new-tokens"),
    sample: bool = typer.Option(False, "--sample", help="Sample instead of greedy decoding."),
    temperature: float = typer.Option(1.0, "--temperature"),
    num_samples: int = typer.Option(1, "--num-samples"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per answer on stdout."),
    device: str | None = typer.Option(None, "--device"),
):
    """Ask an oracle questions about the activations of a context."""
    from transformers.utils import logging as hf_logging

    from .oracle import Oracle

    hf_logging.disable_progress_bar()
    try:
        oracle = Oracle.from_pretrained(model, adapter, device=device)
        answers = oracle.ask(
            context, question[0] if len(question) == 1 else list(question), layer=layer,
            layer_percent=layer_percent, positions=parse_positions(positions), mode=mode, raw=raw,
            max_new_tokens=max_new_tokens, do_sample=sample, temperature=temperature, num_samples=num_samples,
        )
    except (ValueError, FileNotFoundError, OSError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    for a in answers:
        if as_json:
            typer.echo(json.dumps(a.to_dict()))
        else:
            where = f"positions {a.positions[0]}" if len(a.positions) == 1 else f"{len(a.positions)} positions"
            typer.echo(f"[layer {a.layer}, {where}] Q: {a.question}\n  A: {a.text}")
    sys.stdout.flush()


def main():  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
