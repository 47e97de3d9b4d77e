"""`ao data ...` commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from ..cliargs import count_option, guard_commands, positive_option, seed_option

app = typer.Typer(help="Build and inspect oracle training mixtures.", no_args_is_help=True)


@app.command()
def build(
    config: Optional[Path] = typer.Argument(None, help="Mixture YAML; omitted: the built-in offline mixture."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (load it with datasets.load_from_disk)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model spec whose tokenizer/depth to use."),
    scale: Optional[float] = positive_option(None, "--scale", help="Multiply the built-in mixture's counts (> 0; "
                                                                   "without CONFIG only)."),
    seed: Optional[int] = seed_option(None, "--seed", help="Override the config's seed (an integer >= 0)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when DIR holds this exact mixture."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Build a mixture into DIR (reused when the config, tokenizer and sources are unchanged)."""
    from ..fsutil import check_writable_dir, remove_stale_temporaries
    from .config import MixtureConfig
    from .mixture import build_mixture

    check_writable_dir(out, "--out")
    remove_stale_temporaries(out)  # what a killed build into --out left beside it
    if config is not None and scale is not None:
        raise ValueError("--scale multiplies the built-in mixture's counts; with CONFIG set the counts in the "
                         "YAML instead")
    cfg = MixtureConfig.from_yaml(config) if config else MixtureConfig.builtin(scale=1.0 if scale is None else scale)
    if model:
        cfg.model = model
    if seed is not None:
        cfg.seed = seed
    dd = build_mixture(cfg, out_dir=out, progress=not quiet, force=force, log=lambda m: typer.echo(m, err=True))
    typer.echo(f"{out}: " + ", ".join(f"{s}={len(d):,}" for s, d in dd.items()))


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="A directory written by `ao data build`."),
    examples: int = count_option(3, "--examples", "-n", minimum=0, help="Decoded examples to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no decoded examples)."),
    seed: int = seed_option(0, "--seed", help="Which examples to show."),
):
    """Counts per task, variant and layer, K and J histograms, and decoded examples."""
    import numpy as np

    from .report import render_example, summarize
    from .mixture import load_mixture, load_tokenizer, mixture_info

    dd, meta = load_mixture(path), mixture_info(path)
    summary = {split: summarize(dd[split]) for split in dd}
    if as_json:
        json.dump({"model": meta["model"], "layers": meta["layers"], **summary}, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return
    typer.echo(f"{path}: model={meta['model']} layers={meta['layers']} key={meta['key'][:12]}")
    if meta.get("skipped_too_short"):
        typer.echo(f"context_prediction documents skipped as too short: {meta['skipped_too_short']}")
    for split, s in summary.items():
        typer.echo(f"\n== {split}: {s['examples']:,} examples")
        for name in ("per_task_variant", "per_layer", "K", "J", "classification_answers"):
            if s[name]:
                typer.echo(f"{name}: " + ", ".join(f"{k}={v:,}" for k, v in s[name].items()))
        typer.echo("per_dataset: " + ", ".join(f"{t}/{d}={v:,}" for (t, d), v in s["per_dataset"].items()))
    tok, _ = load_tokenizer(meta["model"])
    train = dd["train"]
    if len(train) and examples:
        rng = np.random.default_rng(seed)
        # One example of each family first, so all three show up.
        tasks = train.data.column("task").to_pylist() if len(train) <= 2_000_000 else []
        picks = []
        for t in ("spqa", "classification", "context_prediction"):
            idx = [i for i, x in enumerate(tasks) if x == t]
            if idx:
                picks.append(int(rng.choice(idx)))
        picks += [int(i) for i in rng.integers(0, len(train), size=max(0, examples - len(picks)))]
        typer.echo("")
        for i in picks[:examples]:
            typer.echo(render_example(train[i], tok) + "\n")


guard_commands(app)  # every `ao data` command inside the error boundary, whichever app mounts this one
