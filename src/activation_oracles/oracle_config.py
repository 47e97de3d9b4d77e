"""`ao_config.json`: the file beside an oracle adapter that says how to talk to it (hook layer,
injection coefficient, source layers, prompt format). Written by the trainer, read by `Oracle`."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

AO_CONFIG = "ao_config.json"
PROMPT_FORMAT = "Layer: {layer}\\n + ' ?' * K + ' \\n' + question"


def read_ao_config(adapter: str | None) -> dict:
    """ao_config.json beside a local adapter (or in a hub repo, when the hub is reachable)."""
    if adapter is None:
        return {}
    path = Path(adapter).expanduser() / AO_CONFIG
    if path.is_file():
        return json.loads(path.read_text())
    if not Path(adapter).expanduser().exists():
        with contextlib.suppress(Exception):
            from huggingface_hub import hf_hub_download

            return json.loads(Path(hf_hub_download(adapter, AO_CONFIG)).read_text())
    return {}
