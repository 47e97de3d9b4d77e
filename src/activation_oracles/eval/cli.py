"""`ao eval`: evaluate any oracle adapter on held-out yes/no classification, with baselines."""

from __future__ import annotations

import typer

from ..cliargs import (
    check_input_file, choice_option, command_boundary, count_option, device_option, parse_names, require_module,
)


def eval_command(
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Oracle adapter dir or hub id (none: untrained)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Base model (default: from ao_config.json, else smollm2-135m)."),
    data: str | None = typer.Option(None, "--data", "-d",
                                    help="Mixture dir, mixture YAML, or a classification source dir "
                                         "(e.g. ../shared/data/classification). Default: the built-in mixture."),
    tasks: str | None = typer.Option(None, "--tasks", "-t", help="Comma-separated datasets to evaluate (default all)."),
    out: str = typer.Option("eval_out", "--out", "-o", help="Where report.md, results.json and plots go."),
    max_per_group: int = count_option(200, "--max-per-group", help="Held-out questions per dataset and variant."),
    metrics: str | None = typer.Option(None, "--metrics", help="A run's metrics.jsonl, to plot its loss curves."),
    scoring: str = choice_option("choice", "--scoring", choices=("choice", "generate"),
                                 help="choice: Yes vs No at the first answer token (one forward); "
                                      "generate: greedy text, first word compared."),
    text: bool = typer.Option(True, "--text/--no-text",
                              help="Also ask the base model about the input as plain text (the `text` column)."),
    heldout: str | None = typer.Option(None, "--heldout",
                                       help="Comma-separated datasets the oracle never trained on: scored too, and "
                                            "reported as their own part (the oracle against the untrained oracle, "
                                            "with a paired interval), kept out of the trained tasks' averages."),
    device: str | None = device_option(),
):
    """Score an oracle per task (single- and multi-token separately) against the untrained oracle,
    the no-injection control and a linear probe on the same activations, and the base model reading the
    same tokens as text, with 95 % intervals."""
    from ..fsutil import check_writable_dir
    from ..registry import resolve_adapter

    check_writable_dir(out, "--out")  # before the model loads and the questions are scored
    require_module("matplotlib", "ao eval's figures")
    require_module("sklearn", "ao eval's linear probe")
    if metrics is not None:
        check_input_file(metrics, "--metrics")
    resolve_adapter(model or "smollm2-135m", adapter, name="--adapter")
    task_list = parse_names(tasks, "--tasks")
    held = parse_names(heldout, "--heldout")

    from transformers.utils import logging as hf_logging

    from ..oracle import Oracle
    from ..oracle_config import read_ao_config
    from .classification import ALL_METHODS, METHODS
    from .run import eval_data, run_eval

    hf_logging.disable_progress_bar()
    if task_list and held:
        task_list += [t for t in held if t not in task_list]
    base = model or read_ao_config(adapter).get("base_model") or "smollm2-135m"
    dd = eval_data(data, base, task_list)
    test = dd["test"].select_columns(["task", "dataset"])
    present = {d for t, d in zip(test["task"], test["dataset"]) if t == "classification"}
    for flag, names in (("--tasks", task_list), ("--heldout", held)):  # before the model loads
        missing = [t for t in names or () if t not in present]
        if missing:
            raise ValueError(f"{flag}: {', '.join(missing)} not in the data's classification tasks (it has "
                             f"{', '.join(sorted(present)) or 'none'})")
    bar_tasks = [t for t in (task_list or sorted(present)) if t not in held] if held else None
    oracle = Oracle.from_pretrained(base, adapter, device=device)
    _, summary, samples, report = run_eval(
        oracle, dd, out, tasks=task_list, max_per_group=max_per_group, metrics_path=metrics, scoring=scoring,
        methods=ALL_METHODS if text else METHODS, bar_tasks=bar_tasks, heldout_tasks=held, bar=bool(held),
        meta={"adapter": adapter or "none (untrained)", "base_model": base, "data": data or "built-in"},
    )
    typer.echo(report.read_text(encoding="utf-8"))


def register(app: typer.Typer) -> None:
    app.command("eval")(command_boundary(eval_command))
