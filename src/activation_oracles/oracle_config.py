"""`ao_config.json`: the file beside an oracle adapter that says how to talk to it (hook layer,
injection coefficient, source layers, single- or multi-layer prompt). Written by the trainer, read by
`Oracle`. Adapters trained with the paper authors' code carry their own files instead; `read_ao_config`
turns those into the same keys:

- their `ao_config.json` (a training config: `hook_onto_layer`, `steering_coefficient`,
  `layer_combinations` / `act_layer_combinations`, `special_token`, `prefix_template`, `model_name`);
- `mlao_config.json` of their multi-layer oracles (`act_layers`, `layer_percents`, `order`,
  `special_token`, `prefix_template`, `model_name`).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

AO_CONFIG = "ao_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"  # PEFT's file name for the LoRA weights
MLAO_CONFIG = "mlao_config.json"
PROMPT_FORMAT = "Layer: {layer}\\n + ' ?' * K + ' \\n' + question"
# The reference's own description of the same prefix (one block per layer, layer-major).
REFERENCE_PREFIX_TEMPLATE = "Layer: {layer}\\n{special_token} * {num_positions} \\n"


class AdapterConfigError(ValueError):
    """An adapter's config file asks for a prompt format or injection this package does not implement."""


def _read_json(adapter: str, name: str) -> dict | None:
    path = Path(adapter).expanduser() / name
    if path.is_file():
        from .fsutil import TextEncodingError, read_text

        try:
            return json.loads(read_text(path))
        except TextEncodingError as err:
            raise AdapterConfigError(str(err)) from None
        except ValueError as err:
            raise AdapterConfigError(f"{path}: not valid JSON ({err}); the adapter's config is damaged") from None
    if Path(adapter).expanduser().exists():
        return None
    with contextlib.suppress(Exception):  # a hub id: only when the hub is reachable
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(adapter, name)).read_text())
    return None


def _check_format(cfg: dict, where: str) -> None:
    token = cfg.get("special_token", " ?")
    template = cfg.get("prefix_template", REFERENCE_PREFIX_TEMPLATE)
    order = cfg.get("order", "layer_major")
    if token != " ?" or template != REFERENCE_PREFIX_TEMPLATE or order != "layer_major":
        raise AdapterConfigError(
            f"{where}: the adapter uses special_token={token!r}, prefix_template={template!r}, order={order!r}; "
            "this package implements ' ?', the 'Layer: L' prefix and layer-major order only")


def _from_reference(ref: dict | None, mlao: dict | None, adapter: str) -> dict:
    out: dict = {"source_format": []}
    if ref is not None:
        _check_format(ref, f"{adapter}/{AO_CONFIG}")
        out["source_format"].append(AO_CONFIG)
        out["hook_layer"] = int(ref.get("hook_onto_layer", 1))
        out["coefficient"] = float(ref.get("steering_coefficient", 1.0))
        if ref.get("model_name"):
            out["base_model"] = ref["model_name"]
        combos, percents = ref.get("act_layer_combinations") or [], ref.get("layer_combinations") or []
        if len(combos) == 1:  # one combination: the layers every example read together
            out["layers"], out["multi_layer"] = list(combos[0]), len(combos[0]) > 1
            if percents:
                out["layer_percents"] = list(percents[0])
    if mlao is not None:
        _check_format(mlao, f"{adapter}/{MLAO_CONFIG}")
        out["source_format"].append(MLAO_CONFIG)
        out["layers"] = [int(x) for x in mlao["act_layers"]]
        out["layer_percents"] = list(mlao.get("layer_percents", []))
        out["multi_layer"] = len(out["layers"]) > 1
        out.setdefault("base_model", mlao.get("model_name"))
    return out


def read_ao_config(adapter: str | None) -> dict:
    """The oracle settings of an adapter (local directory, or a hub id when the hub is reachable): our
    ao_config.json as written, else the reference's files translated to its keys; {} when there is none."""
    if adapter is None:
        return {}
    ours = _read_json(adapter, AO_CONFIG)
    if ours is not None and "hook_onto_layer" not in ours and "act_layer_combinations" not in ours:
        return ours
    mlao = _read_json(adapter, MLAO_CONFIG)
    if ours is None and mlao is None:
        return {}
    return _from_reference(ours, mlao, adapter)
