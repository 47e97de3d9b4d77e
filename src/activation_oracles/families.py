"""What differs between model families, decided from the config and the chat template, never from names:
the attention implementation a family needs, and chat templates that have no system role."""

from __future__ import annotations

import importlib.util

ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")


def text_config(config):
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def default_attn_implementation(config, device: str) -> str | None:
    """eager where attention scores are soft-capped (Gemma-2: SDPA cannot cap them, so it would compute
    another function than the model was trained with); else flash-attention 2 on a GPU that has it;
    else None: transformers' own choice (SDPA wherever the architecture supports it)."""
    if getattr(text_config(config), "attn_logit_softcapping", None):
        return "eager"
    if str(device).startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def check_attn_implementation(name: str | None, field: str = "attn_implementation") -> str | None:
    if name is not None and name not in ATTENTION_IMPLEMENTATIONS:
        raise ValueError(f"{field}={name!r}: use one of {', '.join(ATTENTION_IMPLEMENTATIONS)} or None (family default)")
    if name == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ImportError(f"{field}=flash_attention_2 needs the flash-attn package: pip install flash-attn")
    return name


# ----------------------------------------------------------------------------- chat templates

_SYSTEM_SUPPORT: dict[str, bool] = {}


def supports_system_role(tokenizer) -> bool:
    """Whether the chat template renders a system turn (Gemma-2's and Mistral v0.1's raise instead).
    Found by rendering one, cached per template text."""
    template = str(tokenizer.chat_template)
    if template not in _SYSTEM_SUPPORT:
        probe = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
        try:
            tokenizer.apply_chat_template(probe, tokenize=False, add_generation_prompt=True)
            ok = True
        except Exception:  # noqa: BLE001 - a template's raise_exception surfaces as a jinja TemplateError
            ok = False
        _SYSTEM_SUPPORT[template] = ok
    return _SYSTEM_SUPPORT[template]


def fold_system(messages: list[dict]) -> list[dict]:
    """The system text folded into the first user turn, separated by a blank line: the form Google
    documents for Gemma and that Gemma-3's own template writes (system + "\\n\\n" + user)."""
    if not messages or messages[0].get("role") != "system":
        return messages
    system, rest = messages[0]["content"], list(messages[1:])
    if not rest or rest[0].get("role") != "user":
        return [{"role": "user", "content": system}, *rest]
    return [{**rest[0], "content": system + "\n\n" + rest[0]["content"]}, *rest[1:]]


def messages_for(tokenizer, messages: list[dict]) -> list[dict]:
    """`messages` as this tokenizer's template accepts them (system folded where it has no system role)."""
    if messages and messages[0].get("role") == "system" and not supports_system_role(tokenizer):
        return fold_system(messages)
    return messages
