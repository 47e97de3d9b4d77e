"""`ao train` command."""

from __future__ import annotations

import typer

from ..cliargs import command_boundary, count_option, positive_option


def train_command(
    config: str = typer.Argument(None, help="Preset name (cpu-smollm2, paper-qwen3-8b, ...) or YAML file; "
                                            "optional with --resume."),
    data: str = typer.Option(None, "--data", help="Mixture directory (save_to_disk) to train on instead of the "
                                                  "config's data recipe (data.mixture / data.builtin_mixture)."),
    out: str = typer.Option(None, "--out", help="Run directory (output.dir)."),
    max_steps: int = count_option(None, "--max-steps", field="train.max_steps",
                                  help="Optimiser steps (train.max_steps)."),
    save_every: int = count_option(None, "--save-every", minimum=0, field="output.save_every",
                                   help="Checkpoint every N steps (output.save_every; 0: only at the end)."),
    eval_every: int = count_option(None, "--eval-every", minimum=0, field="eval.every",
                                   help="Evaluate every N steps (eval.every; 0: only at the end)."),
    resume: str = typer.Option(None, "--resume", help="Continue the run in this directory from its latest "
                                                      "complete checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh in an --out that holds another run: "
                                                              "its config, checkpoints, adapter and metrics are "
                                                              "deleted first."),
    lr: float = positive_option(None, "--lr", field="optim.lr", help="Peak learning rate (optim.lr)."),
    batch_size: int = count_option(None, "--batch-size", field="train.batch_size",
                                   help="Global batch size (train.batch_size)."),
    set_: list[str] = typer.Option(None, "--set", "-s", help="Any config field: section.key=value (repeatable)."),
    list_presets: bool = typer.Option(False, "--list-presets", help="Print the packaged presets and exit."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
):
    """Fine-tune an oracle LoRA adapter with on-the-fly activations (resumable; multi-GPU via
    `accelerate launch -m activation_oracles.train ...`)."""
    from .presets import list_presets as _list

    if list_presets:
        for name in _list():
            typer.echo(name)
        return
    from .config import parse_set

    ov = parse_set(set_)
    for key, value in (("train.max_steps", max_steps), ("output.save_every", save_every),
                       ("eval.every", eval_every), ("optim.lr", lr), ("train.batch_size", batch_size)):
        if value is not None:
            ov[key] = value
    if resume is not None and overwrite:
        raise ValueError("--overwrite starts afresh and --resume continues: give one of them")
    if print_config:
        from .loop import prepare

        cfg = prepare(config, data=data, out=out, resume=resume, overrides=ov)[0]
        typer.echo(cfg.to_yaml())
        return
    from .loop import train

    run_dir = train(config, data=data, out=out, resume=resume, overrides=ov, overwrite=overwrite)
    typer.echo(f"adapter: {run_dir / 'adapter'}")


def register(app: typer.Typer) -> None:
    """Add the training command(s) to the top-level `ao` app."""
    app.command("train")(command_boundary(train_command))
