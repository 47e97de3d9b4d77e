"""The oracle adapters the paper's authors published, one per base model (the paper's 12 models).

All were trained with the reference code in the paper's single-layer format: residual-stream sources at
25/50/75 % depth, injected after block 1 with coefficient 1. `Oracle.from_pretrained(base,
adapter="published")` looks the base model up here; `ao oracles` prints the table.

Where the ids come from (`confirmed`): "reference" ids appear in the authors' own repositories
(adamkarvonen/activation_oracles experiment and plotting scripts; the dev fork for Qwen3-4B, as a local
checkpoint directory of that name); "listings" ids appear in independent third-party code and notes that
cite the authors' Hugging Face collection (https://huggingface.co/collections/adamkarvonen/activation-oracles),
two listings agreeing on every id, but were not checked against the hub itself (no network here).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

COLLECTION = "https://huggingface.co/collections/adamkarvonen/activation-oracles"


@dataclass(frozen=True)
class PublishedOracle:
    base_model: str  # hub id of the base (and target) model
    adapter: str  # hub id of the oracle LoRA
    confirmed: str  # "reference" | "listings" (see the module docstring)
    notes: str = ""
    layer_percents: tuple[int, ...] = (25, 50, 75)
    hook_layer: int = 1

    @property
    def name(self) -> str:
        return self.base_model.split("/")[-1]

    def to_dict(self) -> dict:
        return asdict(self)


def _p(base, adapter, confirmed, notes=""):
    return PublishedOracle(base, "adamkarvonen/" + adapter, confirmed, notes)


PUBLISHED: tuple[PublishedOracle, ...] = (
    _p("Qwen/Qwen3-1.7B", "checkpoints_cls_latentqa_past_lens_Qwen3-1_7B", "listings"),
    _p("Qwen/Qwen3-4B", "checkpoints_latentqa_cls_past_lens_Qwen3-4B", "reference"),
    _p("Qwen/Qwen3-8B", "checkpoints_latentqa_cls_past_lens_addition_Qwen3-8B", "reference",
       "the paper's main Qwen3-8B oracle"),
    _p("Qwen/Qwen3-14B", "checkpoints_latentqa_cls_past_lens_Qwen3-14B", "listings"),
    _p("Qwen/Qwen3-32B", "checkpoints_cls_latentqa_past_lens_Qwen3-32B", "listings"),
    _p("google/gemma-2-9b-it", "checkpoints_latentqa_cls_past_lens_addition_gemma-2-9b-it", "reference"),
    _p("google/gemma-2-27b-it", "checkpoints_latentqa_cls_past_lens_gemma-2-27b-it", "listings"),
    _p("google/gemma-3-1b-it", "checkpoints_cls_latentqa_past_lens_gemma-3-1b-it", "listings"),
    _p("google/gemma-3-27b-it", "checkpoints_latentqa_cls_past_lens_gemma-3-27b-it", "listings"),
    _p("meta-llama/Llama-3.2-1B-Instruct", "checkpoints_cls_latentqa_past_lens_Llama-3_2-1B-Instruct", "listings"),
    _p("meta-llama/Llama-3.1-8B-Instruct", "checkpoints_latentqa_cls_past_lens_Llama-3_1-8B-Instruct", "listings"),
    _p("meta-llama/Llama-3.3-70B-Instruct", "checkpoints_act_cls_latentqa_pretrain_mix_adding_Llama-3_3-70B-Instruct",
       "reference", "trained on 8-bit weights: load with quantization='8bit'"),
)


def _key(name: str) -> str:
    return name.strip().lower()


def find_published(base: str) -> PublishedOracle:
    """The published oracle of a base model, by hub id ('Qwen/Qwen3-8B') or name ('Qwen3-8B'), any case."""
    want = _key(base)
    for p in PUBLISHED:
        if want in (_key(p.base_model), _key(p.name)):
            return p
    known = ", ".join(p.base_model for p in PUBLISHED)
    raise ValueError(f"no published oracle for base model {base!r}; published ones exist for: {known} "
                     f"(`ao oracles` lists them). Pass adapter=PATH_OR_HUB_ID for another adapter.")


def resolve_adapter(base: str, adapter: str | None, name: str = "adapter") -> str | None:
    """`adapter`, with "published" replaced by the published oracle's hub id for `base`; a path that is
    not a LoRA directory (and not a hub id either) is refused here, naming the argument `name`."""
    if adapter == "published":
        return find_published(base).adapter
    if adapter is not None:
        from .models import looks_like_hub_id

        p = Path(adapter).expanduser()
        if p.is_dir() and not (p / "adapter_config.json").is_file():
            raise ValueError(f"{name} {adapter!r}: the directory has no adapter_config.json (expected a LoRA "
                             "adapter saved by peft, e.g. runs/NAME/adapter)")
        if not p.exists() and not looks_like_hub_id(adapter):
            raise ValueError(f"{name} {adapter!r}: no such adapter directory, and not a hub id (owner/name) "
                             "either; give a LoRA adapter directory, a hub id or 'published'")
    return adapter
