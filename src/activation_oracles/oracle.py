"""`Oracle`: load a base model plus an oracle adapter and ask it questions about activations."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .hooks import collect_activations
from .models import DEFAULT_MODEL, check_layer, hidden_size, layer_from_percent, load_model, model_device, num_layers
from .oracle_config import read_ao_config
from .prompt import chat_ids, format_oracle_prompt
from .steering import generate_answers, left_pad

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


def parse_positions(text: str):
    """A positions spec from text: 'all' | 'last' | N | A:B (Python slice, negatives from the end) | N,M,..."""
    text = text.strip()
    if text in ("all", "last"):
        return text
    try:
        if ":" in text:
            parts = [int(p) if p else None for p in text.split(":")]
            if len(parts) > 3:
                raise ValueError
            return slice(*parts)
        if "," in text:
            return [int(p) for p in text.split(",") if p]
        return int(text)
    except ValueError:
        raise ValueError(f"--positions {text!r}: use all, last, N, A:B or N,M,...") from None


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
