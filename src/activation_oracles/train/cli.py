"""`ao train` command."""

from __future__ import annotations

import typer


def _parse_set(items: list[str] | None) -> dict:
    from .config import ConfigError, parse_set

    try:
        return parse_set(items)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None


def train_command(
    config: str = typer.Argument(None, help="Preset name (cpu-smollm2, paper-qwen3-8b, ...) or YAML file; "
                                            "optional with --resume."),
    data: str = typer.Option(None, "--data", help="Mixture directory (save_to_disk); default: the built-in mixture."),
    out: str = typer.Option(None, "--out", help="Run directory (output.dir)."),
    max_steps: int = typer.Option(None, "--max-steps", help="Optimiser steps (train.max_steps)."),
    save_every: int = typer.Option(None, "--save-every", help="Checkpoint every N steps (output.save_every)."),
    eval_every: int = typer.Option(None, "--eval-every", help="Evaluate every N steps (eval.every)."),
    resume: str = typer.Option(None, "--resume", help="Continue the run in this directory from its latest "
                                                      "complete checkpoint."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (optim.lr)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Global batch size (train.batch_size)."),
    set_: list[str] = typer.Option(None, "--set", "-s", help="Any config field: section.key=value (repeatable)."),
    list_presets: bool = typer.Option(False, "--list-presets", help="Print the packaged presets and exit."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved config and exit."),
):
    """Fine-tune an oracle LoRA adapter with on-the-fly activations (resumable; multi-GPU via
    `accelerate launch -m activation_oracles.train ...`)."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .presets import list_presets as _list

    if list_presets:
        for name in _list():
            typer.echo(name)
        return
    ov = _parse_set(set_)
    for key, value in (("train.max_steps", max_steps), ("output.save_every", save_every),
                       ("eval.every", eval_every), ("optim.lr", lr), ("train.batch_size", batch_size)):
        if value is not None:
            ov[key] = value
    try:
        if print_config:
            from .loop import prepare

            cfg = prepare(config, data=data, out=out, resume=resume, overrides=ov)[0]
            typer.echo(cfg.to_yaml())
            return
        from .loop import train

        run_dir = train(config, data=data, out=out, resume=resume, overrides=ov)
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"adapter: {run_dir / 'adapter'}")


def register(app: typer.Typer) -> None:
    """Add the training command(s) to the top-level `ao` app."""
    app.command("train")(train_command)
