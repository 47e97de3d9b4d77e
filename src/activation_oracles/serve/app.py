"""The ASGI app of `ao serve` (FastAPI): routes, request checks, bearer-token auth, error bodies, and a
helper that runs it on uvicorn in a background thread (tests, benchmarks)."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import os
import re
import socket
import threading
import time
from contextlib import asynccontextmanager
from importlib.resources import files

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse

from .. import __version__
from ..oracle import parse_positions
from ..view import compute_view, context_tokens, render_fragment
from .batcher import Batcher
from .limits import LimitError, Limits
from .schema import (ActivationsRequest, ActivationsResponse, Answers, AskRequest, ScoreRequest, ViewRequest,
                     ViewResponse)

log = logging.getLogger("activation_oracles.serve")
_HERE = files(__package__)


class HTTPError(Exception):
    """An error answered as {"error": {"status", "field", "message", ...}} with this status."""

    def __init__(self, status: int, message: str, field: str | None = None, **extra):
        super().__init__(message)
        self.status, self.field, self.extra = status, field, extra

    def response(self) -> JSONResponse:
        body = {"status": self.status, "field": self.field, "message": str(self), **self.extra}
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        return JSONResponse({"error": body}, status_code=self.status, headers=headers)


def _field_of(message: str, fields) -> str | None:
    """The request field an `Oracle` error is about: its messages start with the argument's name
    ("positions: 9 is out of range ...", "layer=40 is out of range ...", "choice 'x' has no tokens")."""
    m = re.match(r"[A-Za-z_]+", message)
    word = m.group(0) if m else ""
    word = {"choice": "choices", "percent": "layer_percent"}.get(word, word)
    return word if word in fields else None


def _as_http_error(e: BaseException, fields) -> HTTPError:
    if isinstance(e, LimitError):
        return HTTPError(413, str(e), e.field, limit=e.limit, value=e.value)
    if isinstance(e, (ValueError, TypeError)):  # how Oracle refuses its arguments
        return HTTPError(422, str(e), _field_of(str(e), fields))
    log.exception("request failed", exc_info=e)
    return HTTPError(500, f"internal error ({type(e).__name__}); the server goes on")


class BodyLimit:
    """Refuse request bodies over `limit` bytes (413) before they are parsed, announced or not."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send, int(declared))
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.limit:
                return await self._refuse(scope, receive, send, size)
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send, size: int):
        err = HTTPError(413, f"body: {size} bytes is over this server's limit of {self.limit}", "body",
                        limit=self.limit, value=size)
        await err.response()(scope, receive, send)


def _vectors(t, encoding: str) -> dict:
    t = t.detach().float().cpu().contiguous()
    if encoding == "list":
        return {"shape": list(t.shape), "dtype": "float32", "data": t.tolist()}
    data = base64.b64encode(t.numpy().astype("<f4", copy=False).tobytes()).decode("ascii")
    return {"shape": list(t.shape), "dtype": "float32", "data": data}


def _call(req, exclude=()) -> dict:
    """The request as `Oracle` keyword arguments: positions given as text parsed as `ao ask --positions`."""
    call = req.model_dump(exclude=set(exclude))
    pos = call.get("positions")
    if isinstance(pos, str) and pos not in ("all", "last"):
        try:
            call["positions"] = parse_positions(pos)
        except ValueError:
            raise HTTPError(422, f"positions {pos!r}: use 'all', 'last', 'A:B', 'N,M,...', an index or a list",
                            "positions") from None
    if call.get("layer") is not None and call.get("layers") is not None:
        raise HTTPError(422, "give layer (one source layer) or layers (several), not both", "layers")
    return call


def create_app(oracle, *, limits: Limits | None = None, max_batch: int = 32, max_wait_ms: float = 5.0,
               batch_size: int = 64, token: str | None = None, model: str | None = None,
               adapter: str | None = None) -> FastAPI:
    """The app serving `oracle`. `token`: require `Authorization: Bearer <token>` on /v1/ (else open);
    `model`/`adapter`: the names /v1/info and the live page show."""
    limits = limits or Limits()
    model = model or str(getattr(oracle.model.config, "name_or_path", "") or type(oracle.model).__name__)
    adapter = adapter or ("oracle adapter" if oracle.has_oracle_adapter else "none (untrained oracle)")
    default_layers = oracle._source_layers(None, None, None)
    batcher = Batcher(oracle, max_batch=max_batch, max_wait_ms=max_wait_ms, batch_size=batch_size,
                      check=limits.check_plan, view=_view_job(oracle, limits, batch_size, model, adapter))

    @asynccontextmanager
    async def lifespan(app):
        yield
        await asyncio.get_running_loop().run_in_executor(None, batcher.close)

    app = FastAPI(title="activation-oracles", version=__version__, lifespan=lifespan,
                  description="One loaded activation oracle answering many clients; concurrent requests share "
                              "forwards. See docs/serve.md.")
    app.state.batcher, app.state.limits = batcher, limits
    app.add_middleware(BodyLimit, limit=limits.body_bytes)
    _error_handlers(app)

    async def run(kind: str, call: dict, fields):
        try:
            return await asyncio.wrap_future(batcher.submit(kind, call))
        except Exception as e:  # noqa: BLE001 - mapped to this request's status
            raise _as_http_error(e, fields) from None

    def checked(req, exclude=()) -> dict:
        call = _call(req, exclude)
        try:
            limits.check_request(call)
        except LimitError as e:
            raise _as_http_error(e, ()) from None
        return call

    v1 = [Depends(_bearer_auth(token))]

    @app.post("/v1/ask", response_model=Answers, dependencies=v1, summary="Oracle.ask")
    async def ask(req: AskRequest):
        answers = await run("ask", checked(req), AskRequest.model_fields)
        return {"answers": [a.to_dict() for a in answers]}

    @app.post("/v1/score", response_model=Answers, dependencies=v1, summary="Oracle.score")
    async def score(req: ScoreRequest):
        answers = await run("score", checked(req), ScoreRequest.model_fields)
        return {"answers": [a.to_dict() for a in answers]}

    @app.post("/v1/activations", response_model=ActivationsResponse, dependencies=v1, summary="Oracle.collect")
    async def activations(req: ActivationsRequest):
        out = await run("activations", checked(req, exclude=("encoding",)), ActivationsRequest.model_fields)
        return {"contexts": [{"context_index": c.context_index, "ids": c.ids, "positions": c.positions,
                              "layers": {x: _vectors(t, req.encoding) for x, t in c.layers.items()}} for c in out]}

    @app.post("/v1/view", response_model=ViewResponse, dependencies=v1, summary="ao view on one text (the live page)")
    async def view(req: ViewRequest):
        return await run("view", checked(req), ViewRequest.model_fields)

    @app.get("/v1/info", dependencies=v1, summary="the model, adapter, layers, limits and counters")
    async def info():
        return {"version": __version__, "model": model, "adapter": adapter, "ao_config": oracle.config,
                "num_layers": oracle.num_layers, "hook_layer": oracle.hook_layer,
                "default_layers": default_layers, "limits": limits.to_dict(),
                "batching": {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "batch_size": batch_size},
                "counters": batcher.snapshot(), "rss_mb": rss_mb(), "auth": bool(token)}

    @app.get("/health", summary="liveness (no auth)")
    async def health():
        return {"status": "ok"}

    page = _live_page()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def live_page():
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    return app


def _view_job(oracle, limits: Limits, batch_size: int, model: str, adapter: str):
    """The batcher's "view" job: `ao view` on one text, within the limits, as the live page's fragment."""

    def view_job(call: dict) -> dict:
        questions = [call["question"]] if isinstance(call["question"], str) else call["question"]
        toks = context_tokens(oracle.tokenizer, call["context"], raw=call["raw"])
        if len(toks.ids) > limits.context_tokens:
            raise LimitError("context", limits.context_tokens, len(toks.ids), "context tokens")
        if len(toks.shown) * len(questions) > limits.positions:
            raise LimitError("positions", limits.positions, len(toks.shown) * len(questions),
                             "positions read over all queries (tokens x questions)")
        v = compute_view(oracle, call["context"], questions, kind=call["kind"], choices=tuple(call["choices"]),
                         layer=call["layer"], layer_percent=call["layer_percent"], raw=call["raw"],
                         max_new_tokens=call["max_new_tokens"], batch_size=batch_size, model=model, adapter=adapter)
        return {"html": render_fragment(v), "tokens": len(v.tokens.shown), "kinds": [q.kind for q in v.questions]}

    return view_job


def _error_handlers(app: FastAPI) -> None:
    """Every error as the API's JSON error (status, message, field); invalid bodies name their first field."""

    @app.exception_handler(HTTPError)
    async def _http_error(request, e: HTTPError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, e: RequestValidationError):
        errors = e.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        loc = [str(x) for x in first.get("loc", ())][1:]  # after "body"
        # a body that is not JSON at all is located by character offset: the field is the body
        field = "body" if first.get("type") == "json_invalid" or not loc else loc[0]
        msg = f"{'.'.join(loc) if field != 'body' else 'body'}: {first.get('msg')}"
        detail = [{"loc": list(x.get("loc", ())), "msg": x.get("msg"), "type": x.get("type")} for x in errors[:20]]
        return HTTPError(422, msg, field, errors=json.loads(json.dumps(detail, default=str))).response()


def _bearer_auth(token: str | None):
    """The /v1/ dependency: with a token, `Authorization: Bearer <token>` or 401; without, open."""
    expected = token.encode("utf-8") if token else None

    async def auth(request: Request):
        if expected is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        # compare_digest: the time taken does not tell how much of the token was right
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode("utf-8"), expected):
            raise HTTPError(401, "missing or wrong bearer token (send 'Authorization: Bearer <token>')",
                            "Authorization")

    return auth


def _live_page() -> str:
    """live.html with the viewer's CSS and JS and the live page's script inlined (one self-contained page)."""
    page = (_HERE / "live.html").read_text(encoding="utf-8")
    view_dir = files("activation_oracles.view")
    return (page.replace("/*VIEW_CSS*/", (view_dir / "page.css").read_text(encoding="utf-8"))
                .replace("/*VIEW_JS*/", (view_dir / "page.js").read_text(encoding="utf-8"))
                .replace("/*LIVE_JS*/", (_HERE / "live.js").read_text(encoding="utf-8"))
                .replace("/*VERSION*/", __version__))


def rss_mb() -> float:
    """This process's resident memory now, in MB (Linux; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 1e6, 1)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on (host, port); port 0 picks a free one. OSError when it is taken."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def uvicorn_server(app, log_level: str = "warning"):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_keep_alive=30))


class RunningServer:
    """An app on uvicorn in a background thread, on a socket bound before it starts (port 0: a free one)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        self.sock = bind(host, port)
        self.url = url_of(self.sock)
        self.server = uvicorn_server(app, log_level)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="ao-serve-http")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
