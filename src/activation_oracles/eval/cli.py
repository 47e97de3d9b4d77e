"""`ao eval`: evaluate any oracle adapter on held-out yes/no classification, with baselines."""

from __future__ import annotations

import typer


def eval_command(
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Oracle adapter dir or hub id (none: untrained)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model (default: from ao_config.json, else smollm2-135m)."),
    data: str | None = typer.Option(None, "--data", "-d",
                                    help="Mixture dir, mixture YAML, or a classification source dir "
                                         "(e.g. ../shared/data/classification). Default: the built-in mixture."),
    tasks: str | None = typer.Option(None, "--tasks", "-t", help="Comma-separated datasets to evaluate (default all)."),
    out: str = typer.Option("eval_out", "--out", "-o", help="Where report.md, results.json and plots go."),
    max_per_group: int = typer.Option(200, "--max-per-group", help="Held-out questions per dataset and variant."),
    metrics: str | None = typer.Option(None, "--metrics", help="A run's metrics.jsonl, to plot its loss curves."),
    scoring: str = typer.Option("choice", "--scoring",
                                help="choice: Yes vs No at the first answer token (one forward); "
                                     "generate: greedy text, first word compared."),
    text: bool = typer.Option(True, "--text/--no-text",
                              help="Also ask the base model about the input as plain text (the `text` column)."),
    heldout: str | None = typer.Option(None, "--heldout",
                                       help="Comma-separated datasets the oracle never trained on: scored too, and "
                                            "reported as their own part (the oracle against the untrained oracle, "
                                            "with a paired interval), kept out of the trained tasks' averages."),
    device: str | None = typer.Option(None, "--device"),
):
    """Score an oracle per task (single- and multi-token separately) against the untrained oracle,
    the no-injection control and a linear probe on the same activations, and the base model reading the
    same tokens as text, with 95 % intervals."""
    from transformers.utils import logging as hf_logging

    from ..oracle import Oracle
    from ..oracle_config import read_ao_config
    from .classification import ALL_METHODS, METHODS
    from .run import eval_data, run_eval

    hf_logging.disable_progress_bar()
    task_list = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    held = [t.strip() for t in heldout.split(",") if t.strip()] if heldout else None
    if task_list and held:
        task_list += [t for t in held if t not in task_list]
    base = model or read_ao_config(adapter).get("base_model") or "smollm2-135m"
    try:
        dd = eval_data(data, base, task_list)
        bar_tasks = None
        if held:  # checked before the model loads, so a misspelt task fails at once
            test = dd["test"].select_columns(["task", "dataset"])
            present = {d for t, d in zip(test["task"], test["dataset"]) if t == "classification"}
            missing = [t for t in held if t not in present]
            if missing:
                raise ValueError(f"--heldout: {', '.join(missing)} not in the data's classification tasks (it has "
                                 f"{', '.join(sorted(present))})")
            bar_tasks = [t for t in (task_list or sorted(present)) if t not in held]
        oracle = Oracle.from_pretrained(base, adapter, device=device)
        _, summary, samples, report = run_eval(
            oracle, dd, out, tasks=task_list, max_per_group=max_per_group, metrics_path=metrics, scoring=scoring,
            methods=ALL_METHODS if text else METHODS, bar_tasks=bar_tasks, heldout_tasks=held,
            meta={"adapter": adapter or "none (untrained)", "base_model": base, "data": data or "built-in"},
        )
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.read_text())


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
