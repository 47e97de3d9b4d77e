"""`Oracle`: load a base model plus an oracle adapter and ask it questions about activations."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .hooks import collect_activations, inject, position_ids_from_mask
from .models import DEFAULT_MODEL, check_layer, hidden_size, layer_from_percent, load_model, model_device, num_layers
from .prompt import chat_ids, format_oracle_prompt

AO_CONFIG = "ao_config.json"
MODES = ("full", "tokens", "segment")
SOURCES = ("orig", "lora", "diff")


@dataclass
class OracleAnswer:
    text: str
    question: str
    context_index: int
    positions: list[int]
    layer: int
    mode: str = "full"
    sample_index: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Context:
    ids: list[int] | None = None
    vectors: torch.Tensor | None = None  # precomputed [L, D]

    @property
    def length(self) -> int:
        return len(self.ids) if self.ids is not None else int(self.vectors.shape[0])


@dataclass
class _Query:
    context_index: int
    question: str
    positions: list[int]
    sample_index: int = 0
    vectors: torch.Tensor | None = field(default=None, repr=False)


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """[B, W] ids and attention mask, left-padded; and each row's offset (pads in front of it)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    offsets = []
    for row, s in enumerate(seqs):
        off = width - len(s)
        ids[row, off:] = torch.tensor(s, dtype=torch.long)
        mask[row, off:] = 1
        offsets.append(off)
    return ids, mask, offsets


def _padded_and_steered(model, tokenizer, prompt_ids, placeholder_positions, vectors, hook_layer, coefficient):
    """Left-padded prompts on the model's device and the context that injects each row's vectors at
    its (shifted) placeholders; a no-op context when `vectors` is None."""
    ids, mask, offsets = left_pad(prompt_ids, tokenizer.pad_token_id)
    dev = model_device(model)
    steer = contextlib.nullcontext()
    if vectors is not None:
        positions = [[off + p for p in ps] for off, ps in zip(offsets, placeholder_positions)]
        steer = inject(model, vectors, positions, hook_layer=hook_layer, coefficient=coefficient)
    return ids.to(dev), mask.to(dev), steer


@torch.no_grad()
def generate_answers(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    placeholder_positions: list[list[int]],
    vectors: list[torch.Tensor] | None,
    *,
    hook_layer: int = 1,
    coefficient: float = 1.0,
    max_new_tokens: int = 40,
    do_sample: bool = False,
    temperature: float = 1.0,
) -> list[str]:
    """One batched `generate` over oracle prompts, each steered at its placeholders by its vectors
    (`vectors=None`: no injection, the question alone). Uses whatever adapter is active on `model`."""
    ids, mask, steer = _padded_and_steered(model, tokenizer, prompt_ids, placeholder_positions, vectors,
                                           hook_layer, coefficient)
    gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=tokenizer.pad_token_id)
    if do_sample:
        gen_kwargs["temperature"] = temperature
    else:  # keep the model's sampling defaults from warning about being ignored
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    with steer:
        out = model.generate(input_ids=ids, attention_mask=mask, **gen_kwargs)
    return [t.strip() for t in tokenizer.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True)]


@torch.no_grad()
def next_token_logits(model, tokenizer, prompt_ids: list[list[int]], placeholder_positions: list[list[int]],
                      vectors: list[torch.Tensor] | None, *, hook_layer: int = 1, coefficient: float = 1.0):
    """[B, V] float32 logits of the first answer token of each steered prompt, from one forward."""
    ids, mask, steer = _padded_and_steered(model, tokenizer, prompt_ids, placeholder_positions, vectors,
                                           hook_layer, coefficient)
    with steer:
        return model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                     use_cache=False, logits_to_keep=1).logits[:, -1].float()


def choice_token_ids(tokenizer, choices: tuple[str, ...]) -> list[int]:
    """The first token of each choice as the assistant would start its answer with it."""
    ids = [tokenizer.encode(c, add_special_tokens=False)[0] for c in choices]
    if len(set(ids)) != len(ids):
        raise ValueError(f"choices {choices} share their first token {ids}; they cannot be told apart in one step")
    return ids


@torch.no_grad()
def choose_answers(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    placeholder_positions: list[list[int]],
    vectors: list[torch.Tensor] | None,
    *,
    choices: tuple[str, ...] = ("Yes", "No"),
    hook_layer: int = 1,
    coefficient: float = 1.0,
) -> tuple[list[str], list[bool]]:
    """Forced choice in one forward: for each prompt, the choice whose first token the oracle rates
    highest at the first answer position, and whether greedy decoding would itself start with one of
    the choices (the format check). Same injection rules as `generate_answers`, no decoding loop."""
    logits = next_token_logits(model, tokenizer, prompt_ids, placeholder_positions, vectors,
                               hook_layer=hook_layer, coefficient=coefficient)
    cids = torch.tensor(choice_token_ids(tokenizer, choices), device=logits.device)
    picked = logits[:, cids].argmax(-1).tolist()
    formatted = torch.isin(logits.argmax(-1), cids).tolist()
    return [choices[i] for i in picked], formatted


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


# ----------------------------------------------------------------------------- argument parsing


def _is_messages(x) -> bool:
    return isinstance(x, list) and len(x) > 0 and all(isinstance(m, dict) for m in x)


def _is_token_ids(x) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() == 1 and not x.is_floating_point()
    return isinstance(x, list) and len(x) > 0 and all(isinstance(t, int) for t in x)


def _is_single_context(x) -> bool:
    if isinstance(x, str) or _is_messages(x) or _is_token_ids(x):
        return True
    return isinstance(x, torch.Tensor) and x.dim() == 2


def resolve_positions(spec, length: int) -> list[int]:
    """'all' | 'last' | int | slice | list of ints (negatives count from the end) -> indices."""
    if length <= 0:
        raise ValueError("context is empty: there are no positions to read")
    if isinstance(spec, str):
        if spec == "all":
            return list(range(length))
        if spec == "last":
            return [length - 1]
        raise ValueError(f"positions={spec!r}: use 'all', 'last', an int, a slice or a list of ints")
    if isinstance(spec, slice):
        out = list(range(length))[spec]
        if not out:
            raise ValueError(f"positions={spec} selects nothing from a context of {length} tokens")
        return out
    items = [spec] if isinstance(spec, int) else list(spec)
    if not items:
        raise ValueError("positions is an empty list")
    out = []
    for p in items:
        if not isinstance(p, int) or not -length <= p < length:
            raise ValueError(f"positions: {p!r} is out of range for a context of {length} tokens")
        out.append(p % length)
    return out


class Oracle:
    """An oracle model (base + optional LoRA adapter) that reads activations of a target model.

    With `adapter=None` this is the untrained, Patchscopes-style baseline: the same injection into
    the plain base model.
    """

    def __init__(self, model, tokenizer, *, hook_layer: int = 1, has_oracle_adapter: bool = False, config=None):
        self.model = model
        self.tokenizer = tokenizer
        self.hook_layer = check_layer(model, hook_layer, "hook_layer")
        self.has_oracle_adapter = has_oracle_adapter
        self.config = config or {}
        self._target_adapters: dict[str, str] = {}

    @classmethod
    def from_pretrained(cls, base: str = DEFAULT_MODEL, adapter: str | None = None, *, hook_layer=None, **load_kwargs):
        model, tok = load_model(base, **load_kwargs)
        config = read_ao_config(adapter)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, adapter, adapter_name="oracle", is_trainable=False)
            model.eval()
        hook = hook_layer if hook_layer is not None else int(config.get("hook_layer", 1))
        return cls(model, tok, hook_layer=hook, has_oracle_adapter=adapter is not None, config=config)

    # ------------------------------------------------------------------ adapters

    def _is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def load_target_adapter(self, adapter: str) -> str:
        """Load a LoRA of the *target* model (e.g. a fine-tuned secret-keeper) beside the oracle's."""
        if adapter in self._target_adapters:
            return self._target_adapters[adapter]
        name = f"target{len(self._target_adapters)}"
        if self._is_peft():
            self.model.load_adapter(adapter, adapter_name=name, is_trainable=False)
        else:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter, adapter_name=name, is_trainable=False)
        self.model.eval()
        self._target_adapters[adapter] = name
        return name

    @contextlib.contextmanager
    def _oracle_weights(self):
        if self.has_oracle_adapter:
            self.model.set_adapter("oracle")
            yield
        elif self._is_peft():
            with self.model.disable_adapter():
                yield
        else:
            yield

    # ------------------------------------------------------------------ activations

    def _tokenize_context(self, ctx, raw: bool) -> _Context:
        tok = self.tokenizer
        if isinstance(ctx, str):
            if not ctx.strip():
                raise ValueError("context is an empty string")
            if raw:
                return _Context(ids=list(tok(ctx)["input_ids"]))
            return _Context(ids=chat_ids(tok, [{"role": "user", "content": ctx}], add_generation_prompt=True))
        if _is_messages(ctx):
            gen = ctx[-1].get("role") == "user"
            return _Context(ids=chat_ids(tok, ctx, add_generation_prompt=gen))
        if _is_token_ids(ctx):
            return _Context(ids=[int(t) for t in ctx])
        if isinstance(ctx, torch.Tensor) and ctx.dim() == 2 and ctx.is_floating_point():
            d = hidden_size(self.model)
            if ctx.shape[1] != d:
                raise ValueError(f"context vectors have width {ctx.shape[1]} but the model's hidden size is {d}")
            if ctx.shape[0] == 0:
                raise ValueError("context holds no vectors")
            return _Context(vectors=ctx)
        raise ValueError(
            "context must be text, a messages list, token ids, or a [L, D] tensor of vectors "
            f"(got {type(ctx).__name__}{' (empty)' if hasattr(ctx, '__len__') and len(ctx) == 0 else ''})"
        )

    def _collect(self, contexts: list[_Context], layer: int, source: str, target_adapter: str | None):
        """[L_i, D] activations per token context, from as few forwards as the source needs."""
        todo = [i for i, c in enumerate(contexts) if c.ids is not None]
        if not todo:
            return {}
        ids, mask, offsets = left_pad([contexts[i].ids for i in todo], self.tokenizer.pad_token_id)
        dev = model_device(self.model)
        ids, mask = ids.to(dev), mask.to(dev)

        def run(with_target: bool):
            if not with_target:
                return collect_activations(self.model, ids, mask, layers=[layer])[layer]
            self.model.set_adapter(self._target_adapters[target_adapter])
            try:
                return collect_activations(self.model, ids, mask, layers=[layer], use_adapter=True)[layer]
            finally:
                if self.has_oracle_adapter:
                    self.model.set_adapter("oracle")

        if source == "orig":
            acts = run(False)
        elif source == "lora":
            acts = run(True)
        else:
            acts = run(True).float() - run(False).float()
        return {i: acts[row, offsets[row] :] for row, i in enumerate(todo)}

    # ------------------------------------------------------------------ asking

    def ask(
        self,
        context,
        question,
        *,
        layer: int | None = None,
        layer_percent: float = 50,
        positions="all",
        target_adapter: str | None = None,
        source: str = "orig",
        max_new_tokens: int = 40,
        do_sample: bool = False,
        temperature: float = 1.0,
        num_samples: int = 1,
        mode: str = "full",
        raw: bool = False,
        coefficient: float = 1.0,
        batch_size: int = 256,
    ) -> list[OracleAnswer]:
        """Ask `question` about the activations of `context` at `layer`; one answer per query, in order."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: use one of {', '.join(MODES)}")
        if source not in SOURCES:
            raise ValueError(f"source={source!r}: use one of {', '.join(SOURCES)}")
        if source != "orig" and target_adapter is None:
            raise ValueError(f"source={source!r} reads a fine-tuned target: pass target_adapter=PATH")
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be at least 1")
        if num_samples > 1 and not do_sample:
            raise ValueError("num_samples > 1 needs do_sample=True (greedy answers would be identical)")
        layer = check_layer(self.model, layer) if layer is not None else layer_from_percent(self.model, layer_percent)

        raw_contexts = [context] if _is_single_context(context) else list(context)
        if not raw_contexts:
            raise ValueError("context is an empty list")
        contexts = [self._tokenize_context(c, raw) for c in raw_contexts]
        pairs = self._pair_questions(len(contexts), question)
        if target_adapter is not None:
            self.load_target_adapter(target_adapter)

        queries = self._queries(contexts, pairs, positions, mode, num_samples)
        acts = self._collect(contexts, layer, source, target_adapter)
        for q in queries:
            c = contexts[q.context_index]
            src = c.vectors if c.vectors is not None else acts[q.context_index]
            q.vectors = src[q.positions]
        texts = []
        for start in range(0, len(queries), batch_size):
            texts += self._generate(
                queries[start : start + batch_size], layer, max_new_tokens, do_sample, temperature, coefficient
            )
        return [
            OracleAnswer(text=t, question=q.question, context_index=q.context_index, positions=q.positions,
                         layer=layer, mode=mode, sample_index=q.sample_index)
            for q, t in zip(queries, texts)
        ]

    @staticmethod
    def _pair_questions(n_contexts: int, question) -> list[tuple[int, str]]:
        if isinstance(question, str):
            qs = [question]
        else:
            qs = list(question)
        if not qs or not all(isinstance(q, str) and q.strip() for q in qs):
            raise ValueError("question must be a non-empty string or a list of non-empty strings")
        if len(qs) == 1:
            return [(i, qs[0]) for i in range(n_contexts)]
        if n_contexts == 1:
            return [(0, q) for q in qs]
        if len(qs) != n_contexts:
            raise ValueError(f"question: got {len(qs)} questions for {n_contexts} contexts; give 1 or {n_contexts}")
        return list(enumerate(qs))

    @staticmethod
    def _queries(contexts, pairs, positions, mode, num_samples) -> list[_Query]:
        out = []
        for ci, q in pairs:
            sel = resolve_positions(positions, contexts[ci].length)
            if mode == "tokens":
                groups = [[p] for p in sel]
            elif mode == "segment":
                groups = [list(range(min(sel), max(sel) + 1))]
            else:
                groups = [sel]
            for g in groups:
                out += [_Query(ci, q, g, s) for s in range(num_samples)]
        return out

    def _generate(self, queries, layer, max_new_tokens, do_sample, temperature, coefficient) -> list[str]:
        prompts = [format_oracle_prompt(self.tokenizer, layer=layer, num_positions=len(q.positions),
                                        question=q.question) for q in queries]
        with self._oracle_weights():
            return generate_answers(
                self.model, self.tokenizer, [p.input_ids for p in prompts], [p.positions for p in prompts],
                [q.vectors for q in queries], hook_layer=self.hook_layer, coefficient=coefficient,
                max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
            )

    @property
    def num_layers(self) -> int:
        return num_layers(self.model)
