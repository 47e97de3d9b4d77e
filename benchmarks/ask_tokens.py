"""`mode="tokens"` over N positions in one batched generate vs N separate single-position queries.

    .venv/bin/python benchmarks/ask_tokens.py [--positions 100] [--max-new-tokens 8]
    .venv/bin/python benchmarks/ask_tokens.py --smoke     # 3 positions, 2 new tokens (the test suite's)

Prints one JSON object as its last line: batched_s, separate_s, speedup.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import activation_oracles as ao

TEXT = (
    "The committee met on Tuesday to review the budget for the new library. After a long discussion about "
    "maintenance costs, staffing and the opening hours, the members agreed to fund the project for two years, "
    "provided that the city council matches the contribution and that a progress report is published every "
    "six months so residents can follow how the money is spent. Several speakers from the public asked for "
    "longer weekend hours, a quiet reading room for students preparing for exams, and a small workshop where "
    "children could learn to repair bicycles, radios and other everyday machines with volunteers from the town."
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--positions", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="3 positions, 2 new tokens")
    args = ap.parse_args()
    if args.smoke:
        args.positions, args.max_new_tokens = 3, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok = ao.load_model("smollm2-135m", device="cpu")
    oracle = ao.Oracle(model, tok)
    n = args.positions
    kw = dict(question="What is this token about?", max_new_tokens=args.max_new_tokens, raw=True)
    ids = tok(TEXT)["input_ids"]
    assert len(ids) >= n, f"text has {len(ids)} tokens, fewer than --positions {n}"
    oracle.ask(TEXT, positions=-1, **kw)  # warm-up

    t = time.perf_counter()
    batched = oracle.ask(TEXT, positions=slice(-n, None), mode="tokens", **kw)
    batched_s = time.perf_counter() - t

    t = time.perf_counter()
    separate = [oracle.ask(TEXT, positions=p, **kw)[0] for p in range(len(ids) - n, len(ids))]
    separate_s = time.perf_counter() - t

    agree = sum(a.text == b.text for a, b in zip(batched, separate)) / n
    print(json.dumps({"positions": n, "max_new_tokens": args.max_new_tokens, "batched_s": round(batched_s, 2),
                      "separate_s": round(separate_s, 2), "speedup": round(separate_s / batched_s, 2),
                      "same_answers": round(agree, 3)}))


if __name__ == "__main__":
    main()
