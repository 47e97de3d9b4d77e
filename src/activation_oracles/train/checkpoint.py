"""Atomic checkpoints: written into a hidden temp dir, sealed with a manifest of sizes and SHA-256
digests, then renamed into place. A directory without a valid manifest is never loaded.

Layout of ``RUN/checkpoints/step_N/`` (also a loadable oracle adapter directory)::

    adapter_config.json  adapter_model.safetensors  ao_config.json     # PEFT adapter + oracle metadata
    optimizer.pt  scheduler.pt  rng_rank{R}.pt  trainer_state.json     # exact-resume state
    optimizer/  (under FSDP, instead of optimizer.pt: one shard per rank, torch.distributed.checkpoint)
    MANIFEST.json                                                      # written last
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ..fsutil import atomic_directory, fsync_path
from ..oracle_config import ADAPTER_WEIGHTS, AO_CONFIG, PROMPT_FORMAT
from .config import ConfigError

MANIFEST = "MANIFEST.json"
_STEP_RE = re.compile(r"^step_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, partial or corrupted; the message names the directory."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(directory: Path, meta: dict | None = None) -> None:
    files = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(directory).as_posix()
            files[rel] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"files": files, **(meta or {})}, indent=1))
    fsync_path(tmp)
    os.replace(tmp, directory / MANIFEST)


def verify(directory: str | Path) -> dict:
    """Return the manifest of a complete checkpoint; raise CheckpointError saying what is wrong."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: no such checkpoint directory")
    m = d / MANIFEST
    if not m.is_file():
        raise CheckpointError(f"{d}: incomplete checkpoint (no {MANIFEST}; the save was interrupted)")
    try:
        manifest = json.loads(m.read_text())
        files = manifest["files"]
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{d}: corrupted checkpoint ({MANIFEST} unreadable: {err})") from None
    for rel, info in files.items():
        p = d / rel
        if not p.is_file():
            raise CheckpointError(f"{d}: corrupted checkpoint ({rel} is missing)")
        if p.stat().st_size != info["size"]:
            raise CheckpointError(f"{d}: corrupted checkpoint ({rel} has {p.stat().st_size} bytes, expected {info['size']})")
        if _sha256(p) != info["sha256"]:
            raise CheckpointError(f"{d}: corrupted checkpoint ({rel} fails its SHA-256 check)")
    return manifest


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    root = Path(run_dir) / "checkpoints"
    out = []
    if root.is_dir():
        for p in root.iterdir():
            m = _STEP_RE.match(p.name)
            if m and p.is_dir():
                out.append((int(m.group(1)), p))
    return sorted(out)


def latest_complete(run_dir: str | Path) -> Path:
    """The newest checkpoint of a run that passes `verify`; broken newer ones are named in a warning."""
    run_dir = Path(run_dir)
    if (run_dir / MANIFEST).is_file() or _STEP_RE.match(run_dir.name):
        verify(run_dir)  # a checkpoint directory itself was given
        return run_dir
    cps = list_checkpoints(run_dir)
    if not cps:
        raise CheckpointError(f"{run_dir}: no checkpoints under {run_dir / 'checkpoints'} (a run stopped before its "
                              "first one has nothing to resume: start it again with the same command)")
    problems = []
    for _, p in reversed(cps):
        try:
            verify(p)
        except CheckpointError as err:
            problems.append(str(err))
            continue
        for msg in problems:
            warnings.warn(f"skipping {msg}", stacklevel=2)
        return p
    raise CheckpointError(f"{run_dir}: no complete checkpoint; " + "; ".join(problems))


# What torch.save and safetensors say when a write fails (a full disk, mostly): no errno, no file name.
_WRITE_FAILURES = ("PytorchStreamWriter failed", "inline_container", "file write failed", "No space left")


@contextlib.contextmanager
def disk_errors(run_dir: Path):
    """Turn a failed checkpoint write (torch's `enforce fail at inline_container.cc`, safetensors' I/O error,
    ENOSPC) into a CheckpointError that says the disk is full and names the directory; the last complete
    checkpoint is untouched (atomic writes), so the run can be resumed once there is space."""
    try:
        yield
    except (RuntimeError, OSError) as err:
        full = isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)
        if not (full or (type(err).__name__ in ("RuntimeError", "SafetensorError")
                         and any(m in str(err) for m in _WRITE_FAILURES))):
            raise
        try:
            free_mb = shutil.disk_usage(run_dir).free / 2**20
        except OSError:
            free_mb = None
        why = "no space left on its device" if full or free_mb is None or free_mb < 256 else "a write error"
        free = "free space unknown" if free_mb is None else f"{free_mb:,.0f} MB free there now"
        raise CheckpointError(f"writing a checkpoint into {run_dir} failed: {why} ({free}; "
                              f"{str(err).strip().splitlines()[0][:160]}). Free some space, then continue the run "
                              f"with --resume {run_dir}") from None


def rng_state() -> dict:
    # numpy's key array travels as a tensor so that checkpoints load with torch.load(weights_only=True)
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.int64).astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def ao_config(cfg, *, layers: list[int], step: int | None = None) -> dict:
    from .. import __version__

    return {
        "format_version": 1,
        "prompt_format": PROMPT_FORMAT,
        "placeholder": " ?",
        "hook_layer": cfg.train.hook_layer,
        "coefficient": cfg.train.coefficient,
        "injection": "norm-matched addition after block hook_layer: h + c * ||h|| * v / ||v||",
        "layer_percents": list(cfg.data.layer_percents),
        "layers": layers,
        # true: the oracle reads all `layers` at once, one "Layer: L" block of placeholders per layer, in order
        "multi_layer": cfg.data.multi_layer,
        "base_model": cfg.model.spec,
        "base_model_revision": cfg.model.revision,
        "training_config": cfg.to_dict(),
        "package": "activation-oracles",
        "package_version": __version__,
        "step": step,
    }


def save_adapter(peft_model, directory: Path, ao_cfg: dict, state_dict=None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    kwargs = {"safe_serialization": True}
    if state_dict is not None:
        kwargs["state_dict"] = state_dict
    peft_model.save_pretrained(str(directory), **kwargs)
    set_hub_base_model(directory, ao_cfg.get("base_model"))
    # save_pretrained with a non-default adapter name nests it; we always use "default".
    (directory / AO_CONFIG).write_text(json.dumps(ao_cfg, indent=1, default=str))
    readme = directory / "README.md"
    if readme.exists():
        readme.unlink()  # PEFT's model-card stub carries no information


def set_hub_base_model(directory: Path, spec: str | None) -> None:
    """adapter_config.json names the base model by its hub id, not the local path it was loaded from (an
    embedded model's cache), so that the adapter loads elsewhere."""
    from ..models import hub_id

    hub, path = hub_id(spec), directory / "adapter_config.json"
    if hub is None or not path.is_file():
        return
    cfg = json.loads(path.read_text())
    if cfg.get("base_model_name_or_path") != hub:
        cfg["base_model_name_or_path"] = hub
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def atomic_dir(final: Path, write, *, manifest_meta: dict | None = None) -> Path:
    """Run write(tmp_dir), seal it with a manifest and rename it to `final` (replacing an older one),
    every file flushed to disk before the rename."""
    with atomic_directory(final, fsync=True) as tmp:
        write(tmp)
        write_manifest(tmp, manifest_meta)
    return final


def prune(run_dir: Path, keep_last: int | None) -> None:
    if not keep_last:
        return
    for _, p in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(p, ignore_errors=True)


# ----------------------------------------------------------------------------- the trainer's save and load


def _adapter_state(raw_objective, fsdp):
    """Under FSDP, the full LoRA weights gathered from the shards (every rank calls it); else None."""
    if not fsdp:
        return None
    from peft import get_peft_model_state_dict

    from .fsdp import full_lora_state

    return get_peft_model_state_dict(raw_objective.model, state_dict=full_lora_state(raw_objective))


def save_checkpoint(cfg, acc, raw_objective, opt, sched, stream, step, run_dir, layers, fsdp) -> None:
    """Every rank writes its own RNG state (and under FSDP its optimizer shard) into rank 0's staging
    directory; rank 0 adds the adapter, scheduler and cursor, seals it and renames it into place."""
    from accelerate.utils import broadcast_object_list

    main = acc.is_main_process
    final = run_dir / "checkpoints" / f"step_{step}"
    with atomic_directory(final, fsync=True) if main else contextlib.nullcontext() as tmp:
        where = [str(tmp) if main else None]
        if acc.num_processes > 1:
            broadcast_object_list(where)
        tmp = Path(where[0])
        torch.save(rng_state(), tmp / f"rng_rank{acc.process_index}.pt")
        if fsdp:
            from .fsdp import save_optimizer

            save_optimizer(raw_objective, opt, tmp / "optimizer")
        state = _adapter_state(raw_objective, fsdp)
        if main:
            save_adapter(raw_objective.model, tmp, ao_config(cfg, layers=layers, step=step), state_dict=state)
            if not fsdp:
                torch.save(opt.state_dict(), tmp / "optimizer.pt")  # DDP: identical on every rank
            torch.save(sched.state_dict(), tmp / "scheduler.pt")
            (tmp / "trainer_state.json").write_text(json.dumps({
                "step": step, **stream.state_dict(), "world_size": acc.num_processes,
                "seed": cfg.train.seed, "batch_size": cfg.train.batch_size, "fsdp": fsdp,
                "batch_tokens": cfg.train.batch_tokens,
            }, indent=1))
        acc.wait_for_everyone()  # every rank's files are in before the manifest seals them
        if main:
            write_manifest(tmp, {"step": step})
    if main:
        prune(run_dir, cfg.output.keep_last)
    acc.wait_for_everyone()


def save_final_adapter(cfg, acc, raw_objective, run_dir, layers, step, fsdp) -> None:
    """RUN/adapter: the trained adapter, sealed like a checkpoint (every rank calls it)."""
    state = _adapter_state(raw_objective, fsdp)
    if acc.is_main_process:
        atomic_dir(run_dir / "adapter",
                   lambda d: save_adapter(raw_objective.model, d, ao_config(cfg, layers=layers, step=step),
                                          state_dict=state),
                   manifest_meta={"step": step})
    acc.wait_for_everyone()


def load_adapter_weights(ckpt: Path, peft_model, field: str | None = None) -> None:
    """A checkpoint's adapter (verified against its manifest), or with `field` a saved adapter to start from
    (verified when it has a manifest; published adapters have none). Every LoRA weight must be set."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    if field is None or (ckpt / MANIFEST).is_file():
        verify(ckpt)  # again, right before loading
    weights = load_file(str(ckpt / ADAPTER_WEIGHTS), device=str(next(peft_model.parameters()).device))
    try:
        result = set_peft_model_state_dict(peft_model, weights)
    except RuntimeError as err:  # size mismatch: another rank or another model
        if field is None:
            raise
        raise ConfigError(field, f"{ckpt}: its weights do not fit this model's LoRA (set lora.r and "
                                 f"lora.target_modules as the adapter was trained): {str(err)[:300]}") from None
    if getattr(result, "unexpected_keys", None):
        raise ConfigError(field or "resume", f"{ckpt}: adapter has unexpected keys {result.unexpected_keys[:5]}")
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if missing:
        raise ConfigError(field or "resume", f"{ckpt}: adapter lacks {len(missing)} LoRA weights of this model "
                                             f"(e.g. {missing[0]}); set lora.target_modules as it was trained")


def load_training_state(ckpt: Path, raw_objective, opt, sched, stream, rank: int, fsdp: bool) -> int:
    """Optimizer, schedule, data cursor and this rank's RNG from a checkpoint; returns its step."""
    state = json.loads((ckpt / "trainer_state.json").read_text())
    if state.get("batch_tokens") != stream.main.budget:
        raise ConfigError("train.batch_tokens", f"the checkpoint {ckpt} was written with batch_tokens "
                                                f"{state.get('batch_tokens')}, not {stream.main.budget}")
    if state.get("batch_size") != stream.batch_size:
        raise ConfigError("train.batch_size", f"the checkpoint {ckpt} was written with batch size "
                                              f"{state.get('batch_size')}, not {stream.batch_size}")
    if bool(state.get("fsdp")) != fsdp:
        raise CheckpointError(f"{ckpt}: written {'with' if state.get('fsdp') else 'without'} FSDP "
                              f"({state.get('world_size')} processes); resume it the same way")
    if fsdp:
        if state.get("world_size") != torch.distributed.get_world_size():
            raise CheckpointError(f"{ckpt}: its optimizer is sharded over {state.get('world_size')} FSDP processes; "
                                  "resume with as many")
        from .fsdp import load_optimizer

        load_optimizer(raw_objective, opt, ckpt / "optimizer")
    else:
        opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location="cpu", weights_only=True))
    sched.load_state_dict(torch.load(ckpt / "scheduler.pt", map_location="cpu", weights_only=True))
    try:
        stream.load_state_dict(state, int(state["step"]))
    except ValueError as err:
        raise ConfigError("data.curriculum", f"{ckpt}: {err}") from None
    rng_file = ckpt / f"rng_rank{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=True))
    else:
        warnings.warn(f"{ckpt} has no RNG state for rank {rank} (saved with {state.get('world_size')} processes); "
                      "dropout masks will differ from an uninterrupted run", stacklevel=2)
    return int(state["step"])
