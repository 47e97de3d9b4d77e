"""In-training evaluation: greedy yes/no classification and teacher-forced validation loss per task."""

from __future__ import annotations

from collections import defaultdict

import torch

from ..scoring import YES_NO, first_word, score
from ..precision import autocast_ctx
from ..prompt import prompt_length
from ..steering import generate_answers
from .objective import batch_kwargs, collect_groups, gather_vectors
from .step import _sharded, collate_for, collate_padded


def _progress(cfg, batches: int, desc: str):
    """A progress bar over an evaluation's batches (rank 0 only, when output.progress): the final evaluation
    takes minutes on a CPU and should not pass in silence after the training bar reaches 100 %."""
    from tqdm.auto import tqdm

    dist = torch.distributed
    main = not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    return tqdm(total=batches, desc=desc, unit="batch", leave=False, dynamic_ncols=True,
                disable=not (cfg.output.progress and main))


def _batches(groups: dict, batch_size: int) -> int:
    return sum(-(-len(idx) // batch_size) for idx in groups.values())


def _rows(ds, idx):
    cols = ds[[int(i) for i in idx]]
    return [{k: cols[k][j] for k in cols} for j in range(len(idx))]


def select_groups(ds, max_per_group: int) -> dict[str, list[int]]:
    """Classification rows with a yes/no target, grouped as '<dataset>/single' or '<dataset>/multi'."""
    groups: dict[str, list[int]] = defaultdict(list)
    tasks, targets, npos = ds["task"], ds["target"] if "target" in ds.column_names else None, None
    dsets = ds["dataset"] if "dataset" in ds.column_names else ["all"] * len(ds)
    npos = [len(p) for p in ds["positions"]]
    for i, t in enumerate(tasks):
        if t != "classification" or targets is None or first_word(targets[i]) not in YES_NO:
            continue
        key = f"{dsets[i]}/{'single' if npos[i] == 1 else 'multi'}"
        if len(groups[key]) < max_per_group:
            groups[key].append(i)
    return dict(groups)


@torch.no_grad()
def generation_eval(peft_model, tokenizer, ds, cfg, device, enter=None) -> dict[str, float]:
    """Greedy answers to held-out yes/no questions, scored per dataset and single/multi-token input.
    `enter(fn)` runs fn(peft_model) for each batch (under FSDP: inside the root unit, fsdp.run_in_root)."""
    sharded = enter is not None  # (under FSDP every rank runs the same forwards: one context group)
    enter = enter or (lambda fn: fn(peft_model))
    out: dict[str, float] = {}
    if cfg.eval.max_examples == 0:
        return out
    groups = select_groups(ds, cfg.eval.max_examples)
    was_training = peft_model.training
    peft_model.eval()
    bar = _progress(cfg, _batches(groups, cfg.eval.batch_size), "eval answers")
    try:
        tot_fmt = tot_ok = tot_n = 0
        for key, idx in sorted(groups.items()):
            fmt = ok = 0
            for s in range(0, len(idx), cfg.eval.batch_size):
                rows = _rows(ds, idx[s : s + cfg.eval.batch_size])
                b = collate_padded(cfg, rows, tokenizer.pad_token_id, sharded=sharded).to(device)
                prompts = [r["input_ids"][: prompt_length(r["labels"])] for r in rows]

                def answer(model, b=b, prompts=prompts, rows=rows):
                    acts = collect_groups(model, b.ctx_ids, b.ctx_mask, b.ctx_layers, b.ctx_pos, autocast=cfg.train.autocast)
                    with autocast_ctx(cfg.train.autocast, torch.device(device)):
                        return generate_answers(model, tokenizer, prompts, [r["positions"] for r in rows],
                                                gather_vectors(acts, b), hook_layer=cfg.train.hook_layer,
                                                coefficient=cfg.train.coefficient,
                                                max_new_tokens=cfg.eval.max_new_tokens)

                texts = enter(answer)
                bar.update(1)
                for text, r in zip(texts, rows):
                    f, c = score(text, r["target"])
                    fmt += f
                    ok += c
            n = len(idx)
            out[f"eval/{key}/format_acc"] = fmt / n
            out[f"eval/{key}/acc"] = ok / n
            tot_fmt, tot_ok, tot_n = tot_fmt + fmt, tot_ok + ok, tot_n + n
        if tot_n:
            out["eval/classification/format_acc"] = tot_fmt / tot_n
            out["eval/classification/acc"] = tot_ok / tot_n
    finally:
        bar.close()
        peft_model.train(was_training)
    return out


@torch.no_grad()
def validation_loss(objective, ds, cfg, pad_id: int, device) -> dict[str, float]:
    """Token-mean cross-entropy on held-out rows, per task (dropout off)."""
    per_task: dict[str, list[int]] = defaultdict(list)
    for i, t in enumerate(ds["task"]):
        if len(per_task[t]) < cfg.eval.max_loss_examples:
            per_task[t].append(i)
    out = {}
    was_training = objective.training
    objective.eval()
    bar = _progress(cfg, _batches(per_task, cfg.eval.batch_size), "eval loss")
    try:
        for task, idx in sorted(per_task.items()):
            tot, n = 0.0, 0
            for s in range(0, len(idx), cfg.eval.batch_size):
                b = collate_for(cfg, _rows(ds, idx[s : s + cfg.eval.batch_size]), pad_id,
                                sharded=_sharded(objective)).to(device)
                ce, _ = objective(**batch_kwargs(b))
                tot += float(ce.sum())
                n += ce.numel()
                bar.update(1)
            if n:
                out[f"eval/{task}/loss"] = tot / n
    finally:
        bar.close()
        objective.train(was_training)
    return out
