"""A model organism: a target LoRA adapter plus organism.json (what it hides, how it was built).

    DIR/adapter_config.json  DIR/adapter_model.safetensors   # the PEFT adapter of the target
    DIR/organism.json                                        # kind, base model, secret, data, figures

Hub organisms (the paper's) carry no organism.json: a preset supplies kind, base and secret. A local
mirror of hub repos (`mirror/owner/name`, as `save_pretrained` writes them) stands in for the hub.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..fsutil import TextEncodingError, read_text
from ..models import EMBEDDED_MODELS, looks_like_hub_id
from ..prompt import chat_ids

ORGANISM_JSON = "organism.json"
FORMAT_VERSION = 1


class AuditError(ValueError):
    """Bad input to `ao organism` / `ao audit`; the message names the argument and the fix."""


@dataclass
class Organism:
    adapter: str  # local PEFT directory (or hub id when no mirror holds it)
    kind: str
    base_model: str | None
    secret: dict
    meta: dict = field(default_factory=dict)
    name: str = ""

    @property
    def label(self) -> str:
        return self.name or Path(self.adapter).name


def resolve_repo(spec: str, mirror: str | Path | None) -> str:
    """A hub id mapped into the local mirror when the mirror holds it; anything else unchanged."""
    if mirror is not None and looks_like_hub_id(spec) and not Path(spec).exists():
        local = Path(mirror).expanduser() / spec
        if local.is_dir():
            return str(local)
    return spec


def canonical_base(spec: str | None) -> str | None:
    """Base-model spec for comparisons: embedded names and hub ids as given, local dirs resolved."""
    if spec is None:
        return None
    if spec in EMBEDDED_MODELS or not Path(spec).expanduser().exists():
        return spec
    return str(Path(spec).expanduser().resolve())


def read_organism_json(directory: str | Path) -> dict:
    p = Path(directory) / ORGANISM_JSON
    try:
        meta = json.loads(read_text(p, what="--organism "))
    except TextEncodingError as e:
        raise AuditError(str(e)) from None
    except json.JSONDecodeError as e:
        raise AuditError(f"--organism {directory}: {ORGANISM_JSON} is not valid JSON ({e})") from None
    for k in ("kind", "base_model", "secret"):
        if k not in meta:
            raise AuditError(f"--organism {directory}: {ORGANISM_JSON} has no {k!r} field")
    return meta


def load_organism(spec: str, *, mirror=None, kind=None, base_model=None, secret=None, name="") -> Organism:
    """An organism from a directory built by `ao organism build`, or a hub id (kind, base and secret
    then come from the caller: a preset)."""
    where = resolve_repo(spec, mirror)
    p = Path(where).expanduser()
    if p.is_dir() and (p / ORGANISM_JSON).is_file():
        meta = read_organism_json(p)
        return Organism(str(p), meta["kind"], meta["base_model"], dict(meta["secret"]), meta, name)
    if p.is_dir():
        if secret is None:
            raise AuditError(f"--organism {spec}: the directory has no {ORGANISM_JSON}; build one with "
                             "`ao organism build KIND --base MODEL --out DIR`, or use --preset for a published one")
        if not (p / "adapter_config.json").is_file():
            raise AuditError(f"--organism {spec}: no adapter_config.json (not a PEFT adapter directory)")
        return Organism(str(p), kind, base_model, dict(secret), {}, name)
    if looks_like_hub_id(spec) and secret is not None:
        return Organism(where, kind, base_model, dict(secret), {}, name)
    if looks_like_hub_id(spec):
        raise AuditError(f"--organism {spec}: a hub id carries no {ORGANISM_JSON}; use --preset NAME (which knows "
                         "the published organisms' secrets) or build one locally")
    raise AuditError(f"--organism {spec}: no such directory")


def check_same_base(organism: Organism, base: str, where: str = "--organism") -> None:
    if organism.base_model is not None and canonical_base(organism.base_model) != canonical_base(base):
        raise AuditError(f"{where} {organism.adapter} was fine-tuned from {organism.base_model!r} but the oracle "
                         f"runs on {base!r}: an oracle reads activations of its own base model; pass --base "
                         f"{organism.base_model} with an oracle trained on it")


# ----------------------------------------------------------------------------- running the organism


def generate_replies(model, tokenizer, prompts: list[list[dict]], *, max_new_tokens: int = 48,
                     batch_size: int = 32, do_sample: bool = False, temperature: float = 1.0, seed: int = 0,
                     progress: bool = False, desc: str = "replies") -> list[str]:
    """The model's replies to chat prompts (batched, left-padded), with whatever weights are active."""
    from ..steering import generate_answers

    ids = [chat_ids(tokenizer, p, add_generation_prompt=True) for p in prompts]
    out = []
    torch.manual_seed(seed)
    for s in tqdm(range(0, len(ids), batch_size), desc=desc, disable=not progress, leave=False):
        chunk = ids[s : s + batch_size]
        out += generate_answers(model, tokenizer, chunk, [[] for _ in chunk], None,
                                max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature)
    return out
