"""`Oracle`: load a base model plus an oracle adapter and ask it questions about activations."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .adapters import load_lora, verify_adapter_files
from .agreement import agree, normalize_answer
from .checks import check_int, check_number
from .hooks import collect_activations
from .models import (
    DEFAULT_MODEL, check_layer, hidden_size, layer_from_percent, load_model, max_positions, model_device, num_layers,
    unwrap,
)
from .oracle_config import read_ao_config
from .prompt import chat_ids, format_oracle_prompt
from .registry import resolve_adapter
from .steering import choice_probs, generate_steered, left_pad

MODES = ("full", "tokens", "segment")
SOURCES = ("orig", "lora", "diff")
CONTROLS = ("no_injection", "unrelated")
# What `control="unrelated"` reads when no `unrelated_context` is given: plain, topic-free prose.
NEUTRAL_TEXT = ("The kettle clicked off in the kitchen. Outside, the afternoon stayed grey and still, and now "
                "and then a bus went by at the end of the street. A cat slept on the windowsill.")


@dataclass
class OracleAnswer:
    """One answer of `Oracle.ask` or `Oracle.score`. The optional fields are filled by the options that
    compute them and are None otherwise."""

    text: str  # score(): the most probable choice
    question: str
    context_index: int
    positions: list[int]
    layer: int  # the source layer (the first one of a multi-layer query)
    mode: str = "full"
    sample_index: int = 0
    control: str | None = None  # None: the context's activations; "no_injection" | "unrelated": a control
    probs: dict[str, float] | None = None  # score(): choice -> probability (sums to 1)
    choice_mass: float | None = None  # score(): full-vocabulary probability of the choices' first tokens
    logprob: float | None = None  # return_logprobs: log-probability of the answer's tokens (end token included)
    tokens: list[str] | None = None  # return_logprobs: the answer's tokens
    token_logprobs: list[float] | None = None  # return_logprobs: one per token
    agreement: float | None = None  # num_samples > 1: share of the query's samples that match this answer
    layers: list[int] | None = None  # all source layers, in prompt order ([layer] for a single-layer query)

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
    vectors: torch.Tensor | None = field(default=None, repr=False)  # None: nothing injected


# ----------------------------------------------------------------------------- argument parsing


ROLES = ("system", "user", "assistant", "tool")
CONTEXT_TYPES = "text, a messages list, token ids, a [L, D] tensor of vectors, or a list of these"


def _is_messages(x) -> bool:
    return isinstance(x, list) and len(x) > 0 and all(isinstance(m, dict) for m in x)


def _is_token_ids(x) -> bool:
    if isinstance(x, torch.Tensor):
        return x.dim() == 1 and not x.is_floating_point()
    return isinstance(x, list) and len(x) > 0 and all(isinstance(t, int) and not isinstance(t, bool) for t in x)


def check_messages(messages: list[dict], name: str = "context") -> None:
    """A chat: every message a {"role": one of ROLES, "content": str} mapping."""
    for i, m in enumerate(messages):
        if "role" not in m or "content" not in m:
            raise ValueError(f"{name}: message {i} needs 'role' and 'content' keys, got {sorted(m)}")
        if m["role"] not in ROLES:
            raise ValueError(f"{name}: message {i} has role {m['role']!r}; use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise TypeError(f"{name}: message {i}'s content must be a string, not {type(m['content']).__name__}")


def check_choices(choices) -> tuple[str, ...]:
    """`choices` of `score`: a sequence of at least two different non-empty strings."""
    if isinstance(choices, str):
        raise TypeError(f"choices must be a sequence of strings such as ('Yes', 'No'), not the string {choices!r} "
                        "(which would be scored character by character)")
    try:
        out = tuple(choices)
    except TypeError:
        raise TypeError(f"choices must be a sequence of strings such as ('Yes', 'No'), not {choices!r}") from None
    if not all(isinstance(c, str) for c in out):
        raise TypeError(f"choices must all be strings, got {out!r}")
    if len(out) < 2 or any(not c.strip() for c in out) or len(set(out)) != len(out):
        raise ValueError(f"choices={out!r}: give at least two different non-empty strings, e.g. ('Yes', 'No')")
    return out


def _is_single_context(x) -> bool:
    if isinstance(x, str) or _is_messages(x) or _is_token_ids(x):
        return True
    return isinstance(x, torch.Tensor) and x.dim() == 2


ALIGNS = ("proportional", "start", "end")


def map_positions(positions: list[int], length: int, other_length: int, align: str = "proportional") -> list[int]:
    """Where positions of a `length`-token context fall in an `other_length`-token one (the unrelated
    control). "proportional": first to first and last to last (a one-token context maps to the last);
    "start": the same index from the start; "end": the same index from the end (e.g. the assistant
    start-of-turn token of two chat prompts). "start" and "end" clip to the other context."""
    if align == "start":
        return [min(p, other_length - 1) for p in positions]
    if align == "end":
        return [max(0, p - length + other_length) for p in positions]
    if align != "proportional":
        raise ValueError(f"unrelated_align={align!r}: use one of {', '.join(ALIGNS)}")
    if length == 1:
        return [other_length - 1] * len(positions)
    return [round(p * (other_length - 1) / (length - 1)) for p in positions]


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
        bounds = (spec.start, spec.stop, spec.step)
        if not all(x is None or (isinstance(x, int) and not isinstance(x, bool)) for x in bounds):
            raise TypeError(f"positions={spec}: a slice of integers")
        out = list(range(length))[spec]
        if not out:
            raise ValueError(f"positions={spec} selects nothing from a context of {length} tokens")
        return out
    if isinstance(spec, bool) or not isinstance(spec, (int, list, tuple, range)):
        raise TypeError(f"positions must be 'all', 'last', an int, a slice or a list of ints, not {spec!r}")
    items = [spec] if isinstance(spec, int) else list(spec)
    if not items:
        raise ValueError("positions is an empty list")
    out = []
    for p in items:
        if isinstance(p, bool) or not isinstance(p, int):
            raise TypeError(f"positions: {p!r} is not an integer")
        if not -length <= p < length:
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
        self._adapter_off = 0

    @classmethod
    def from_pretrained(cls, base: str = DEFAULT_MODEL, adapter: str | None = None, *, hook_layer=None, **load_kwargs):
        """Load `base` (see `load_model`: dtype, device, quantization, and for models larger than one GPU
        device_map="auto" with max_memory={...}) and the oracle LoRA `adapter`: a directory, a hub id,
        "published" (the authors' oracle for this base model, see `registry.PUBLISHED`) or None (the
        untrained, Patchscopes-style oracle). The adapter's ao_config.json (or the reference's config
        files) sets the hook layer and, for a multi-layer oracle, the source layers."""
        if not isinstance(base, str) or not base.strip():
            raise TypeError(f"base must be a model spec string (an embedded name such as {DEFAULT_MODEL!r}, a "
                            f"directory, a .gguf file or a hub id), not {base!r}")
        if adapter is not None and not isinstance(adapter, str):
            raise TypeError(f"adapter must be a directory, a hub id, 'published' or None, not {adapter!r}")
        adapter = resolve_adapter(base, adapter)
        if adapter is not None:
            verify_adapter_files(adapter, f"adapter {adapter!r}")  # before the model loads
        model, tok = load_model(base, **load_kwargs)
        config = read_ao_config(adapter)
        if adapter is not None:
            model = load_lora(model, adapter, adapter_name="oracle", label=f"adapter {adapter!r}")
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
        if not isinstance(adapter, str) or not adapter:
            raise TypeError(f"target_adapter must be a LoRA directory or hub id, not {adapter!r}")
        name = f"target{len(self._target_adapters)}"
        self.model = load_lora(self.model, adapter, adapter_name=name, label=f"target_adapter {adapter!r}")
        self.model.eval()
        self._target_adapters[adapter] = name
        return name

    @contextlib.contextmanager
    def target_weights(self, adapter: str | None):
        """The target model inside the block (yields the model): the target LoRA `adapter` active
        (loaded on first use), or with None the base model, every adapter off. The oracle's adapter
        is active again afterwards."""
        if adapter is None:
            with self.model.disable_adapter() if self._is_peft() else contextlib.nullcontext():
                yield self.model
            return
        self.model.set_adapter(self.load_target_adapter(adapter))
        try:
            yield self.model
        finally:
            if self.has_oracle_adapter:
                self.model.set_adapter("oracle")

    @contextlib.contextmanager
    def adapter_disabled(self):
        """Within this block the oracle answers with its adapter off: the untrained, Patchscopes-style
        oracle (the same prompts and injection into the base weights), e.g. as an audit baseline."""
        self._adapter_off += 1
        try:
            yield self
        finally:
            self._adapter_off -= 1

    @contextlib.contextmanager
    def _oracle_weights(self):
        if self.has_oracle_adapter and not self._adapter_off:
            self.model.set_adapter("oracle")
            yield
        elif self._is_peft():
            with self.model.disable_adapter():
                yield
        else:
            yield

    # ------------------------------------------------------------------ activations

    def _tokenize_context(self, ctx, raw: bool, name: str = "context") -> _Context:
        tok = self.tokenizer
        if isinstance(ctx, str):
            if not ctx.strip():
                raise ValueError(f"{name} is an empty string")
            if raw:
                return self._checked_ids(list(tok(ctx)["input_ids"]), name)
            return self._checked_ids(chat_ids(tok, [{"role": "user", "content": ctx}], add_generation_prompt=True),
                                     name)
        if _is_messages(ctx):
            check_messages(ctx, name)
            gen = ctx[-1].get("role") == "user"
            return self._checked_ids(chat_ids(tok, ctx, add_generation_prompt=gen), name)
        if _is_token_ids(ctx):
            ids = [int(t) for t in ctx]
            vocab = unwrap(self.model).get_input_embeddings().num_embeddings
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise ValueError(f"{name}: token id {bad[0]} is outside this model's vocabulary (0..{vocab - 1})")
            return self._checked_ids(ids, name)
        if isinstance(ctx, torch.Tensor) and ctx.dim() == 2 and ctx.is_floating_point():
            return _Context(vectors=self._checked_vectors(ctx, name))
        if isinstance(ctx, (list, tuple)) and len(ctx) == 0:
            raise ValueError(f"{name} is empty: give {CONTEXT_TYPES}")
        raise TypeError(f"{name} must be {CONTEXT_TYPES}; got {type(ctx).__name__}"
                        + (f" of shape {list(ctx.shape)}" if isinstance(ctx, torch.Tensor) else ""))

    def _checked_ids(self, ids: list[int], name: str) -> _Context:
        """Token contexts no longer than the model's positions (a longer one would be read past what the
        model was trained on, slowly and wrongly)."""
        limit = max_positions(self.model)
        if limit is not None and len(ids) > limit:
            raise ValueError(f"{name} has {len(ids):,} tokens but this model reads at most {limit:,} positions: "
                             "shorten it (or split it and ask about each part)")
        return _Context(ids=ids)

    def _checked_vectors(self, vectors: torch.Tensor, name: str) -> torch.Tensor:
        d = hidden_size(self.model)
        if vectors.shape[1] != d:
            raise ValueError(f"{name} vectors have width {vectors.shape[1]} but the model's hidden size is {d}")
        if vectors.shape[0] == 0:
            raise ValueError(f"{name} holds no vectors")
        finite = torch.isfinite(vectors).all(dim=1)
        if not bool(finite.all()):
            raise ValueError(f"{name}: vector {int((~finite).nonzero()[0])} holds NaN or infinite values")
        zero = vectors.abs().amax(dim=1) == 0
        if bool(zero.any()):
            raise ValueError(f"{name}: vector {int(zero.nonzero()[0])} is all zeros; the injection scales each "
                             "vector to the activation's norm, so it needs a direction")
        return vectors

    def _collect(self, contexts: list[_Context], layers: list[int], source: str, target_adapter: str | None,
                 batch_size: int) -> dict[int, dict[int, torch.Tensor]]:
        """{context index: {layer: [L_i, D]}} for every context: token contexts in forwards of at most
        `batch_size` contexts (similar lengths together, to pad little), precomputed vectors as given."""
        out = {i: {layers[0]: c.vectors} for i, c in enumerate(contexts) if c.vectors is not None}
        todo = sorted((i for i, c in enumerate(contexts) if c.ids is not None), key=lambda i: -contexts[i].length)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            acts, offsets = self._collect_batch([contexts[i].ids for i in chunk], layers, source, target_adapter)
            for row, i in enumerate(chunk):
                out[i] = {layer: acts[layer][row, offsets[row] :] for layer in layers}
        return out

    def _collect_batch(self, seqs, layers, source, target_adapter):
        ids, mask, offsets = left_pad(seqs, self.tokenizer.pad_token_id)
        dev = model_device(self.model)
        ids, mask = ids.to(dev), mask.to(dev)

        def run(with_target: bool):
            if not with_target:
                return collect_activations(self.model, ids, mask, layers=layers)
            with self.target_weights(target_adapter) as model:
                return collect_activations(model, ids, mask, layers=layers, use_adapter=True)

        if source == "orig":
            return run(False), offsets
        if source == "lora":
            return run(True), offsets
        tuned, base = run(True), run(False)
        return {layer: tuned[layer].float() - base[layer].float() for layer in layers}, offsets

    def text_positions(self, text: str, *, raw: bool = False) -> list[int]:
        """The positions of `text`'s own tokens in what `ask(text, raw=raw)` reads, the chat template's tokens
        (system prompt, role markers, generation prompt) left out, as `ao view` shows them. `ao ask` reads
        these by default: `positions=[p[i] for i in ...]` picks among them."""
        from .view.tokens import context_tokens

        if not isinstance(text, str) or not text.strip():
            raise ValueError("context: text positions need a non-empty string")
        shown = context_tokens(self.tokenizer, text, raw=raw).shown
        if not shown:
            raise ValueError("context: none of its tokens is the text itself (the chat template rewrote it); "
                             "read the whole prompt instead (ao ask --include-template)")
        return shown

    # ------------------------------------------------------------------ asking

    def ask(
        self,
        context,
        question,
        *,
        layer: int | None = None,
        layers: list[int] | None = None,
        layer_percent: float | None = None,
        positions="all",
        target_adapter: str | None = None,
        source: str = "orig",
        max_new_tokens: int = 40,
        do_sample: bool = False,
        temperature: float = 1.0,
        num_samples: int = 1,
        mode: str = "full",
        raw: bool = False,
        coefficient: float | None = None,
        batch_size: int = 64,
        control: str | None = None,
        unrelated_context=None,
        unrelated_align: str = "proportional",
        return_logprobs: bool = False,
        matcher: Callable[[str], Hashable] | None = None,
        group_samples: bool = False,
    ) -> list[OracleAnswer]:
        """Ask `question` about the activations of `context`; one answer per query, in order.

        Source layer: `layer` (a block index), `layer_percent` (of the depth), or `layers=[l1, l2, ...]`
        for a multi-layer oracle (one "Layer: l" block of placeholders per layer, the same positions read
        at each); by default the layers the adapter's ao_config.json names for a multi-layer oracle, else
        50 % of the depth.

        `control="no_injection"` answers the same prompts with nothing injected; `control="unrelated"`
        injects the activations of `unrelated_context` (default `NEUTRAL_TEXT`) at the positions that
        `map_positions` assigns (`unrelated_align`: proportional, start or end). Contexts are read and
        answers generated `batch_size` at a time.
        `return_logprobs` fills `logprob`, `tokens` and `token_logprobs`. With `num_samples > 1` each
        answer's `agreement` is the share of its query's samples with the same `matcher(text)` (default
        `normalize_answer`); `group_samples=True` returns one answer per distinct one instead, most
        agreed first."""
        check_int(num_samples, "num_samples", 1)
        check_int(max_new_tokens, "max_new_tokens", 1)
        if do_sample:
            check_number(temperature, "temperature", above=0)
        if num_samples > 1 and not do_sample:
            raise ValueError("num_samples > 1 needs do_sample=True (greedy answers would be identical)")
        coefficient = self._coefficient(coefficient)
        layers, queries = self._prepare(context, question, layer=layer, layers=layers, layer_percent=layer_percent,
                                       positions=positions, target_adapter=target_adapter, source=source,
                                       num_samples=num_samples, mode=mode, raw=raw, batch_size=batch_size,
                                       control=control, unrelated_context=unrelated_context,
                                       unrelated_align=unrelated_align)
        answers = []
        for start in range(0, len(queries), batch_size):
            chunk = queries[start : start + batch_size]
            gen = self._generate(chunk, layers, max_new_tokens, do_sample, temperature, coefficient, return_logprobs)
            for i, (q, text) in enumerate(zip(chunk, gen.texts)):
                a = self._answer(q, text, layers, mode, control)
                if return_logprobs:
                    a.tokens = [self.tokenizer.decode([t]) for t in gen.token_ids[i]]
                    a.token_logprobs = gen.token_logprobs[i]
                    a.logprob = float(sum(a.token_logprobs))
                answers.append(a)
        if num_samples > 1:
            answers = agree(answers, num_samples, matcher or normalize_answer, group=group_samples)
        return answers

    def score(
        self,
        context,
        question,
        choices=("Yes", "No"),
        *,
        layer: int | None = None,
        layers: list[int] | None = None,
        layer_percent: float | None = None,
        positions="all",
        target_adapter: str | None = None,
        source: str = "orig",
        mode: str = "full",
        raw: bool = False,
        coefficient: float | None = None,
        batch_size: int = 64,
        control: str | None = None,
        unrelated_context=None,
        unrelated_align: str = "proportional",
        method: str = "auto",
    ) -> list[OracleAnswer]:
        """How likely the oracle answers each of `choices`, per query (same queries and arguments as
        `ask`): `probs` maps each choice to its probability, `text` is the most probable one.
        `method`: see `steering.choice_probs` (first tokens when they differ, else whole sequences)."""
        choices = check_choices(choices)
        coefficient = self._coefficient(coefficient)
        layers, queries = self._prepare(context, question, layer=layer, layers=layers, layer_percent=layer_percent,
                                       positions=positions, target_adapter=target_adapter, source=source,
                                       num_samples=1, mode=mode, raw=raw, batch_size=batch_size,
                                       control=control, unrelated_context=unrelated_context,
                                       unrelated_align=unrelated_align)
        answers = []
        for start in range(0, len(queries), batch_size):
            chunk = queries[start : start + batch_size]
            prompts = self._prompts(chunk, layers)
            with self._oracle_weights():
                s = choice_probs(self.model, self.tokenizer, [p.input_ids for p in prompts],
                                 [p.positions for p in prompts], _vectors(chunk), choices=choices,
                                 hook_layer=self.hook_layer, coefficient=coefficient, method=method)
            for q, row, mass in zip(chunk, s.probs.tolist(), s.mass.tolist()):
                a = self._answer(q, choices[max(range(len(row)), key=row.__getitem__)], layers, mode, control)
                a.probs, a.choice_mass = dict(zip(choices, row)), mass
                answers.append(a)
        return answers

    def _coefficient(self, coefficient: float | None) -> float:
        """The injection scale: as given, else the adapter's training value (ao_config.json), else 1."""
        if coefficient is None:
            return float(self.config.get("coefficient", 1.0))
        return check_number(coefficient, "coefficient")

    @staticmethod
    def _answer(q: _Query, text: str, layers: list[int], mode: str, control) -> OracleAnswer:
        return OracleAnswer(text=text, question=q.question, context_index=q.context_index, positions=q.positions,
                            layer=layers[0], mode=mode, sample_index=q.sample_index, control=control,
                            layers=list(layers))

    def _source_layers(self, layer, layers, layer_percent) -> list[int]:
        """`layers` or `layer` (a block index, which overrides `layer_percent`); else the adapter's layers
        for a multi-layer oracle; else `layer_percent` (default 50) of the depth."""
        if layers is not None and layer is not None:
            raise ValueError("give layer= (one source layer) or layers=[...] (several), not both")
        if layers is not None:
            out = [check_layer(self.model, x, "layers") for x in layers]
            if not out or len(set(out)) != len(out):
                raise ValueError(f"layers={list(layers)!r}: give distinct block indices")
            return out
        if layer is not None:
            return [check_layer(self.model, layer)]
        if layer_percent is None and self.config.get("multi_layer"):
            return [check_layer(self.model, int(x), "layers (from the adapter's config)") for x in self.config["layers"]]
        return [layer_from_percent(self.model, 50 if layer_percent is None else layer_percent)]

    def _prepare(self, context, question, *, layer, layers, layer_percent, positions, target_adapter, source,
                 num_samples, mode, raw, batch_size, control, unrelated_context,
                 unrelated_align) -> tuple[list[int], list[_Query]]:
        """Check the arguments, read the contexts and return (source layers, queries with their vectors)."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: use one of {', '.join(MODES)}")
        if source not in SOURCES:
            raise ValueError(f"source={source!r}: use one of {', '.join(SOURCES)}")
        if source != "orig" and target_adapter is None:
            raise ValueError(f"source={source!r} reads a fine-tuned target: pass target_adapter=PATH")
        if control is not None and control not in CONTROLS:
            raise ValueError(f"control={control!r}: use None or one of {', '.join(CONTROLS)}")
        if unrelated_context is not None and control != "unrelated":
            raise ValueError("unrelated_context is only read with control='unrelated'")
        if unrelated_align not in ALIGNS:
            raise ValueError(f"unrelated_align={unrelated_align!r}: use one of {', '.join(ALIGNS)}")
        if unrelated_align != "proportional" and control != "unrelated":
            raise ValueError("unrelated_align is only read with control='unrelated'")
        check_int(batch_size, "batch_size", 1)
        layers = self._source_layers(layer, layers, layer_percent)

        if _is_single_context(context):
            raw_contexts, names = [context], ["context"]
        elif isinstance(context, (list, tuple)):
            raw_contexts = list(context)
            names = [f"context[{i}]" for i in range(len(raw_contexts))]
        else:
            raise TypeError(f"context must be {CONTEXT_TYPES}; got {type(context).__name__}"
                            + (f" of shape {list(context.shape)}" if isinstance(context, torch.Tensor) else ""))
        if not raw_contexts:
            raise ValueError("context is an empty list")
        contexts = [self._tokenize_context(c, raw, n) for c, n in zip(raw_contexts, names)]
        if len(layers) > 1 and any(c.vectors is not None for c in contexts):
            raise ValueError("a [L, D] tensor of vectors holds one layer; with layers=[...] pass text or token ids")
        pairs = self._pair_questions(len(contexts), question)
        if target_adapter is not None:
            self.load_target_adapter(target_adapter)

        queries = self._queries(contexts, pairs, positions, mode, num_samples)
        if control == "no_injection":
            return layers, queries

        def pick(acts: dict[int, torch.Tensor], positions: list[int]) -> torch.Tensor:
            return torch.cat([acts[x][positions] for x in layers])  # layer-major, as the prompt's blocks

        if control == "unrelated":
            neutral = self._tokenize_context(NEUTRAL_TEXT if unrelated_context is None else unrelated_context, raw,
                                             "unrelated_context")
            if len(layers) > 1 and neutral.vectors is not None:
                raise ValueError("unrelated_context vectors hold one layer; with layers=[...] pass text or token ids")
            src = self._collect([neutral], layers, source, target_adapter, batch_size)[0]
            for q in queries:
                where = map_positions(q.positions, contexts[q.context_index].length, neutral.length, unrelated_align)
                q.vectors = pick(src, where)
            return layers, queries
        acts = self._collect(contexts, layers, source, target_adapter, batch_size)
        for q in queries:
            q.vectors = pick(acts[q.context_index], q.positions)
        return layers, queries

    @staticmethod
    def _pair_questions(n_contexts: int, question) -> list[tuple[int, str]]:
        if isinstance(question, str):
            qs = [question]
        elif isinstance(question, (list, tuple)):
            qs = list(question)
        else:
            raise TypeError(f"question must be a string or a list of strings, not {type(question).__name__}")
        if not all(isinstance(q, str) for q in qs):
            raise TypeError(f"question must be a string or a list of strings, got {qs!r}")
        if not qs or not all(q.strip() for q in qs):
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

    def _prompts(self, queries, layers, new_tokens: int = 1):
        prompts = [format_oracle_prompt(self.tokenizer, layers=layers, num_positions=len(q.positions),
                                        question=q.question) for q in queries]
        limit = max_positions(self.model)
        longest = max(len(p.input_ids) for p in prompts)
        if limit is not None and longest + new_tokens > limit:
            k = max(len(q.positions) for q in queries)
            if longest + 1 > limit:
                raise ValueError(f"positions: {k:,} positions x {len(layers)} layer(s) make an oracle prompt of "
                                 f"{longest:,} tokens but this model reads at most {limit:,}: read fewer positions "
                                 "(e.g. a slice of the last tokens, or mode='tokens')")
            raise ValueError(f"max_new_tokens={new_tokens:,}: the oracle prompt ({longest:,} tokens) and the answer "
                             f"would exceed the {limit:,} positions this model reads; ask for at most "
                             f"{limit - longest:,} new tokens")
        return prompts

    def _generate(self, queries, layers, max_new_tokens, do_sample, temperature, coefficient, return_logprobs):
        prompts = self._prompts(queries, layers, max_new_tokens)
        with self._oracle_weights():
            return generate_steered(
                self.model, self.tokenizer, [p.input_ids for p in prompts], [p.positions for p in prompts],
                _vectors(queries), hook_layer=self.hook_layer, coefficient=coefficient,
                max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                return_logprobs=return_logprobs,
            )

    @property
    def num_layers(self) -> int:
        return num_layers(self.model)


def _vectors(queries: list[_Query]):
    """The queries' vectors, or None when none are injected (the no-injection control)."""
    return None if queries[0].vectors is None else [q.vectors for q in queries]
