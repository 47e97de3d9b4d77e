"""`ao.Client`: the Python client of `ao serve`, answering with the same `OracleAnswer` objects as `Oracle`."""

from __future__ import annotations

import base64
from typing import Any

from ..oracle import ContextActivations, OracleAnswer

_NEEDS = "ao.Client needs httpx: pip install 'activation-oracles[serve]'"


class RequestError(ValueError):
    """The server refused a request (4xx): `status`, the `field` it names, the `limit` it was over (413)."""

    def __init__(self, status: int, message: str, field: str | None = None, limit: int | None = None):
        super().__init__(f"{status}: {message}")
        self.status, self.field, self.limit = status, field, limit


def _positions(p):
    """Positions as JSON: a slice becomes 'A:B' (or 'A:B:C'), as `ao ask --positions` writes it."""
    if isinstance(p, slice):
        parts = [p.start, p.stop] + ([p.step] if p.step is not None else [])
        return ":".join("" if x is None else str(x) for x in parts)
    if isinstance(p, range):
        return list(p)
    return p


class Client:
    """`Client(url, token=None)`: `ask`, `score` and `collect` take `Oracle`'s arguments (as JSON: no
    tensors, adapters or callables) and return what `Oracle` returns; `info()` is the server's /v1/info."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 300.0):
        try:
            import httpx
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError(_NEEDS) from e
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict:
        if "positions" in body:
            body["positions"] = _positions(body["positions"])
        return self._json(self._http.post(path, json=body))

    @staticmethod
    def _json(r) -> dict:
        if r.status_code >= 500:
            r.raise_for_status()
        if r.status_code >= 400:
            try:
                err = r.json().get("error") or {}
            except ValueError:
                err = {"message": r.text[:500]}
            raise RequestError(r.status_code, err.get("message", r.reason_phrase), err.get("field"), err.get("limit"))
        return r.json()

    def info(self) -> dict:
        return self._json(self._http.get("/v1/info"))

    def health(self) -> bool:
        return self._json(self._http.get("/health")).get("status") == "ok"

    def ask(self, context, question, **options) -> list[OracleAnswer]:
        """`Oracle.ask` on the server (options: see docs/ask.md; `batch_size` is the server's)."""
        body = self._post("/v1/ask", {"context": context, "question": question, **options})
        return [OracleAnswer(**a) for a in body["answers"]]

    def score(self, context, question, choices=("Yes", "No"), **options) -> list[OracleAnswer]:
        """`Oracle.score` on the server."""
        body = self._post("/v1/score", {"context": context, "question": question, "choices": list(choices),
                                        **options})
        return [OracleAnswer(**a) for a in body["answers"]]

    def collect(self, context, **options) -> list[ContextActivations]:
        """`Oracle.collect` on the server (base weights): float32 vectors per layer."""
        import numpy as np
        import torch

        body = self._post("/v1/activations", {"context": context, "encoding": "base64", **options})
        out = []
        for c in body["contexts"]:
            layers = {}
            for layer, v in c["layers"].items():
                raw = np.frombuffer(base64.b64decode(v["data"]), dtype="<f4").reshape(v["shape"])
                layers[int(layer)] = torch.from_numpy(raw.copy())
            out.append(ContextActivations(c["context_index"], c["ids"], c["positions"], layers))
        return out
