"""`ao serve`: load one oracle and answer many clients over HTTP (docs/serve.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import typer

EXTRA = "pip install 'activation-oracles[serve]'"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _fail(message: str):
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _read_token(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        _fail(f"--token-file {path!r}: no such file")
    try:
        token = p.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"--token-file {path!r} cannot be read as text ({e})")
    if not token:
        _fail(f"--token-file {path!r} is empty: put the token (one line) in it")
    if any(c.isspace() for c in token):
        _fail(f"--token-file {path!r}: the token must be one line without spaces")
    return token


def serve_command(
    model: str = typer.Option("smollm2-135m", "--model", "-m", help="Base model spec."),
    adapter: str | None = typer.Option(None, "--adapter", "-a", help="Oracle LoRA adapter: a directory, a hub id "
                                       "or 'published' (none: the untrained oracle)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: a free one, printed)."),
    token_file: str | None = typer.Option(None, "--token-file", help="Require 'Authorization: Bearer <token>' on "
                                          "/v1/ with the token in this file."),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="Most requests answered together."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0, max=10_000, help="How long the first request "
                                      "of a batch waits for others (ms)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Prompts (and contexts) per forward."),
    max_context_tokens: int = typer.Option(2048, "--max-context-tokens", min=1, help="Tokens of a request's "
                                           "contexts, all together."),
    max_contexts: int = typer.Option(16, "--max-contexts", min=1, help="Contexts in one request."),
    max_positions: int = typer.Option(1024, "--max-positions", min=1, help="Positions a request reads over all "
                                      "its queries."),
    max_questions: int = typer.Option(16, "--max-questions", min=1, help="Questions in one request."),
    max_question_chars: int = typer.Option(2000, "--max-question-chars", min=1, help="Characters of a question."),
    max_choices: int = typer.Option(16, "--max-choices", min=1, help="Choices of a score request."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1, help="Largest max_new_tokens of a request."),
    max_samples: int = typer.Option(8, "--max-samples", min=1, help="Largest num_samples of a request."),
    max_body_kb: int = typer.Option(1024, "--max-body-kb", min=1, help="Largest request body (KiB)."),
    device: str | None = typer.Option(None, "--device"),
    dtype: str | None = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16"),
):
    """Serve one oracle over HTTP: /v1/ask, /v1/score, /v1/activations, /v1/info, the live viewer at /,
    the API's docs at /docs. Concurrent requests are answered in shared forwards."""
    missing = [m for m in ("fastapi", "uvicorn", "httpx") if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"ao serve needs {', '.join(missing)}: {EXTRA}")
    token = _read_token(token_file) if token_file is not None else None
    from ..registry import resolve_adapter
    from .limits import Limits

    try:
        resolve_adapter(model, adapter, name="--adapter")
    except ValueError as e:
        _fail(str(e))
    limits = Limits(context_tokens=max_context_tokens, contexts=max_contexts, positions=max_positions,
                    questions=max_questions, question_chars=max_question_chars, choices=max_choices,
                    max_new_tokens=max_new_tokens, samples=max_samples, body_bytes=max_body_kb * 1024)
    from .app import bind, url_of

    try:
        sock = bind(host, port)
    except OSError as e:
        _fail(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})")
    if host not in LOOPBACK and token is None:
        typer.echo(f"warning: listening on {host} without --token-file: anyone who can reach this port can use "
                   "the model", err=True)

    from transformers.utils import logging as hf_logging

    from ..oracle import Oracle
    from .app import create_app, uvicorn_server

    hf_logging.disable_progress_bar()
    load = {k: v for k, v in dict(device=device, dtype=dtype).items() if v is not None}
    try:
        oracle = Oracle.from_pretrained(model, adapter, **load)
    except (ValueError, FileNotFoundError, OSError, ImportError) as e:
        sock.close()
        _fail(str(e))
    app = create_app(oracle, limits=limits, max_batch=max_batch, max_wait_ms=max_wait_ms, batch_size=batch_size,
                     token=token, model=model, adapter=adapter or "none (untrained oracle)")
    url = url_of(sock)
    typer.echo(f"serving {url}  (API docs: {url}docs; Ctrl-C to stop)")
    sys.stdout.flush()
    uvicorn_server(app, log_level="warning").run(sockets=[sock])


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_command)
