"""`ao view`: write (and optionally serve) the token-by-token page of an oracle's answers."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import typer


def _fail(message: str):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _read_context(context: str | None, file: str | None) -> str:
    if (context is None) == (file is None):
        _fail("give the text with --context TEXT or --file F (exactly one of them)")
    if file is not None:
        p = Path(file).expanduser()
        if not p.is_file():
            _fail(f"--file {file!r}: no such file")
        try:
            context = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            _fail(f"--file {file!r} is not UTF-8 text ({e})")
        if not context.strip():
            _fail(f"--file {file!r} is empty: the viewer needs some text")
    elif not context.strip():
        _fail("--context is empty: give some text")
    return context


def view_command(
    context: str | None = typer.Option(None, "--context", "-c", help="Text fed to the target model."),
    file: str | None = typer.Option(None, "--file", "-f", help="Read the text from this UTF-8 file instead."),
    question: list[str] = typer.Option(..., "--question", "-q", help="Question for the oracle (repeatable: one tab "
                                       "per question)."),
    kind: str = typer.Option("auto", "--kind", help="auto | yesno | open. auto: yes/no when the question mentions "
                             "'yes or no' or its last sentence starts with an auxiliary verb (Is, Does, Can, ...)."),
    choices: str = typer.Option("Yes,No", "--choices", help="Answers of yes/no questions; the page colours "
                                "P(first)."),
    out: str = typer.Option("view.html", "--out", "-o", help="Where the HTML page goes."),
    png: str | None = typer.Option(None, "--png", help="Also write a static figure (matplotlib) here."),
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Base model spec."),
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Oracle LoRA adapter: a directory, a hub id "
                                       "or 'published' (none: the untrained oracle)."),
    layer: int | None = typer.Option(None, "--layer", help="Absolute source layer (overrides --layer-percent)."),
    layers: str | None = typer.Option(None, "--layers", help="Several source layers at once (a multi-layer oracle), "
                                      "e.g. 7,15,22."),
    layer_percent: float | None = typer.Option(None, "--layer-percent", help="Source layer as % of depth "
                                               "(default 50, or the adapter's layers for a multi-layer oracle)."),
    raw: bool = typer.Option(False, "--raw", help="Feed the text as plain text, without the chat template."),
    all_tokens: bool = typer.Option(False, "--all-tokens", help="Also score and show the chat template's tokens."),
    max_new_tokens: int = typer.Option(16, "--max-new-tokens", help="Answer length for open questions."),
    batch_size: int = typer.Option(64, "--batch-size", help="Prompts per forward."),
    serve: bool = typer.Option(False, "--serve", help="Serve the page on localhost and print its URL."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to serve on (--serve)."),
    port: int = typer.Option(0, "--port", help="Port to serve on (--serve; 0: a free one)."),
    serve_seconds: float | None = typer.Option(None, "--serve-seconds", help="Stop serving after this many seconds "
                                               "(default: until Ctrl-C)."),
    device: str | None = typer.Option(None, "--device"),
    dtype: str | None = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16"),
):
    """Colour every token of a text by the oracle's answer there (P(yes), or the answer itself) in one
    self-contained HTML page, one tab per question."""
    from transformers.utils import logging as hf_logging

    from ..cliargs import parse_ints
    from ..oracle import Oracle
    from ..registry import resolve_adapter
    from . import KINDS, serve_page, serve_until_stopped, write_view

    text = _read_context(context, file)
    if kind not in KINDS:
        _fail(f"--kind {kind!r}: use one of {', '.join(KINDS)}")
    choice_list = tuple(c.strip() for c in choices.split(",") if c.strip())
    if len(choice_list) < 2:
        _fail(f"--choices {choices!r}: give at least two comma-separated answers, e.g. Yes,No")
    layer_list = parse_ints(layers, "--layers")
    if png is not None and importlib.util.find_spec("matplotlib") is None:
        _fail("--png needs matplotlib: pip install 'activation-oracles[eval]' (or leave out --png)")
    try:
        resolve_adapter(model, adapter, name="--adapter")
    except ValueError as e:
        _fail(str(e))
    hf_logging.disable_progress_bar()
    load = {k: v for k, v in dict(device=device, dtype=dtype).items() if v is not None}
    try:
        oracle = Oracle.from_pretrained(model, adapter, **load)
        view = write_view(oracle, text, list(question), out, png=png, kind=kind, choices=choice_list, layer=layer,
                          layers=layer_list, layer_percent=layer_percent, raw=raw, show_template=all_tokens,
                          max_new_tokens=max_new_tokens, batch_size=batch_size, model=model,
                          adapter=adapter or "none (untrained oracle)")
    except (ValueError, FileNotFoundError, OSError, ImportError) as e:
        _fail(str(e))
    kinds = ", ".join(q.kind for q in view.questions)
    typer.echo(f"wrote {out} ({len(view.tokens.shown)} tokens, {len(view.questions)} question(s): {kinds})")
    if png:
        typer.echo(f"wrote {png}")
    if serve:
        server = serve_page(Path(out).read_text(encoding="utf-8"), host=host, port=port)
        typer.echo(f"serving {server.url}  (Ctrl-C to stop)")
        sys.stdout.flush()
        serve_until_stopped(server, serve_seconds)


def register(app: typer.Typer) -> None:
    app.command("view")(view_command)
