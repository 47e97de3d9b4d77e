"""Supervised fine-tuning of a target LoRA on chat data, loss on assistant tokens only.

The project's own small loop on top of peft rather than TRL's SFTTrainer: assistant-only masking in
TRL needs chat templates with generation markers, which SmolLM2's and Gemma-2's lack, and a short
deterministic loop (seeded order, linear warmup/decay, bf16 autocast) is all an organism needs.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..models import model_device
from ..precision import autocast_ctx
from ..prompt import IGNORE_INDEX, chat_ids
from ..train.step import make_schedule


@dataclass
class SFTConfig:
    epochs: float = 2.0
    lr: float = 1e-3
    batch_size: int = 8
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    warmup_ratio: float = 0.1
    max_length: int = 256
    max_steps: int | None = None
    autocast: str | None = "bf16"  # None: full precision
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> SFTConfig:
        """Every number in range (a 0 is an error, never "unset"), naming the field."""
        from ..checks import check_int, check_number

        check_number(self.epochs, "epochs", above=0)
        check_number(self.lr, "lr", above=0)
        check_int(self.batch_size, "batch_size", 1)
        check_int(self.r, "r (--rank)", 1)
        check_number(self.alpha, "alpha", above=0)
        check_number(self.dropout, "dropout", minimum=0)
        check_number(self.warmup_ratio, "warmup_ratio", minimum=0)
        check_int(self.max_length, "max_length", 2)
        if self.max_steps is not None:
            check_int(self.max_steps, "max_steps", 1)
        check_int(self.seed, "seed", 0)
        if self.autocast not in (None, "bf16"):
            raise ValueError(f"autocast={self.autocast!r}: use 'bf16' or None")
        return self


def learned(stats: dict, min_drop: float = 0.05) -> bool:
    """Whether a fine-tune's loss fell by at least `min_drop` (a share) from its first to its last steps."""
    return stats["final_loss"] < (1 - min_drop) * stats["first_loss"]


def assistant_labels(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels that keep only the assistant turns (their
    content and end-of-turn tokens), found by rendering each prefix with the chat template."""
    ids = chat_ids(tokenizer, messages, add_generation_prompt=False)
    labels = [IGNORE_INDEX] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        if i == 0:
            raise ValueError("a conversation starts with an assistant turn; it needs a user turn first")
        prefix = chat_ids(tokenizer, messages[:i], add_generation_prompt=True)
        start, end = len(prefix), len(chat_ids(tokenizer, messages[: i + 1], add_generation_prompt=False))
        if ids[:start] != prefix:
            raise ValueError("the chat template renders a conversation's prefix differently from the whole; "
                             "assistant tokens cannot be located")
        labels[start:end] = ids[start:end]
    return ids, labels


def _batches(examples, batch_size: int, rng: random.Random):
    """Shuffled batches of similar lengths (sorted within windows of 20 batches: little padding)."""
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 20
    out = []
    for s in range(0, len(order), window):
        chunk = sorted(order[s : s + window], key=lambda i: len(examples[i][0]))
        out += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def _collate(examples, idx, pad_id: int, device):
    width = max(len(examples[i][0]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    labels = torch.full((len(idx), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):  # right padding: positions stay 0..L-1 without extra work
        x, y = examples[i]
        ids[row, : len(x)] = torch.tensor(x)
        labels[row, : len(y)] = torch.tensor(y)
        mask[row, : len(x)] = 1
    return ids.to(device), labels.to(device), mask.to(device)


def finetune_lora(model, tokenizer, conversations: list[dict], cfg: SFTConfig, *, progress: bool = True):
    """Wrap `model` in a fresh LoRA and train it on `conversations`; returns (peft_model, stats)."""
    from peft import LoraConfig, get_peft_model

    cfg.validate()
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    examples = []
    for c in conversations:
        ids, labels = assistant_labels(tokenizer, c["messages"])
        ids, labels = ids[: cfg.max_length], labels[: cfg.max_length]
        if any(t != IGNORE_INDEX for t in labels[1:]):
            examples.append((ids, labels))
    if not examples:
        raise ValueError("no training example has assistant tokens within max_length")
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
                      task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    dev = model_device(peft_model)
    per_epoch = -(-len(examples) // cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps is not None else max(1, int(round(cfg.epochs * per_epoch)))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    sched = make_schedule(opt, total, cfg.warmup_ratio)
    amp = autocast_ctx(cfg.autocast, dev)
    peft_model.train()
    losses, step, t0, tokens = [], 0, time.time(), 0
    bar = tqdm(total=total, desc="sft", unit="step", disable=not progress)
    while step < total:
        for idx in _batches(examples, cfg.batch_size, rng):
            if step >= total:
                break
            ids, labels, mask = _collate(examples, idx, tokenizer.pad_token_id, dev)
            with amp:
                logits = peft_model(input_ids=ids, attention_mask=mask).logits
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=IGNORE_INDEX)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(peft_model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += int(mask.sum())
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    bar.close()
    peft_model.eval()
    k = max(1, len(losses) // 10)
    stats = {"steps": step, "examples": len(examples), "epochs": round(step * cfg.batch_size / len(examples), 2),
             "first_loss": round(sum(losses[:k]) / k, 4), "final_loss": round(sum(losses[-k:]) / k, 4),
             "tokens": tokens, "seconds": round(time.time() - t0, 1)}
    return peft_model, stats
