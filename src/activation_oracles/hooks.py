"""Forward hooks: norm-matched injection into the oracle, and early-stopping activation collection."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence

import torch
from torch import nn

from .models import check_layer, decoder_layers, hidden_size, unwrap


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(output, hidden):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def flatten_injection(vectors, positions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Turn per-row vectors/positions into flat (rows, cols, vecs) index tensors.

    `vectors`: a list (one per batch row) of [K_b, D] tensors, or a [B, K, D] tensor.
    `positions`: a list of lists of ints (ragged K_b allowed), or a [B, K] tensor.
    """
    if isinstance(vectors, torch.Tensor) and vectors.dim() == 2:
        vectors = [vectors]
        positions = [positions]
    if isinstance(positions, torch.Tensor):
        positions = positions.tolist()
    if len(vectors) != len(positions):
        raise ValueError(f"vectors has {len(vectors)} rows but positions has {len(positions)}")
    rows, cols, vecs = [], [], []
    for b, (v, p) in enumerate(zip(vectors, positions)):
        p = [int(x) for x in p]
        if v.dim() != 2 or v.shape[0] != len(p):
            raise ValueError(f"row {b}: vectors of shape {tuple(v.shape)} do not match {len(p)} positions")
        rows += [b] * len(p)
        cols += p
        vecs.append(v)
    if not vecs:
        raise ValueError("nothing to inject: vectors is empty")
    return torch.tensor(rows), torch.tensor(cols), torch.cat([v.reshape(v.shape[0], -1) for v in vecs])


INJECTION_GRADS = ("detached", "through_norm")


def steer(hidden: torch.Tensor, rows, cols, vecs, coefficient: float = 1.0, *,
          grad: str = "detached") -> torch.Tensor:
    """h' = h + c * ||h|| * v / ||v|| at (rows, cols), in float32, returned as a new tensor; rows=None: at
    positions `cols` of a single (packed) row.

    grad="detached" (the paper's reference): the added vector is a constant for autograd, so
    dh'/dh is the identity. grad="through_norm": the gradient also flows through ||h||."""
    if grad not in INJECTION_GRADS:
        raise ValueError(f"grad={grad!r}: use one of {', '.join(INJECTION_GRADS)}")
    packed = rows is None  # one packed row: positions alone
    if packed and hidden.shape[0] != 1:
        raise ValueError(f"rows=None steers a single packed row, not a batch of {hidden.shape[0]}")
    flat, index = (hidden[0], (cols,)) if packed else (hidden, (rows, cols))
    h = flat[index].float()
    v = vecs.float()
    unit = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (a zero vector adds nothing)
    added = coefficient * h.norm(dim=-1, keepdim=True) * unit
    new = h + (added.detach() if grad == "detached" else added)
    out = flat.index_put(index, new.to(hidden.dtype))
    return out[None] if packed else out


@contextlib.contextmanager
def inject(
    model: nn.Module,
    vectors,
    positions,
    *,
    hook_layer: int = 1,
    coefficient: float = 1.0,
    grad: str = "detached",
):
    """While active, the output of decoder block `hook_layer` at each (row b, position p) becomes
    h + coefficient * ||h|| * v / ||v||. Only prefill passes are steered; cached decode steps
    (one new token) pass through untouched. `grad`: see `steer`."""
    rows, cols, vecs = flatten_injection(vectors, positions)
    with inject_flat(model, rows, cols, vecs, hook_layer=hook_layer, coefficient=coefficient, grad=grad):
        yield


@contextlib.contextmanager
def inject_flat(
    model: nn.Module,
    rows: torch.Tensor,
    cols: torch.Tensor,
    vecs: torch.Tensor,
    *,
    hook_layer: int = 1,
    coefficient: float = 1.0,
    grad: str = "detached",
    bounds: tuple[int, int] | None = None,
):
    """`inject` on flat index tensors: vecs[i] goes to (rows[i], cols[i]). `bounds` = (max row, max col),
    when the caller knows them, spares reading device tensors back (a GPU sync) for the range check."""
    layers = decoder_layers(model)
    check_layer(len(layers), hook_layer, "hook_layer")
    d = hidden_size(model)
    if vecs.shape[-1] != d:
        raise ValueError(f"vectors have width {vecs.shape[-1]} but the model's hidden size is {d}")
    injector = Injector(layers[hook_layer], coefficient=coefficient, grad=grad)
    try:
        with injector.armed(rows, cols, vecs, bounds=bounds):
            yield
    finally:
        injector.close()


class Injector:
    """The norm-matched injection as one forward hook on a decoder block, registered once and armed for
    the passes that inject (the trainer arms it every step without touching the model's hooks). Unarmed,
    and on cached decode steps (one new token), it passes the block's output through."""

    def __init__(self, block: nn.Module, *, coefficient: float = 1.0, grad: str = "detached"):
        if grad not in INJECTION_GRADS:
            raise ValueError(f"grad={grad!r}: use one of {', '.join(INJECTION_GRADS)}")
        self.coefficient, self.grad = coefficient, grad
        self.state = None
        self.handle = block.register_forward_hook(self._hook)

    @contextlib.contextmanager
    def armed(self, rows, cols, vecs, *, bounds: tuple[int, int] | None = None):
        if bounds is None:
            if (cols < 0).any():
                raise ValueError("positions must be non-negative indices into the padded batch")
            bounds = (0 if rows is None else int(rows.max()), int(cols.max()))
        self.state = (rows, cols, vecs, bounds, {})
        try:
            yield
        finally:
            self.state = None

    def _hook(self, module, args, output):
        if self.state is None:
            return None
        rows, cols, vecs, (max_row, max_col), cache = self.state
        hidden = _hidden(output)
        if hidden.shape[1] == 1 and max_col > 0:
            return None  # a decode step: the placeholders were steered during prefill
        if max_row >= hidden.shape[0] or max_col >= hidden.shape[1]:
            raise ValueError(
                f"injection at row {max_row}, position {max_col} is outside the batch {tuple(hidden.shape[:2])}"
            )
        dev = hidden.device
        if dev not in cache:
            cache[dev] = (None if rows is None else rows.to(dev), cols.to(dev), vecs.to(dev))
        return _replace_hidden(output, steer(hidden, *cache[dev], self.coefficient, grad=self.grad))

    def close(self) -> None:
        self.handle.remove()


class _StopForward(Exception):
    pass


def cache_kwarg(model: nn.Module) -> str:
    """The name of the KV-cache argument of this model's forward: `cache` in recent transformers,
    `past_key_values` before (and still accepted, with a deprecation warning, for a while)."""
    return "cache" if "cache" in inspect.signature(unwrap(model).forward).parameters else "past_key_values"


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so a left-padded row reads exactly as it
    would alone (a plain forward otherwise numbers the pad tokens too)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


class AdapterSwitch:
    """The model's adapter layers (LoRA and the other PEFT tuner layers, and modules_to_save copies) turned
    off and back on through a list made once. PEFT's `disable_adapter()` walks the whole model and checks
    its status on every call: about 60 ms on Qwen3-8B's 3,069 modules, paid twice per training step."""

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if hasattr(m, "enable_adapters") and hasattr(m, "_disable_adapters")]
        # (prompt-learning adapters have no such layers: PEFT's own switch is the only one for them)
        self.fallback = (not self.layers and hasattr(model, "disable_adapter") and hasattr(model, "peft_config"))
        self.model = model

    @contextlib.contextmanager
    def off(self):
        if self.fallback:
            with self.model.disable_adapter():
                yield
            return
        before = [m._disable_adapters for m in self.layers]
        for m in self.layers:  # (the flag PEFT's layers read in forward; gradients are off where this is used)
            m.__dict__["_disable_adapters"] = True
        try:
            yield
        finally:
            for m, was in zip(self.layers, before):
                m.__dict__["_disable_adapters"] = was


def _own_train(module: nn.Module) -> bool:
    """Whether `module.train()` does more than set the flags (what ModeSwitch's flat loop does). transformers'
    models override it only to re-apply hub kernels (use_kernels), which a flat loop would skip."""
    if type(module).train is nn.Module.train:
        return False
    try:
        from transformers import PreTrainedModel
    except ImportError:
        return True
    if isinstance(module, PreTrainedModel) and type(module).train is PreTrainedModel.train:
        return bool(getattr(module, "use_kernels", False))
    return True


class ModeSwitch:
    """`model.eval()` and back to each module's own mode, from a list made once: a flat loop instead of
    two recursive walks of the module tree per forward. Modules whose class defines its own `train`
    (PEFT's DoRA caches) still get it called."""

    def __init__(self, model: nn.Module):
        self.modules = list(model.modules())
        self.custom = [i for i, m in enumerate(self.modules) if _own_train(m)]

    @contextlib.contextmanager
    def eval(self):
        before = [m.training for m in self.modules]
        for m in self.modules:
            m.__dict__["training"] = False
        for i in self.custom:
            self.modules[i].train(False)
        try:
            yield
        finally:
            for m, was in zip(self.modules, before):
                m.__dict__["training"] = was
            for i in self.custom:
                self.modules[i].train(before[i])


@contextlib.contextmanager
def _adapters_off(model: nn.Module):
    """Base weights only, dropout off; the caller's train/eval mode is restored afterwards."""
    with ModeSwitch(model).eval(), AdapterSwitch(model).off():
        yield


class BlockTap:
    """Forward hooks on decoder blocks, registered once and armed per forward: they keep the outputs of
    the wanted blocks and stop the forward after the deepest of them (no work past it)."""

    def __init__(self, blocks: nn.ModuleList):
        self.blocks = blocks
        self.handles: dict[int, object] = {}
        self.wanted: frozenset[int] = frozenset()
        self.deepest = -1
        self.out: dict[int, torch.Tensor] = {}

    def _hook_for(self, i: int):
        def hook(module, args, output):
            if i in self.wanted:
                self.out[i] = _hidden(output)
                if i == self.deepest:
                    raise _StopForward

        return hook

    @contextlib.contextmanager
    def armed(self, layers):
        """Within: run a forward (catching nothing); `out` then maps each wanted layer to its [B, L, D]."""
        wanted = frozenset(int(x) for x in layers)
        for i in wanted - self.handles.keys():
            self.handles[i] = self.blocks[i].register_forward_hook(self._hook_for(i))
        self.wanted, self.deepest, self.out = wanted, max(wanted), {}
        try:
            yield self.out
        finally:
            self.wanted, self.deepest = frozenset(), -1

    def run(self, forward, layers) -> dict[int, torch.Tensor]:
        """forward() with the tap armed for `layers`: {layer: block output}, the forward stopped after the deepest."""
        with self.armed(layers) as out:
            try:
                forward()
            except _StopForward:
                pass
        missing = sorted({int(x) for x in layers} - out.keys())
        if missing:
            raise RuntimeError(f"the forward never reached decoder block(s) {missing}")
        return {i: out[i] for i in sorted(out)}

    def close(self) -> None:
        for h in self.handles.values():
            h.remove()
        self.handles = {}


def collect_activations(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    layers: Sequence[int],
    use_adapter: bool = False,
    position_ids: torch.Tensor | None = None,
    past_key_values=None,
) -> dict[int, torch.Tensor]:
    """Residual stream (block outputs) at `layers`: {layer: [B, L, D]}, from one forward that stops
    after the deepest requested block. On a PEFT model the adapter is off unless `use_adapter`.
    `position_ids` without a mask: packed sequences (positions restart at 0 at each one; transformers
    builds the block-diagonal mask from them). `past_key_values`: a cache of tokens that come before
    `input_ids` in every row (see `steering.collect_padded`), filled in place up to the deepest block;
    `attention_mask` then covers `input_ids` only."""
    blocks = decoder_layers(model)
    wanted = sorted({check_layer(len(blocks), int(layer), "layers") for layer in layers})
    if not wanted:
        raise ValueError("layers must name at least one decoder block")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
        attention_mask = None if attention_mask is None else attention_mask[None]
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: the context has no tokens")
    adapters = contextlib.nullcontext() if use_adapter else AdapterSwitch(model).off()
    inner = model if use_adapter else unwrap(model)
    kwargs, use_cache = {}, False
    if past_key_values is not None:  # (rows continuing a cached prefix: positions and mask start after it)
        past = past_key_values.get_seq_length()
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        attention_mask = torch.cat([mask.new_ones(mask.shape[0], past), mask], 1)
        kwargs.update({cache_kwarg(inner): past_key_values}, position_ids=past + position_ids_from_mask(mask))
        use_cache = True
    elif position_ids is not None:
        if attention_mask is not None:
            raise ValueError("give position_ids (packed sequences) or attention_mask, not both")
        kwargs["position_ids"] = position_ids if position_ids.dim() == 2 else position_ids[None]
    elif attention_mask is not None:  # (for a mask without padding these are the default positions)
        kwargs["position_ids"] = position_ids_from_mask(attention_mask)
    tap = BlockTap(blocks)
    try:
        with ModeSwitch(model).eval(), adapters, torch.no_grad():
            return tap.run(lambda: inner(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache,
                                         **kwargs), wanted)
    finally:
        tap.close()
