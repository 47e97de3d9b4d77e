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
    config: Optional[Path] = typer.Argument(None, help="Mixture YAML (or builtin/paper); omitted: --preset, else the "
                                                       "built-in offline mixture."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output directory (load it with datasets.load_from_disk); "
                                                                 "default: <cache>/data/<key>."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A packaged mixture: builtin (offline demo data) or "
                                                                "paper (the paper's 1M-example mixture from its sources)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model spec whose tokenizer/depth to use."),
    reference_data: Optional[Path] = typer.Option(
        None, "--reference-data", help="The reference repository's datasets/ folder (git clone "
                                       "github.com/adamkarvonen/activation_oracles; pass activation_oracles/datasets)."),
    hub_mirror: Optional[Path] = typer.Option(
        None, "--hub-mirror", help="Read hub datasets from DIR/<org>/<name>/ (laid out as on the hub) instead of the hub."),
    text_source: Optional[str] = typer.Option(
        None, "--text-source", help="Context prediction's text corpus instead of the config's (the paper: "
                                    "HuggingFaceFW/fineweb): a hub id ID[@CONFIG][:SPLIT] or a local file/directory."),
    chat_source: Optional[str] = typer.Option(
        None, "--chat-source", help="Context prediction's chat corpus instead of the config's (the paper: the gated "
                                    "lmsys/lmsys-chat-1m): a hub id ID[@CONFIG][:SPLIT] or a local .jsonl file/directory."),
    scale: float = positive_option(1.0, "--scale", help="Multiply every train and test count (e.g. 0.001)."),
    seed: Optional[int] = seed_option(None, "--seed", help="Override the config's seed (an integer >= 0)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when DIR holds this exact mixture."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
):
    """Build a mixture into DIR (reused when the config, tokenizer and sources are unchanged)."""
    from ..fsutil import check_writable_dir, remove_stale_temporaries
    from .mixture import build_mixture, mixture_info, saved_dir
    from .schema import DataError

    log = lambda m: typer.echo(m, err=True)  # noqa: E731
    if quiet:
        import datasets

        datasets.disable_progress_bars()  # the hub readers' own bars
    if out is not None:
        check_writable_dir(out, "--out")
        remove_stale_temporaries(out)  # what a killed build into --out left beside it
    try:
        cfg = _config(config, preset, scale)
        if reference_data is not None:
            cfg.reference_data = str(reference_data)
        if hub_mirror is not None:
            cfg.hub_mirror = str(hub_mirror)
        for kind, spec in (("text", text_source), ("chat", chat_source)):
            if spec:
                cfg = cfg.with_cp_source(kind, spec)
        if model:
            cfg.model = model
        if seed is not None:
            cfg.seed = seed
        dd = build_mixture(cfg, out_dir=out, progress=not quiet, force=force, log=log)
    except (DataError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    where = saved_dir(dd)
    for name, src in mixture_info(where).get("sources", {}).items():
        if src.get("recycled"):
            log(f"note: {name} reused contexts: {src['contexts_drawn']} drawn from {src['contexts']} ({src['source']})")
    typer.echo(f"{where}: " + ", ".join(f"{s}={len(d):,}" for s, d in dd.items()))


def _config(config: Optional[Path], preset: Optional[str], scale: float):
    from .config import PACKAGED, MixtureConfig, packaged_config
    from .schema import DataError

    if config is not None and preset is not None:
        raise DataError(f"give a CONFIG ({config}) or --preset {preset}, not both")
    if preset is not None and preset not in PACKAGED:
        raise DataError(f"--preset {preset!r}: packaged presets are {', '.join(PACKAGED)}")
    if config is None and preset in (None, "builtin"):
        return MixtureConfig.builtin(scale=scale)
    return MixtureConfig.from_yaml(packaged_config(preset) if preset else config).scaled(scale)


@app.command()
def inspect(
    path: Path = typer.Argument(..., help="A directory written by `ao data build`."),
    examples: int = count_option(3, "--examples", "-n", minimum=0, help="Decoded examples to show."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no decoded examples)."),
    seed: int = seed_option(0, "--seed", help="Which examples to show."),
):
    """Counts per task, variant and layer, K and J histograms, and decoded examples."""
    import numpy as np

    from .mixture import load_mixture, load_tokenizer, mixture_info
    from .report import render_example, summarize
    from .schema import TASKS

    dd, meta = load_mixture(path), mixture_info(path)
    summary = {split: summarize(dd[split]) for split in dd}
    if as_json:
        for s in summary.values():  # JSON keys are strings
            s["per_dataset"] = {f"{t}/{d}": v for (t, d), v in s["per_dataset"].items()}
        json.dump({"model": meta["model"], "layers": meta["layers"], "sources": meta.get("sources", {}), **summary},
                  sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return
    typer.echo(f"{path}: model={meta['model']} layers={meta['layers']} key={meta['key'][:12]}")
    if meta.get("skipped_too_short"):
        typer.echo(f"context_prediction documents skipped as too short: {meta['skipped_too_short']}")
    for split, s in summary.items():
        typer.echo(f"\n== {split}: {s['examples']:,} examples")
        for name in ("per_task_variant", "per_layer", "K", "J", "classification_answers", "tokens"):
            if s[name]:
                typer.echo(f"{name}: " + ", ".join(f"{k}={v:,}" for k, v in s[name].items()))
        typer.echo("per_dataset: " + ", ".join(f"{t}/{d}={v:,}" for (t, d), v in s["per_dataset"].items()))
    if meta.get("sources"):
        typer.echo("\n== sources")
        for name, src in meta["sources"].items():
            rest = ", ".join(f"{k}={v}" for k, v in src.items() if k != "source")
            typer.echo(f"{name}: {src['source']} ({rest})")
    tok, _ = load_tokenizer(meta["model"])
    train = dd["train"]
    if len(train) and examples:
        rng = np.random.default_rng(seed)
        # One example of each family first, so all three show up.
        tasks = train.data.column("task").to_pylist() if len(train) <= 2_000_000 else []
        picks = []
        for t in TASKS:
            idx = [i for i, x in enumerate(tasks) if x == t]
            if idx:
                picks.append(int(rng.choice(idx)))
        picks += [int(i) for i in rng.integers(0, len(train), size=max(0, examples - len(picks)))]
        typer.echo("")
        for i in picks[:examples]:
            typer.echo(render_example(train[i], tok) + "\n")


guard_commands(app)  # every `ao data` command inside the error boundary, whichever app mounts this one
