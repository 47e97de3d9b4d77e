"""`Oracle.score` over N positions of one context (`mode="tokens"`, one call) vs N separate calls.

    .venv/bin/python benchmarks/score_tokens.py [--positions 100] [--batch-size 64]
    .venv/bin/python benchmarks/score_tokens.py --smoke     # seconds: 4 positions, for the test suite

Both sides answer the same Yes/No question with the embedded SmolLM2-135M on CPU; one call reads the
context once and scores the positions in forwards of --batch-size prompts, the separate calls each read
the context and score one prompt. Prints one JSON object as its last line: batched_s, separate_s,
speedup, and the largest difference between the two sides' probabilities (they must agree).
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
QUESTION = "Answer with 'Yes' or 'No' only. Is this text about money?"


def run(positions: int, batch_size: int) -> dict:
    model, tok = ao.load_model("smollm2-135m", device="cpu")
    oracle = ao.Oracle(model, tok)
    n = positions
    ids = tok(TEXT)["input_ids"]
    assert len(ids) >= n, f"text has {len(ids)} tokens, fewer than --positions {n}"
    kw = dict(raw=True, batch_size=batch_size)
    oracle.score(TEXT, QUESTION, positions=-1, **kw)  # warm-up

    t = time.perf_counter()
    batched = oracle.score(TEXT, QUESTION, positions=slice(-n, None), mode="tokens", **kw)
    batched_s = time.perf_counter() - t

    t = time.perf_counter()
    separate = [oracle.score(TEXT, QUESTION, positions=p, **kw)[0] for p in range(len(ids) - n, len(ids))]
    separate_s = time.perf_counter() - t

    diff = max(abs(a.probs[c] - b.probs[c]) for a, b in zip(batched, separate) for c in a.probs)
    return {"positions": n, "batch_size": batch_size, "threads": torch.get_num_threads(),
            "batched_s": round(batched_s, 3), "separate_s": round(separate_s, 3),
            "speedup": round(separate_s / batched_s, 2), "max_prob_diff": diff}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--positions", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="4 positions: checks the script runs, measures nothing")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = run(4 if args.smoke else args.positions, args.batch_size)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
