"""What a run reports: metrics.jsonl (always, rank 0), plus TensorBoard and W&B when `output.report_to` asks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .config import ConfigError, TrainConfig


class MetricsWriter:
    """metrics.jsonl (always), plus TensorBoard / W&B when asked for and installed."""

    def __init__(self, run_dir: Path, cfg: TrainConfig, *, keep_until: int | None, enabled: bool):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self.tb = self.wandb = None
        if not enabled:
            return
        if keep_until is not None and self.path.exists():  # resume: drop rows past the checkpoint
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= keep_until]
            self.path.write_text("".join(k + "\n" for k in kept))
        elif keep_until is None:
            self.path.write_text("")
        self.f = open(self.path, "a")
        if "tensorboard" in cfg.output.report_to:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("output.report_to", "tensorboard is not installed: pip install tensorboard") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if "wandb" in cfg.output.report_to:
            try:
                import wandb
            except ImportError:
                raise ConfigError("output.report_to", "wandb is not installed: pip install wandb") from None
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "activation-oracles"),
                                    name=run_dir.name, config=cfg.to_dict(), dir=str(run_dir))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.f.write(json.dumps(row) + "\n")
        self.f.flush()
        step = row.get("step", 0)
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for k, v in scalars.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self.f.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def metrics_row(s: dict, step: int, epoch: int, step_time: float) -> dict[str, Any]:
    """A metrics.jsonl row from a step's read-back numbers; `step_time`: the mean over the steps since the
    last logged one (each step alone is not timed: that would need the GPU to finish it first)."""
    return {
        "step": step, "epoch": epoch, "loss": s["loss"], "lr": s["lr"], "tokens": s["tokens"],
        "context_tokens": s["context_tokens"], "step_time_s": step_time, "tokens_per_s": s["tokens"] / step_time,
        "padding_share": s["pad_tokens"] / max(1, s["total_tokens"]),
        **{k: v for k, v in s.items() if k == "grad_norm" or k.startswith("loss/")},
    }
