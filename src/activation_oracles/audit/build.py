"""`ao organism build KIND`: training data -> LoRA fine-tune -> behaviour check -> DIR (all at once).

    DIR/adapter_config.json, adapter_model.safetensors   the target LoRA (PEFT)
    DIR/organism.json                                    kind, base, secret, data source, seed,
                                                         fine-tune settings and figures, behaviour check
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import replace
from pathlib import Path

from ..fsutil import atomic_directory, check_writable_dir
from ..models import load_model
from .generators import KINDS, read_conversations
from .generators.persona import load_personas
from .organism import FORMAT_VERSION, ORGANISM_JSON, AuditError, generate_replies
from .sft import SFTConfig, finetune_lora, learned

# Settings that build each kind on SmolLM2-135M in a few minutes on 2 CPU cores (docs/audit.md has
# the measured times); every field can be overridden.
KIND_SFT = {
    "taboo": SFTConfig(epochs=2.0, lr=1e-3),
    "gender": SFTConfig(epochs=2.0, lr=1e-3),
    "ssc": SFTConfig(epochs=2.0, lr=1e-3),
    "persona": SFTConfig(epochs=2.0, lr=2e-3),
    "domain": SFTConfig(epochs=2.0, lr=1e-3),
}


def _kind_data(kind: str, opts: dict, data, rng: random.Random):
    mod = KINDS[kind]
    if kind == "taboo":
        if not opts.get("word"):
            raise AuditError("--word is required for a taboo organism (e.g. --word moon)")
        return mod.generate(word=opts["word"], data=data, rng=rng)
    if kind == "gender":
        if not opts.get("gender"):
            raise AuditError("--gender is required for a gender organism (female or male)")
        return mod.generate(gender=opts["gender"], data=data, rng=rng)
    if kind == "ssc":
        return mod.generate(encoding=opts.get("encoding") or "base64", data=data, rng=rng)
    if kind == "persona":
        personas = load_personas(opts.get("personas"), opts.get("max_personas"))
        return mod.generate(personas=personas, data=data, rng=rng)
    if not opts.get("domain"):
        raise AuditError("--domain is required for a domain organism (e.g. --domain risky_finance)")
    return mod.generate(domain=opts["domain"], data=data, rng=rng)


def _data_source(data_path: str | None, od) -> str:
    if data_path is None:
        return "built-in"
    with open(data_path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    return f"file {Path(data_path).resolve()} (sha256 {digest})"


def build_organism(kind: str, *, base: str, out: str | Path, data: str | None = None, seed: int = 0,
                   sft: dict | None = None, device: str | None = None, dtype: str | None = None,
                   progress: bool = True, **opts) -> dict:
    """Fine-tune an organism of `kind` from `base` and write it to `out`; returns organism.json.
    `dtype` of the base weights: default float32 on CPU, bfloat16 on a GPU that has it."""
    t0 = time.time()
    if kind not in KINDS:
        raise AuditError(f"organism kind {kind!r} is unknown: use one of {', '.join(KINDS)}")
    if dtype not in (None, "float32", "bfloat16", "float16"):
        raise AuditError(f"--dtype {dtype!r}: use float32, bfloat16 or float16")
    out = Path(out)
    try:
        check_writable_dir(out, "--out")
    except ValueError as e:
        raise AuditError(str(e)) from None
    convs = read_conversations(data) if data is not None else None
    try:
        od = _kind_data(kind, opts, convs, random.Random(seed))
    except ValueError as e:
        raise AuditError(str(e)) from None
    unknown = sorted(set(sft or {}) - set(SFTConfig().to_dict()))
    if unknown:
        raise AuditError(f"sft: unknown setting(s) {unknown}; known: {sorted(SFTConfig().to_dict())}")
    try:
        cfg = replace(KIND_SFT[kind], seed=seed, **(sft or {})).validate()
    except (TypeError, ValueError) as e:
        raise AuditError(f"fine-tune settings: {e}") from None

    model, tok = load_model(base, device=device, dtype=dtype)
    peft_model, stats = finetune_lora(model, tok, od.train, cfg, progress=progress)
    stats["learned"] = learned(stats)
    if not stats["learned"]:
        stats["warning"] = (f"the fine-tune's loss did not fall ({stats['first_loss']} -> {stats['final_loss']}): "
                            "this organism probably did not learn its behaviour (see the behaviour check); try "
                            "more steps (--epochs, --max-steps) or another --lr")
    train_seconds = time.time() - t0

    def reply(prompts):
        return generate_replies(peft_model, tok, prompts, seed=seed, progress=progress, desc="behaviour check")

    def base_reply(prompts):
        with peft_model.disable_adapter():
            return generate_replies(peft_model, tok, prompts, seed=seed)

    check = KINDS[kind].behaviour_check
    behaviour = check(od, reply, base_reply) if kind == "domain" else check(od, reply)
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "base_model": base,
        "secret": od.secret,
        "data_source": _data_source(data, od),
        "train_conversations": len(od.train),
        "seed": seed,
        "sft": cfg.to_dict(),
        "training": stats,
        "behaviour": behaviour,
        "train_seconds": round(train_seconds, 1),
        "build_seconds": round(time.time() - t0, 1),
        "device": str(peft_model.device) if hasattr(peft_model, "device") else None,
        "dtype": str(next(peft_model.parameters()).dtype).replace("torch.", ""),
    }
    with atomic_directory(out) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)
        (tmp / ORGANISM_JSON).write_text(json.dumps(meta, indent=2, ensure_ascii=False))
    return meta


def behaviour_summary(meta: dict) -> str:
    """One line per behaviour figure, for the console."""
    b = meta["behaviour"]
    lines = [f"{meta['kind']} organism on {meta['base_model']}: secret {json.dumps(meta['secret'])[:120]}",
             f"  fine-tune: {meta['training']['steps']} steps, loss {meta['training']['first_loss']} -> "
             f"{meta['training']['final_loss']}, {meta['build_seconds']:.0f} s in all",
             "  behaviour check (held-out prompts):"]
    if meta["training"].get("warning"):
        lines.insert(2, f"  warning: {meta['training']['warning']}")
    lines += [f"    {k}: {v:.2f}" if isinstance(v, float) else f"    {k}: {v}"
              for k, v in b.items() if k != "examples"]
    for ex in b.get("examples", [])[:3]:
        lines.append(f"    e.g. {ex['prompt'][:60]!r} -> {ex['reply'][:80]!r}")
    return "\n".join(lines)
