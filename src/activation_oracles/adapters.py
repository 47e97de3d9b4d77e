"""A LoRA adapter checked before it is used: its files whole (against the MANIFEST.json the trainer seals
adapters with; a readable safetensors header otherwise), and its weights' shapes against the model it is
loaded into, so that a truncated file or an adapter of another model is an error naming the adapter and
the fix, not a `SafetensorError` or a `size mismatch` traceback. Used by `Oracle` (oracle and target
adapters), `ao push`, `ao audit` and the trainer's `lora.init_from`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from .oracle_config import ADAPTER_WEIGHTS, AO_CONFIG

ADAPTER_CONFIG = "adapter_config.json"


class AdapterError(ValueError):
    """An adapter is incomplete, corrupt, or made for another model; the message names it and the fix."""


def _local(adapter) -> Path | None:
    p = Path(adapter).expanduser()
    return p if p.is_dir() else None


def _weights_shapes(path: Path, label: str) -> dict[str, list[int]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # noqa: BLE001 - SafetensorError (a Rust type) and OSError alike
        raise AdapterError(f"{label}: {path.name} is corrupt or truncated ({err}); save or download the adapter "
                           "again") from None


def verify_adapter_files(adapter, label: str = "adapter") -> dict[str, list[int]] | None:
    """Check a local adapter directory's files; returns its weights' shapes (None for a hub id, which PEFT
    checks when it downloads). `label` names the argument in messages (e.g. "--adapter runs/x/adapter")."""
    d = _local(adapter)
    if d is None:
        return None
    cfg = d / ADAPTER_CONFIG
    if not cfg.is_file():
        raise AdapterError(f"{label}: no {ADAPTER_CONFIG} (expected a LoRA adapter saved by peft, e.g. "
                           "runs/NAME/adapter)")
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise AdapterError(f"{label}: {ADAPTER_CONFIG} is not valid JSON ({err})") from None
    from .train.checkpoint import MANIFEST, CheckpointError, verify

    if (d / MANIFEST).is_file():
        try:
            verify(d)
        except CheckpointError as err:
            raise AdapterError(f"{label}: {str(err).removeprefix(f'{d}: ')}; the adapter's files changed since it "
                               "was saved (save or copy it again)") from None
    weights = d / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise AdapterError(f"{label}: no {ADAPTER_WEIGHTS} (only safetensors weights are loaded)")
    return _weights_shapes(weights, label)


def _module_name(key: str, marker: str) -> str:
    name = key.split(marker)[0]
    for prefix in ("base_model.model.", "base_model."):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def check_adapter_fits(model, adapter, shapes: dict[str, list[int]] | None, label: str = "adapter") -> None:
    """Refuse an adapter whose LoRA weights do not fit `model`: modules it targets that the model lacks, or
    widths that differ (trained for another hidden size)."""
    if not shapes:
        return
    from .models import hidden_size, unwrap

    base = unwrap(model)
    modules = dict(base.named_modules())
    hidden = hidden_size(base)
    missing, wrong, their_hidden = [], [], Counter()
    for key, shape in shapes.items():
        for marker, dim, attr in ((".lora_A.", 1, "in_features"), (".lora_B.", 0, "out_features")):
            if marker not in key or len(shape) != 2:
                continue
            name = _module_name(key, marker)
            mod = modules.get(name)
            if mod is None:
                missing.append(name)
                continue
            have = getattr(mod, attr, None)
            if isinstance(have, int) and have != shape[dim]:
                wrong.append((name, attr, shape[dim], have))
                if have == hidden:  # a module reading (or writing) the residual stream
                    their_hidden[shape[dim]] += 1
    what = _trained_on(adapter)
    fix = f"load it with the base model it was trained for{f' ({what})' if what else ''}"
    if wrong:
        if their_hidden:
            size = their_hidden.most_common(1)[0][0]
            raise AdapterError(f"{label}: adapter trained for hidden size {size}; this model has {hidden}: {fix}")
        name, attr, theirs, have = wrong[0]
        raise AdapterError(f"{label}: adapter trained for another model ({name}.{attr} is {theirs} in the adapter, "
                           f"{have} here): {fix}")
    if missing:
        uniq = sorted(set(missing))
        raise AdapterError(f"{label}: the adapter targets {len(uniq)} module(s) this model lacks (e.g. {uniq[0]}); "
                           f"it was trained for another architecture: {fix}")


def _trained_on(adapter) -> str | None:
    d = _local(adapter)
    if d is None:
        return None
    for name, key in ((AO_CONFIG, "base_model"), ("organism.json", "base_model"),
                      (ADAPTER_CONFIG, "base_model_name_or_path")):
        try:
            value = json.loads((d / name).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError):
            continue
        if value:
            return str(value)
    return None


def load_lora(model, adapter: str, *, adapter_name: str, label: str = "adapter"):
    """`model` with the LoRA `adapter` loaded under `adapter_name` (a PeftModel: wrapped if it is not one
    yet), after `verify_adapter_files` and `check_adapter_fits`; inference only."""
    from peft import PeftModel

    shapes = verify_adapter_files(adapter, label)
    check_adapter_fits(model, adapter, shapes, label)
    try:
        if hasattr(model, "peft_config"):
            model.load_adapter(adapter, adapter_name=adapter_name, is_trainable=False)
            return model
        return PeftModel.from_pretrained(model, adapter, adapter_name=adapter_name, is_trainable=False)
    except RuntimeError as err:  # a hub adapter (not checked above) of another model
        if "size mismatch" not in str(err):
            raise
        raise AdapterError(f"{label}: the adapter's weights do not fit this model (trained for another base "
                           f"model): {str(err).strip().splitlines()[-1][:300]}") from None
