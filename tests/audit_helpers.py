"""Test helper (no tests here): tiny base models, an oracle trained with `ao train`, organisms built
with `ao organism build`, all through the command line, in a shared temporary directory."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import yaml
from typer.testing import CliRunner

from activation_oracles.cli import app

runner = CliRunner()


def ao(*args: str):
    """Run `ao ARGS` in-process; returns the click Result."""
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: str):
    r = ao(*args)
    assert r.exit_code == 0, (args, r.output[-3000:], r.exception)
    return r


def tiny_base(root: Path, tokenizer, name: str = "tinyA", seed: int = 0, arch: str = "llama") -> Path:
    from conftest import make_tiny_model

    d = root / name
    if not (d / "config.json").exists():
        make_tiny_model(arch, seed=seed).save_pretrained(d)
        tokenizer.save_pretrained(d)
    return d


def trained_oracle(root: Path, tokenizer, base: Path, steps: int = 3) -> Path:
    """An oracle adapter made by `ao train` on a toy mixture (a few steps)."""
    from test_train_helpers import make_dataset

    mix = make_dataset(tokenizer, root / "mix")
    cfg = {"model": {"spec": str(base)}, "data": {}, "optim": {"lr": 3e-3, "warmup_ratio": 0.1},
           "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
           "train": {"batch_size": 4, "max_steps": steps, "seed": 1},
           "eval": {"every": 0, "final": False}, "output": {"dir": str(root / "run"), "save_every": 0, "progress": False}}
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    ok("train", root / "tiny.yaml", "--data", mix)
    return root / "run" / "adapter"


def build(root: Path, base: Path, kind: str, *opts: str, name: str | None = None, steps: int = 2) -> Path:
    out = root / (name or f"org_{kind}")
    if not (out / "organism.json").exists():
        ok("organism", "build", kind, "--base", base, "--out", out, "--max-steps", steps, *opts)
    return out


def results(d: Path) -> dict:
    return json.loads((d / "results.json").read_text())


def answers(d: Path) -> list[dict]:
    return [json.loads(line) for line in (d / "answers.jsonl").read_text().splitlines()]


@contextlib.contextmanager
def judge_stub():
    """A local OpenAI-compatible /v1/chat/completions that rates 7 when the request mentions a pirate,
    else replies without a number; yields (base url, [(path, auth header, body), ...])."""
    seen = []

    class Stub(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append((self.path, self.headers.get("Authorization"), body))
            text = "7" if "pirate" in body["messages"][0]["content"] else "x"
            data = json.dumps({"choices": [{"message": {"content": text}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1", seen
    finally:
        server.shutdown()
