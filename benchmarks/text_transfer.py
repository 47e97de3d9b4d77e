"""Does the target model itself transfer yes/no question reading to tasks it never trained on, when it
reads the text? The ceiling for `ao demo`'s part 2 (held-out tasks), without activations.

    PYTHONPATH=src .venv/bin/python benchmarks/text_transfer.py [--steps 400] [--lr 5e-4]
    PYTHONPATH=src .venv/bin/python benchmarks/text_transfer.py --smoke    # tiny model, 2 steps

The model (SmolLM2-135M-Instruct unless --model) reads `"Text: {sentence}\\n{question}"` in a user turn and
answers Yes or No (forced choice at the first answer token, as the oracle's evaluation scores). Built-in
tasks; every class asked, half the answers Yes. Scored before and after a LoRA (r16, all linear, linear
warm-up and decay) is trained on the demo's four tasks (--train-tasks), on one fifth of their sentences held
out and on the eval-only tasks (--heldout-tasks), which it never sees. Per task: accuracy, the share of
"Yes" answers, and ROC AUC of P(Yes) (whether the answer carries signal even where a bias toward one answer
hides it from accuracy). The last line printed is one JSON object. `--save DIR` keeps the trained LoRA
(PEFT format, loadable as a run's `lora.init_from` when rank and target modules match).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]

from activation_oracles.data.classification import load_task  # noqa: E402
from activation_oracles.eval.classification import answers, ask_about_text  # noqa: E402
from activation_oracles.models import DEFAULT_MODEL, default_device, load_model  # noqa: E402
from activation_oracles.steering import choice_token_ids, left_pad  # noqa: E402
from activation_oracles.train.step import make_schedule  # noqa: E402

TRAIN = "sst2,md_gender,ner,tense"
HELDOUT = "ag_news,language_identification,singular_plural"


def parse():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model spec (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--train-tasks", default=TRAIN)
    ap.add_argument("--heldout-tasks", default=HELDOUT)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--per-task", type=int, default=120, help="questions scored per task")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when torch sees a GPU)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None, help="save the trained LoRA here (PEFT format: a run's lora.init_from)")
    ap.add_argument("--load", default=None, help="score this saved LoRA (a --save folder) instead of training one")
    ap.add_argument("--demo-groups", type=int, default=0, metavar="N",
                    help="also score N questions per group of `ao demo`'s held-out tasks (single token, window, whole "
                         "prompt: drawn as the oracle's are, its input decoded to text)")
    ap.add_argument("--preset", default="cpu-smollm2-long", help="whose built-in mixture --demo-groups reads")
    ap.add_argument("--smoke", action="store_true", help="tiny random model, 2 steps, 8 questions per task")
    return ap.parse_args()


def held_out(text: str) -> bool:
    return zlib.crc32(text.encode()) % 5 == 0


def ask(task, items, n: int, rng: random.Random) -> list[tuple[str, str, int]]:
    """n (sentence, question, yes) with every class asked and n // 2 answers Yes."""
    classes, rows, n_yes = sorted(task.templates), [], 0
    while len(rows) < n:
        c = rng.choice(classes)
        text, ys = rng.choice(items)
        yes = c in ys
        if (yes and n_yes >= n // 2) or (not yes and len(rows) - n_yes >= n - n // 2):
            continue
        n_yes += yes
        rows.append((text, rng.choice(task.templates[c]), int(yes)))
    return rows


@torch.no_grad()
def score(model, tok, rows) -> dict:
    """Forced-choice Yes vs No, as `ao eval`'s `text` column asks (the same prompt and scoring)."""
    from sklearn.metrics import roc_auc_score

    got = answers(model, tok, [{"target": "Yes" if y else "No"} for _, _, y in rows], None, hook_layer=1,
                  adapter=True, steer=False, batch_size=16, prompts=[ask_about_text(tok, x, q) for x, q, _ in rows])
    y, p = np.array(got.yes), np.array(got.p_yes)
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    return {"acc": float(((p >= 0.5) == y).mean()), "yes_rate": float((p >= 0.5).mean()), "auc": auc}


def report(model, tok, evalsets, train_tasks, tag) -> dict:
    model.eval()
    out = {name: score(model, tok, rows) for name, rows in evalsets.items()}
    for name, r in out.items():
        print(f"{tag:5s} {name:24s} acc {r['acc']:.3f}  yes {r['yes_rate']:.2f}  auc {r['auc']:.3f}", flush=True)
    mean = lambda names: float(np.mean([out[n]["acc"] for n in names]))  # noqa: E731
    out["mean_trained"] = mean([n for n in evalsets if n in train_tasks])
    out["mean_heldout"] = mean([n for n in evalsets if n not in train_tasks])
    print(f"{tag:5s} mean: trained tasks {out['mean_trained']:.3f}, held-out tasks {out['mean_heldout']:.3f}", flush=True)
    return out


def demo_group_rows(preset: str, tasks: list[str], n: int, model: str | None) -> dict[tuple[str, str], list[dict]]:
    """`ao demo`'s held-out questions per (task, input kind), drawn from its mixture as its evaluation draws them
    (with n=60, the first 30 of each group are the ones its report scores), the mixture built for `model`'s
    tokenizer (default: the preset's model)."""
    from activation_oracles.data.mixture import build_mixture
    from activation_oracles.demo import demo_mixture
    from activation_oracles.eval.classification import group_rows
    from activation_oracles.train.config import load_config

    cfg = load_config(preset, {})
    test = build_mixture(demo_mixture(cfg, model or cfg.model.spec, None))["test"]
    return {k: [test[i] for i in idx] for k, idx in group_rows(test, tasks=tasks, max_per_group=n).items()}


def report_groups(model, tok, groups, tag) -> dict:
    """Forced choice on the demo's held-out groups, read as text (eval.classification.text_prompt)."""
    from activation_oracles.eval.classification import text_prompt

    model.eval()
    out = {}
    for (name, variant), rows in groups.items():
        got = answers(model, tok, rows, None, hook_layer=1, adapter=True, steer=False, batch_size=16,
                      prompts=[text_prompt(tok, r) for r in rows])
        out[f"{name}/{variant}"] = got.acc
        print(f"{tag:5s} {name:24s} {variant:6s} acc {got.acc:.3f}  yes {np.mean(np.array(got.p_yes) >= 0.5):.2f}"
              f"  (n={got.n})", flush=True)
    out["mean"] = float(np.mean(list(out.values())))
    print(f"{tag:5s} mean over the demo's held-out groups {out['mean']:.3f}", flush=True)
    return out


def train(model, tok, tasks, train_tasks, args):
    """The model wrapped in a fresh LoRA and trained on the train tasks' sentences; and its losses."""
    from peft import LoraConfig, get_peft_model

    rng = random.Random(args.seed + 1)
    pool = {n: [it for it in tasks[n].items if not held_out(it[0])] for n in train_tasks}
    yes_id, no_id = choice_token_ids(tok, ("Yes", "No"))
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    sched = make_schedule(opt, args.steps, 0.1)
    model.train()
    losses, t0 = [], time.time()
    for step in range(args.steps):
        # a balanced pair per draw, one of it kept: ask() with n=1 would never give a Yes
        batch = [rng.choice(ask(tasks[n], pool[n], 2, rng)) for n in (rng.choice(train_tasks) for _ in range(args.batch))]
        ids, mask, _ = left_pad([ask_about_text(tok, x, q) + [yes_id if y else no_id] for x, q, y in batch],
                                tok.pad_token_id or 0)
        ids, mask = ids.to(model.device), mask.to(model.device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the rows' positions
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -2]
        loss = F.cross_entropy(logits.float(), ids[:, -1])
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
        if (step + 1) % 50 == 0 or step + 1 == args.steps:
            print(f"step {step + 1}: loss {np.mean(losses[-50:]):.3f} ({time.time() - t0:.0f} s)", flush=True)
    return model, losses


def main():
    args = parse()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = args.model
    if args.smoke:
        import tempfile

        from train_step import tiny_setup

        spec = tiny_setup(Path(tempfile.mkdtemp(prefix="ao-bench-")))["model.spec"]
        args.steps, args.per_task = 2, 8
    t0 = time.time()
    torch.manual_seed(args.seed)
    # float32 on a GPU too: the figures must not move with the card's precision
    model, tok = load_model(spec or DEFAULT_MODEL, device=args.device or default_device(), dtype=torch.float32)
    train_tasks = args.train_tasks.split(",")
    names = train_tasks + args.heldout_tasks.split(",")
    tasks = {n: load_task(n, "builtin") for n in names}
    evalsets = {n: ask(tasks[n], [it for it in tasks[n].items if held_out(it[0]) or n not in train_tasks],
                       args.per_task, random.Random(args.seed + 7)) for n in names}
    groups = (demo_group_rows(args.preset, args.heldout_tasks.split(","), args.demo_groups, spec)
              if args.demo_groups else {})
    before = report(model, tok, evalsets, train_tasks, "base")
    before_groups = report_groups(model, tok, groups, "base") if groups else None
    if args.load:
        from peft import PeftModel

        model, losses = PeftModel.from_pretrained(model, args.load), []
    else:
        model, losses = train(model, tok, tasks, train_tasks, args)
    after = report(model, tok, evalsets, train_tasks, "tuned")
    after_groups = report_groups(model, tok, groups, "tuned") if groups else None
    if args.save:
        model.save_pretrained(args.save)
    print(json.dumps({"base": before, "tuned": after, "steps": 0 if args.load else args.steps, "lr": args.lr,
                      "batch": args.batch, "train_tasks": train_tasks, "loaded": args.load, "device": str(model.device),
                      "demo_groups": {"base": before_groups, "tuned": after_groups} if groups else None,
                      "final_loss": float(np.mean(losses[-50:])) if losses else None,
                      "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
