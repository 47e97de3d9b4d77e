"""Load on `ao serve`: N concurrent clients asking yes/no questions (/v1/score) about different texts for T
seconds, against the same queries sent one at a time; every answer checked against `Oracle.score` alone.

    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py --clients 32 --seconds 60
    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py --clients 32 --seconds 120 --malformed 0.05
    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py --smoke      # seconds: for the test suite

It loads the oracle here to compute the reference answers (`Oracle.score`, one query per call), starts
`ao serve` on 127.0.0.1 in a child process (or uses --url), sends --texts distinct queries one at a time
(the sequential figure), then runs --clients closed-loop clients for --seconds: each sends its next query
as soon as its previous one is answered; --malformed is the share of requests that are deliberately bad
(each must get its 4xx naming the right field). Nothing leaves 127.0.0.1; the load stops by itself (no new
request after --seconds, each request bounded by --timeout).

Prints one JSON object as its last line: requests/s and p50/p99 latency of both runs, the speed-up, the
counts of wrong answers and lost requests (both must be 0), the server's batches and its RSS (MB) at the
start and end of the load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import subprocess
import sys
import time

SUBJECTS = ("The film", "This hotel", "The new phone", "Our trip", "The concert", "This book", "The meal",
            "The update", "The class", "The game", "The museum", "The flight", "The coffee", "This album",
            "The workshop", "The apartment")
VERDICTS = ("was wonderful and I would go again", "was a complete waste of money", "was fine, nothing special",
            "made me smile all day", "broke after two days", "was far better than expected",
            "was boring from start to finish", "left everyone in a great mood")
QUESTION = "Is the sentiment of this text positive?"
# (how a malformed request is broken, the status and field it must be answered with)
MALFORMED = (
    ({"positions": [999]}, 422, "positions"),
    ({"layer": 99}, 422, "layer"),
    ({"question": None}, 422, "question"),
    ({"target_adapter": "/etc"}, 422, "target_adapter"),
    ({"question": [QUESTION] * 17}, 413, "question"),
    ("not json", 422, "body"),
)
TOL = 1e-4


def texts(n: int) -> list[str]:
    out = [f"{s} {v}." for v in VERDICTS for s in SUBJECTS]
    if n > len(out):
        out += [f"{t} (review {i})" for i, t in enumerate(out * (n // len(out)))]
    return out[:n]


def reference(model: str, adapter: str | None, queries: list[dict]) -> list[dict]:
    import activation_oracles as ao

    oracle = ao.Oracle.from_pretrained(model, adapter)
    out = []
    for q in queries:
        [a] = oracle.score(q["context"], q["question"], positions=q["positions"])
        out.append({"text": a.text, "probs": a.probs, "choice_mass": a.choice_mass})
    return out


def start_server(args) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "activation_oracles.cli", "serve", "--port", "0", "--model", args.model,
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    if args.adapter:
        cmd += ["--adapter", args.adapter]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    m = re.match(r"serving (\S+)", line)
    if not m:
        proc.kill()
        sys.exit(f"ao serve did not start: {line!r}")
    return proc, m.group(1)


def correct(body: dict, ref: dict) -> bool:
    [a] = body["answers"]
    return (a["text"] == ref["text"] and a["probs"].keys() == ref["probs"].keys()
            and max(abs(a["probs"][k] - ref["probs"][k]) for k in ref["probs"]) <= TOL
            and abs(a["choice_mass"] - ref["choice_mass"]) <= TOL)


class Tally:
    def __init__(self):
        self.latencies, self.ok, self.wrong, self.lost, self.malformed, self.malformed_ok = [], 0, 0, 0, 0, 0
        self.max_diff = 0.0

    def summary(self, seconds: float) -> dict:
        lat = sorted(self.latencies)

        def pct(p):
            return round(1000 * lat[min(len(lat) - 1, int(p * len(lat)))], 1) if lat else None

        return {"requests": len(lat), "rps": round(len(lat) / seconds, 3), "p50_ms": pct(0.5), "p99_ms": pct(0.99),
                "ok": self.ok, "wrong": self.wrong, "lost": self.lost, "malformed": self.malformed,
                "malformed_ok": self.malformed_ok}


async def one(http, tally: Tally, query: dict | None, ref: dict | None, bad, timeout: float) -> None:
    """Send one request (a good query, or a malformed one when `bad` is given) and check its answer."""
    import httpx

    t = time.perf_counter()
    try:
        if bad is not None:
            change, status, field = bad
            if change == "not json":
                r = await http.post("v1/score", content=b"{not json", headers={"Content-Type": "application/json"},
                                    timeout=timeout)
            else:
                body = {"context": query["context"], "question": QUESTION, **change}
                r = await http.post("v1/score", json={k: v for k, v in body.items() if v is not None},
                                    timeout=timeout)
            tally.malformed += 1
            if r.status_code == status and r.json()["error"]["field"] == field:
                tally.malformed_ok += 1
            else:
                tally.wrong += 1
        else:
            r = await http.post("v1/score", json=query, timeout=timeout)
            if r.status_code != 200:
                tally.lost += 1
            elif correct(r.json(), ref):
                tally.ok += 1
                a = r.json()["answers"][0]["probs"]
                tally.max_diff = max(tally.max_diff, max(abs(a[k] - ref["probs"][k]) for k in a))
            else:
                tally.wrong += 1
    except (httpx.HTTPError, ValueError, KeyError):
        tally.lost += 1
    tally.latencies.append(time.perf_counter() - t)


async def sequential(url: str, queries, refs, timeout: float) -> tuple[Tally, float]:
    import httpx

    tally = Tally()
    async with httpx.AsyncClient(base_url=url) as http:
        await one(http, Tally(), queries[0], refs[0], None, timeout)  # warm-up, not counted
        start = time.perf_counter()
        for q, ref in zip(queries, refs):
            await one(http, tally, q, ref, None, timeout)
    return tally, time.perf_counter() - start


async def load(url: str, queries, refs, clients: int, seconds: float, malformed: float, timeout: float,
               seed: int) -> tuple[Tally, float]:
    import httpx

    tally, rng = Tally(), random.Random(seed)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits) as http:
        start = time.perf_counter()
        stop = start + seconds

        async def client(c: int):
            j = 0
            while time.perf_counter() < stop:
                k = (c * 7 + j) % len(queries)  # each client walks the texts from its own offset
                bad = MALFORMED[rng.randrange(len(MALFORMED))] if rng.random() < malformed else None
                await one(http, tally, queries[k], refs[k], bad, timeout)
                j += 1

        await asyncio.gather(*(client(c) for c in range(clients)))
    return tally, time.perf_counter() - start


def info(url: str) -> dict:
    import httpx

    return httpx.get(url + "v1/info", timeout=60).json()


def run(args) -> dict:
    queries = [{"context": t, "question": QUESTION, "positions": args.positions} for t in texts(args.texts)]
    refs = reference(args.model, args.adapter, queries)
    proc, url = start_server(args) if args.url is None else (None, args.url.rstrip("/") + "/")
    try:
        seq, seq_s = asyncio.run(sequential(url, queries, refs, args.timeout))
        before = info(url)
        conc, conc_s = asyncio.run(load(url, queries, refs, args.clients, args.seconds, args.malformed,
                                        args.timeout, args.seed))
        after = info(url)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    s, c = seq.summary(seq_s), conc.summary(conc_s)
    answered = c["ok"] + c["wrong"] + c["malformed_ok"]
    batches = after["counters"]["batches"] - before["counters"]["batches"]
    return {"clients": args.clients, "seconds": round(conc_s, 1), "texts": len(queries), "positions": args.positions,
            "max_wait_ms": args.max_wait_ms, "max_batch": args.max_batch,
            "rps": c["rps"], "p50_ms": c["p50_ms"], "p99_ms": c["p99_ms"],
            "sequential_rps": s["rps"], "sequential_p50_ms": s["p50_ms"], "sequential_p99_ms": s["p99_ms"],
            "speedup": round(c["rps"] / s["rps"], 2) if s["rps"] else None,
            "requests": c["requests"], "answered": answered, "wrong": c["wrong"] + s["wrong"],
            "lost": c["lost"] + s["lost"], "malformed": c["malformed"], "malformed_ok": c["malformed_ok"],
            "max_prob_diff": max(seq.max_diff, conc.max_diff),
            "batches": batches, "mean_batch": round((after["counters"]["requests"] - before["counters"]["requests"])
                                                    / max(batches, 1), 2),
            "rss_start_mb": before["rss_mb"], "rss_end_mb": after["rss_mb"],
            "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--texts", type=int, default=64, help="distinct texts (also the sequential run's requests)")
    ap.add_argument("--positions", default="all", help="positions of every query ('all', 'last', ...)")
    ap.add_argument("--malformed", type=float, default=0.0, help="share of deliberately bad requests")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--url", default=None, help="a running server instead of starting one (same model!)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="4 clients, 2 s, 4 texts, half of the requests malformed: "
                    "checks the script runs, measures nothing")
    args = ap.parse_args(argv)
    if args.smoke:
        args.clients, args.seconds, args.texts, args.malformed, args.positions = 4, 2.0, 4, 0.5, "last"
    out = run(args)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
