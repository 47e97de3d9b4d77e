"""`ao view`: write (and optionally serve) the token-by-token page of an oracle's answers."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..cliargs import (
    check_input_file, choice_option, command_boundary, count_option, device_option, dtype_option, parse_choices,
    percent_option, port_option, positive_option, require_module,
)


def _read_context(context: str | None, file: str | None) -> str:
    from ..fsutil import read_text

    if (context is None) == (file is None):
        raise ValueError("give the text with --context TEXT or --file F (exactly one of them)")
    if file is not None:
        context = read_text(check_input_file(file, "--file"), what="--file ")
        if not context.strip():
            raise ValueError(f"--file {file!r} is empty: the viewer needs some text")
    elif not context.strip():
        raise ValueError("--context is empty: give some text")
    return context


def view_command(
    context: str | None = typer.Option(None, "--context", "-c", help="Text fed to the target model."),
    file: str | None = typer.Option(None, "--file", "-f", help="Read the text from this UTF-8 file instead."),
    question: list[str] = typer.Option(..., "--question", "-q", help="Question for the oracle (repeatable: one tab "
                                       "per question)."),
    kind: str = choice_option("auto", "--kind", choices=("auto", "yesno", "open"),
                              help="auto | yesno | open. auto: yes/no when the question mentions 'yes or no' or its "
                                   "last sentence starts with an auxiliary verb (Is, Does, Can, ...)."),
    choices: str = typer.Option("Yes,No", "--choices", help="Answers of yes/no questions; the page colours "
                                "P(first)."),
    out: str = typer.Option("view.html", "--out", "-o", help="Where the HTML page goes."),
    png: str | None = typer.Option(None, "--png", help="Also write a static figure (matplotlib) here."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Base model spec."),
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Oracle LoRA adapter: a directory, a hub id "
                                       "or 'published' (none: the untrained oracle)."),
    layer: int | None = count_option(None, "--layer", minimum=0,
                                     help="Absolute source layer (overrides --layer-percent)."),
    layers: str | None = typer.Option(None, "--layers", help="Several source layers at once (a multi-layer oracle), "
                                      "e.g. 7,15,22."),
    layer_percent: float | None = percent_option(None, "--layer-percent", help="Source layer as % of depth "
                                                 "(default 50, or the adapter's layers for a multi-layer oracle)."),
    raw: bool = typer.Option(False, "--raw", help="Feed the text as plain text, without the chat template."),
    all_tokens: bool = typer.Option(False, "--all-tokens", help="Also score and show the chat template's tokens."),
    max_new_tokens: int = count_option(16, "--max-new-tokens", help="Answer length for open questions."),
    batch_size: int = count_option(64, "--batch-size", help="Prompts per forward."),
    serve: bool = typer.Option(False, "--serve", help="Serve the page on localhost and print its URL."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (--serve)."),
    port: int = port_option(0, help="Port to serve on (--serve; 0-65535, 0: a free one)."),
    serve_seconds: float | None = positive_option(None, "--serve-seconds", help="Stop serving after this many "
                                                  "seconds (default: until Ctrl-C)."),
    device: str | None = device_option(),
    dtype: str | None = dtype_option(),
):
    """Colour every token of a text by the oracle's answer there (P(yes), or the answer itself) in one
    self-contained HTML page, one tab per question."""
    from ..cliargs import parse_ints
    from ..fsutil import check_writable_file
    from ..registry import resolve_adapter

    text = _read_context(context, file)
    choice_list = parse_choices(choices, "--choices")
    layer_list = parse_ints(layers, "--layers")
    check_writable_file(out, "--out")
    if png is not None:
        check_writable_file(png, "--png")
        require_module("matplotlib", "--png")
    resolve_adapter(model, adapter, name="--adapter")

    from transformers.utils import logging as hf_logging

    from ..oracle import Oracle
    from . import serve_page, serve_until_stopped, write_view

    hf_logging.disable_progress_bar()
    load = {k: v for k, v in dict(device=device, dtype=dtype).items() if v is not None}
    oracle = Oracle.from_pretrained(model, adapter, **load)
    view = write_view(oracle, text, list(question), out, png=png, kind=kind, choices=choice_list, layer=layer,
                      layers=layer_list, layer_percent=layer_percent, raw=raw, show_template=all_tokens,
                      max_new_tokens=max_new_tokens, batch_size=batch_size, model=model,
                      adapter=adapter or "none (untrained oracle)")
    kinds = ", ".join(q.kind for q in view.questions)
    typer.echo(f"wrote {out} ({len(view.tokens.shown)} tokens, {len(view.questions)} question(s): {kinds})")
    if png:
        typer.echo(f"wrote {png}")
    if serve:
        try:
            server = serve_page(Path(out).read_text(encoding="utf-8"), host=host, port=port)
        except OSError as e:
            raise ValueError(f"--host {host} --port {port}: cannot serve there ({e.strerror or e})") from None
        typer.echo(f"serving {server.url}  (Ctrl-C to stop)")
        sys.stdout.flush()
        serve_until_stopped(server, serve_seconds)


def register(app: typer.Typer) -> None:
    app.command("view")(command_boundary(view_command))
