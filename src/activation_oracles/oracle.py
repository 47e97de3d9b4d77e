"""`Oracle`: load a base model plus an oracle adapter and ask it questions about activations."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .adapters import load_lora, verify_adapter_files
from .agreement import agree, normalize_answer
from .checks import check_int, check_number
from .models import DEFAULT_MODEL, check_layer, hidden_size, layer_from_percent, load_model, max_positions, num_layers, unwrap
from .oracle_config import read_ao_config
from .prompt import chat_ids, format_oracle_prompt
from .registry import resolve_adapter
from .steering import choice_probs, collect_padded, generate_steered, resolve_choice_method

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


@dataclass
class QueryPlan:
    """One `ask`/`score`/`collect` call checked and its contexts tokenized, before any forward: what the
    `check` of `Oracle.ask_many`/`score_many`/`collect_many` sees (a server refuses costly calls there)."""

    layers: list[int]
    contexts: list[_Context]
    queries: list[_Query]
    mode: str = "full"
    source: str = "orig"
    target_adapter: str | None = None
    control: str | None = None
    neutral: _Context | None = None  # control="unrelated": the context read instead
    unrelated_align: str = "proportional"

    @property
    def context_tokens(self) -> int:
        """Tokens of the contexts to read (the unrelated control's context included)."""
        return sum(c.length for c in self.contexts) + (self.neutral.length if self.neutral is not None else 0)

    @property
    def positions(self) -> int:
        """Positions read over all queries (one query per position in mode "tokens", per question, per sample)."""
        return sum(len(q.positions) for q in self.queries)

    def _read_contexts(self) -> list[_Context]:
        """The contexts whose activations the queries inject (none for the no-injection control)."""
        if self.control == "no_injection":
            return []
        return [self.neutral] if self.control == "unrelated" else self.contexts

    def _attach(self, acts: list[dict[int, torch.Tensor]]) -> None:
        """Give each query its vectors from the activations of `_read_contexts()`, layer-major as the
        prompt's placeholder blocks."""
        def pick(src: dict[int, torch.Tensor], positions: list[int]) -> torch.Tensor:
            return torch.cat([src[x][positions] for x in self.layers])

        for q in self.queries:
            if self.control == "unrelated":
                where = map_positions(q.positions, self.contexts[q.context_index].length, self.neutral.length,
                                      self.unrelated_align)
                q.vectors = pick(acts[0], where)
            else:
                q.vectors = pick(acts[q.context_index], q.positions)


@dataclass
class ContextActivations:
    """What `Oracle.collect` read from one context: its token ids, the positions read and, per source
    layer, their residual-stream vectors [len(positions), D]."""

    context_index: int
    ids: list[int]
    positions: list[int]
    layers: dict[int, torch.Tensor] = field(repr=False)


def _each(idx: list[int], run: Callable[[list[int]], None], results: list) -> None:
    """run(idx) for several calls at once; when that raises, each call on its own, so a failing call fails
    alone (its exception is its result) and the others are still answered."""
    try:
        run(idx)
    except Exception as e:  # noqa: BLE001 - handed to the caller of that call
        if len(idx) == 1:
            results[idx[0]] = e
        else:
            for i in idx:
                _each([i], run, results)


def _raise_or_return(result):
    if isinstance(result, BaseException):
        raise result
    return result


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
        out = {i: dict.fromkeys(layers, c.vectors) for i, c in enumerate(contexts) if c.vectors is not None}
        todo = sorted((i for i, c in enumerate(contexts) if c.ids is not None), key=lambda i: -contexts[i].length)
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            acts, offsets = self._collect_batch([contexts[i].ids for i in chunk], layers, source, target_adapter)
            for row, i in enumerate(chunk):
                out[i] = {layer: acts[layer][row, offsets[row] :] for layer in layers}
        return out

    def _collect_jobs(self, jobs: list[tuple[str, str | None, list[int], list[_Context]]],
                      batch_size: int) -> list[list[dict[int, torch.Tensor]]]:
        """The activations of several calls' contexts, per job (source, target adapter, layers, contexts):
        jobs with the same source and target adapter are read in shared forwards over the union of their
        layers (a forward stops after the deepest), similar lengths together."""
        out: list = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for j, (source, target, _, _) in enumerate(jobs):
            groups.setdefault((source, target), []).append(j)
        for (source, target), js in groups.items():
            layers = sorted({x for j in js for x in jobs[j][2]})
            acts = self._collect([c for j in js for c in jobs[j][3]], layers, source, target, batch_size)
            start = 0
            for j in js:
                n = len(jobs[j][3])
                out[j] = [acts[start + i] for i in range(n)]
                start += n
        return out

    def _collect_batch(self, seqs, layers, source, target_adapter):
        pad = self.tokenizer.pad_token_id

        def run(with_target: bool):
            if not with_target:
                return collect_padded(self.model, seqs, pad, layers=layers)
            with self.target_weights(target_adapter) as model:
                return collect_padded(model, seqs, pad, layers=layers, use_adapter=True)

        if source == "orig":
            return run(False)
        if source == "lora":
            return run(True)
        (tuned, offsets), (base, _) = run(True), run(False)
        return {layer: tuned[layer].float() - base[layer].float() for layer in layers}, offsets

    def text_positions(self, text: str, *, raw: bool = False) -> list[int]:
        """The positions of `text`'s own tokens in what `ask(text, raw=raw)` reads, the chat template's tokens
        (system prompt, role markers, generation prompt) left out, as `ao view` shows them. `ao ask` reads
        these by default: `positions=[p[i] for i in ...]` picks among them."""
        from .tokens import context_tokens

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
        call = dict(context=context, question=question, layer=layer, layers=layers, layer_percent=layer_percent,
                    positions=positions, target_adapter=target_adapter, source=source,
                    max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature,
                    num_samples=num_samples, mode=mode, raw=raw, coefficient=coefficient, control=control,
                    unrelated_context=unrelated_context, unrelated_align=unrelated_align,
                    return_logprobs=return_logprobs, matcher=matcher, group_samples=group_samples)
        return _raise_or_return(self.ask_many([call], batch_size=batch_size)[0])

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
        call = dict(context=context, question=question, choices=choices, layer=layer, layers=layers,
                    layer_percent=layer_percent, positions=positions, target_adapter=target_adapter, source=source,
                    mode=mode, raw=raw, coefficient=coefficient, control=control,
                    unrelated_context=unrelated_context, unrelated_align=unrelated_align, method=method)
        return _raise_or_return(self.score_many([call], batch_size=batch_size)[0])

    def collect(
        self,
        context,
        *,
        layer: int | None = None,
        layers: list[int] | None = None,
        layer_percent: float | None = None,
        positions="all",
        raw: bool = False,
        source: str = "orig",
        target_adapter: str | None = None,
        batch_size: int = 64,
    ) -> list[ContextActivations]:
        """The residual-stream vectors the oracle would read from `context` (the same contexts, layers,
        positions and sources as `ask`), one `ContextActivations` per context, in order."""
        call = dict(context=context, layer=layer, layers=layers, layer_percent=layer_percent, positions=positions,
                    raw=raw, source=source, target_adapter=target_adapter)
        return _raise_or_return(self.collect_many([call], batch_size=batch_size)[0])

    # ------------------------------------------------------------------ many calls at once

    def ask_many(self, calls: Sequence[dict], *, batch_size: int = 64,
                 check: Callable[[QueryPlan], None] | None = None) -> list:
        """`ask` for several calls at once, each a dict of `ask`'s arguments (context and question
        included, batch_size not): every call's contexts are read in shared forwards (`collect_many`) and
        the prompts of calls with the same decoding settings are generated together, `batch_size` at a
        time. One entry per call, in order: its answers, or the exception it raised on its own (the other
        calls are answered all the same). `check(plan)` runs on each call once it is read and before any
        forward; what it raises is that call's result (a server's limits).

        `ask` is this with one call, so an answer here equals `ask`'s for the same call up to the float
        rounding of padding it beside other prompts."""
        _check_batch_size(batch_size)
        results: list = [None] * len(calls)
        plans, keys, extra = {}, {}, {}
        for i, call in enumerate(calls):
            try:
                call = dict(call)
                num_samples = call.get("num_samples", 1)
                do_sample = call.pop("do_sample", False)
                check_int(num_samples, "num_samples", 1)
                check_int(call.get("max_new_tokens", 40), "max_new_tokens", 1)
                if do_sample:
                    check_number(call.get("temperature", 1.0), "temperature", above=0)
                if num_samples > 1 and not do_sample:
                    raise ValueError("num_samples > 1 needs do_sample=True (greedy answers would be identical)")
                temperature = float(call.pop("temperature", 1.0))
                gen = (call.pop("max_new_tokens", 40), bool(do_sample), temperature if do_sample else None,
                       bool(call.pop("return_logprobs", False)), self._coefficient(call.pop("coefficient", None)))
                extra[i] = (call.pop("matcher", None), call.pop("group_samples", False), num_samples)
                plan = self._plan(**call)
                if check is not None:
                    check(plan)
                plans[i], keys[i] = plan, (*gen, plan.control == "no_injection")
            except Exception as e:  # noqa: BLE001 - this call's result
                results[i] = e
        answers = self._answer_many(plans, keys, batch_size, results, self._generate_group)
        for i, out in answers.items():
            matcher, group, num_samples = extra[i]
            results[i] = agree(out, num_samples, matcher or normalize_answer, group=group) if num_samples > 1 else out
        return results

    def score_many(self, calls: Sequence[dict], *, batch_size: int = 64,
                   check: Callable[[QueryPlan], None] | None = None) -> list:
        """`score` for several calls at once, each a dict of `score`'s arguments: contexts read in shared
        forwards, and the prompts of calls with the same choices, method and coefficient scored together,
        `batch_size` at a time. Results and `check` as in `ask_many`; `score` is this with one call."""
        _check_batch_size(batch_size)
        results: list = [None] * len(calls)
        plans, keys = {}, {}
        for i, call in enumerate(calls):
            try:
                call = dict(call)
                choices = check_choices(call.pop("choices", ("Yes", "No")))
                method = resolve_choice_method(self.tokenizer, choices, call.pop("method", "auto"))
                coefficient = self._coefficient(call.pop("coefficient", None))
                plan = self._plan(**call)
                if check is not None:
                    check(plan)
                plans[i], keys[i] = plan, (choices, method, coefficient, plan.control == "no_injection")
            except Exception as e:  # noqa: BLE001 - this call's result
                results[i] = e
        for i, out in self._answer_many(plans, keys, batch_size, results, self._score_group).items():
            results[i] = out
        return results

    def collect_many(self, calls: Sequence[dict], *, batch_size: int = 64,
                     check: Callable[[QueryPlan], None] | None = None) -> list:
        """`collect` for several calls at once, each a dict of `collect`'s arguments: calls with the same
        source and target adapter share forwards. Results and `check` as in `ask_many`."""
        _check_batch_size(batch_size)
        results: list = [None] * len(calls)
        plans = {}
        for i, call in enumerate(calls):
            try:
                plan = self._plan_collect(**call)
                if check is not None:
                    check(plan)
                plans[i] = plan
            except Exception as e:  # noqa: BLE001 - this call's result
                results[i] = e

        def run(idx):
            acts = self._collect_jobs([(plans[i].source, plans[i].target_adapter, plans[i].layers,
                                        plans[i].contexts) for i in idx], batch_size)
            for i, per_context in zip(idx, acts):
                p = plans[i]
                results[i] = [ContextActivations(q.context_index, p.contexts[q.context_index].ids, q.positions,
                                                 {x: a[x][q.positions] for x in p.layers})
                              for q, a in zip(p.queries, per_context)]

        if plans:
            _each(list(plans), run, results)
        return results

    def _answer_many(self, plans: dict[int, QueryPlan], keys: dict[int, Hashable], batch_size: int, results: list,
                     answer_group) -> dict[int, list[OracleAnswer]]:
        """Read the planned calls' contexts together, then answer the queries of calls with the same key
        together through `answer_group(key, [(call, query)...], plans) -> answers`, `batch_size` queries a
        forward. A call that fails at any step gets its exception in `results`; the rest go on."""
        def fill(idx):
            todo = [i for i in idx if plans[i]._read_contexts()]
            acts = self._collect_jobs([(plans[i].source, plans[i].target_adapter, plans[i].layers,
                                        plans[i]._read_contexts()) for i in todo], batch_size)
            for i, a in zip(todo, acts):
                plans[i]._attach(a)

        if plans:
            _each(list(plans), fill, results)
        out: dict[int, list[OracleAnswer]] = {}
        groups: dict[Hashable, list[int]] = {}
        for i in plans:
            if results[i] is None:
                groups.setdefault(keys[i], []).append(i)

        def run(key, idx):
            items = [(i, q) for i in idx for q in plans[i].queries]
            answers: dict[int, list[OracleAnswer]] = {i: [] for i in idx}
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                for (i, _), a in zip(chunk, answer_group(key, chunk, plans)):
                    answers[i].append(a)
            out.update(answers)

        for key, idx in groups.items():
            _each(idx, lambda ids, key=key: run(key, ids), results)
        return {i: a for i, a in out.items() if results[i] is None}

    def _generate_group(self, key, chunk, plans) -> list[OracleAnswer]:
        max_new_tokens, do_sample, temperature, return_logprobs, coefficient, _ = key
        queries = [q for _, q in chunk]
        gen = self._generate(queries, [plans[i].layers for i, _ in chunk], max_new_tokens, do_sample,
                             1.0 if temperature is None else temperature, coefficient, return_logprobs)
        answers = []
        for j, ((i, q), text) in enumerate(zip(chunk, gen.texts)):
            a = self._answer(q, text, plans[i])
            if return_logprobs:
                a.tokens = [self.tokenizer.decode([t]) for t in gen.token_ids[j]]
                a.token_logprobs = gen.token_logprobs[j]
                a.logprob = float(sum(a.token_logprobs))
            answers.append(a)
        return answers

    def _score_group(self, key, chunk, plans) -> list[OracleAnswer]:
        choices, method, coefficient, _ = key
        queries = [q for _, q in chunk]
        prompts = self._prompts(queries, [plans[i].layers for i, _ in chunk])
        with self._oracle_weights():
            s = choice_probs(self.model, self.tokenizer, [p.input_ids for p in prompts],
                             [p.positions for p in prompts], _vectors(queries), choices=choices,
                             hook_layer=self.hook_layer, coefficient=coefficient, method=method)
        answers = []
        for (i, q), row, mass in zip(chunk, s.probs.tolist(), s.mass.tolist()):
            a = self._answer(q, choices[max(range(len(row)), key=row.__getitem__)], plans[i])
            a.probs, a.choice_mass = dict(zip(choices, row)), mass
            answers.append(a)
        return answers

    def _coefficient(self, coefficient: float | None) -> float:
        """The injection scale: as given, else the adapter's training value (ao_config.json), else 1."""
        if coefficient is None:
            return float(self.config.get("coefficient", 1.0))
        return check_number(coefficient, "coefficient")

    @staticmethod
    def _answer(q: _Query, text: str, plan: QueryPlan) -> OracleAnswer:
        return OracleAnswer(text=text, question=q.question, context_index=q.context_index, positions=q.positions,
                            layer=plan.layers[0], mode=plan.mode, sample_index=q.sample_index, control=plan.control,
                            layers=list(plan.layers))

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

    def _plan(self, context, question, *, layer=None, layers=None, layer_percent=None, positions="all",
              target_adapter=None, source="orig", num_samples=1, mode="full", raw=False, control=None,
              unrelated_context=None, unrelated_align="proportional") -> QueryPlan:
        """Check one call's arguments and read its contexts into queries; no forward yet (`_attach` gives
        the queries their vectors once the contexts are collected)."""
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}: use one of {', '.join(MODES)}")
        self._check_source(source, target_adapter)
        if control is not None and control not in CONTROLS:
            raise ValueError(f"control={control!r}: use None or one of {', '.join(CONTROLS)}")
        if unrelated_context is not None and control != "unrelated":
            raise ValueError("unrelated_context is only read with control='unrelated'")
        if unrelated_align not in ALIGNS:
            raise ValueError(f"unrelated_align={unrelated_align!r}: use one of {', '.join(ALIGNS)}")
        if unrelated_align != "proportional" and control != "unrelated":
            raise ValueError("unrelated_align is only read with control='unrelated'")
        layers = self._source_layers(layer, layers, layer_percent)
        contexts = self._read(context, raw, layers)
        pairs = self._pair_questions(len(contexts), question)
        if target_adapter is not None:
            self.load_target_adapter(target_adapter)
        plan = QueryPlan(layers, contexts, self._queries(contexts, pairs, positions, mode, num_samples), mode=mode,
                         source=source, target_adapter=target_adapter, control=control,
                         unrelated_align=unrelated_align)
        if control == "unrelated":
            plan.neutral = self._tokenize_context(NEUTRAL_TEXT if unrelated_context is None else unrelated_context, raw,
                                                  "unrelated_context")
            if len(layers) > 1 and plan.neutral.vectors is not None:
                raise ValueError("unrelated_context vectors hold one layer; with layers=[...] pass text or token ids")
        return plan

    def _plan_collect(self, context, *, layer=None, layers=None, layer_percent=None, positions="all", raw=False,
                      source="orig", target_adapter=None) -> QueryPlan:
        """`collect`'s call checked and read: one query (no question) per context, at its positions."""
        self._check_source(source, target_adapter)
        layers = self._source_layers(layer, layers, layer_percent)
        contexts = self._read(context, raw, layers)
        if any(c.vectors is not None for c in contexts):
            raise ValueError("context: a tensor of vectors is already activations; pass text, messages or token ids")
        if target_adapter is not None:
            self.load_target_adapter(target_adapter)
        queries = [_Query(i, "", resolve_positions(positions, c.length)) for i, c in enumerate(contexts)]
        return QueryPlan(layers, contexts, queries, source=source, target_adapter=target_adapter)

    @staticmethod
    def _check_source(source, target_adapter) -> None:
        if source not in SOURCES:
            raise ValueError(f"source={source!r}: use one of {', '.join(SOURCES)}")
        if source != "orig" and target_adapter is None:
            raise ValueError(f"source={source!r} reads a fine-tuned target: pass target_adapter=PATH")

    def _read(self, context, raw: bool, layers: list[int]) -> list[_Context]:
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
        return contexts

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
        """The oracle prompts of `queries`, each with its call's source layers (`layers`, one list per query),
        refused when a prompt and `new_tokens` would not fit the model's positions."""
        prompts = [format_oracle_prompt(self.tokenizer, layers=lay, num_positions=len(q.positions),
                                        question=q.question) for q, lay in zip(queries, layers)]
        limit = max_positions(self.model)
        longest = max(len(p.input_ids) for p in prompts)
        if limit is not None and longest + new_tokens > limit:
            k = max(len(q.positions) for q in queries)
            n_layers = max(len(lay) for lay in layers)
            if longest + 1 > limit:
                raise ValueError(f"positions: {k:,} positions x {n_layers} layer(s) make an oracle prompt of "
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


def _check_batch_size(batch_size) -> None:
    check_int(batch_size, "batch_size", 1)


def _vectors(queries: list[_Query]):
    """The queries' vectors, or None when none are injected (the no-injection control)."""
    return None if queries[0].vectors is None else [q.vectors for q in queries]
