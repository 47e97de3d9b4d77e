"""Host-device synchronisations, found on any machine (a CPU included).

On a GPU the host queues kernels far ahead of the device until something reads a device value back:
`.item()`/`float(t)`, a boolean mask used as an index (its result's size is data), `nonzero`, a copy to
host memory, `if tensor:`. Each such read stalls the host until the device has caught up, and a step with
a handful of them spends most of its time waiting. On a CPU nothing stalls, so they go unnoticed;
`SyncGuard` finds them anyway by following which tensors would live on the device:

- what starts there is marked (`mark`, `mark_module`, `marked_transfer` for host -> device copies), and
  every op with a marked input marks its outputs (a `TorchDispatchMode`);
- an op that would synchronise on CUDA with a marked input is a violation: the dispatcher-level ones
  (`_local_scalar_dense`, `nonzero`, `masked_select`, boolean-mask indexing, `copy_` from a marked tensor
  into an unmarked one, ...) and the Python-level reads that never reach the dispatcher on a CPU
  (`.cpu()`, `.tolist()`, `.numpy()`, `.item()`, `bool(t)`, `float(t)`, `int(t)`; a `TorchFunctionMode`).
  `.to(device)` is not one: on a CPU the step's device and the host are the same, so a copy to the host
  written as `.to("cpu")` cannot be told from a move to the step's own device; the code reads back with
  `.cpu()`.

`SyncGuard(fail=True)` raises `SyncError` at the first violation, naming the op and the line of code that
asked for it; `fail=False` records them in `violations`. `with guard.allowed():` lets the one read-back a
logging step makes through.
"""

from __future__ import annotations

import contextlib
import functools
import traceback
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten
_MARK = "_ao_on_device"

# ops whose result on CUDA needs a device value on the host (a size that is data, or the value itself)
SYNC_OPS = {
    aten._local_scalar_dense.default, aten.nonzero.default, aten.masked_select.default, aten.is_nonzero.default,
    aten.equal.default, aten._unique2.default, aten.unique_dim.default, aten.unique_consecutive.default,
    aten.repeat_interleave.Tensor, aten.bincount.default, aten.histc.default, aten.allclose.default,
    aten.argwhere.default,
}
_INDEX_OPS = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
_COPY_OPS = {aten.copy_.default}
# Python-level reads of a device tensor (on a CPU they do not dispatch at all)
_READS = {torch.Tensor.cpu, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.item, torch.Tensor.__bool__,
          torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.__complex__}


class SyncError(RuntimeError):
    pass


@dataclass
class Violation:
    op: str
    where: str  # file:line of the innermost caller outside torch


def is_marked(t) -> bool:
    return isinstance(t, torch.Tensor) and getattr(t, _MARK, False)


def _mark(t) -> None:
    if isinstance(t, torch.Tensor):
        setattr(t, _MARK, True)


def _caller() -> str:
    """The innermost frame of the stack that is not torch's or this module's: the line to fix."""
    for fr in reversed(traceback.extract_stack()[:-3]):
        f = fr.filename.replace("\\", "/")
        if "/torch/" in f or f.endswith("sync_guard.py") or "/contextlib.py" in f:
            continue
        return f"{f}:{fr.lineno} ({fr.name})"
    return "?"


def _bool_index(indices) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices or ())


class _Dispatch(TorchDispatchMode):
    def __init__(self, guard: SyncGuard):
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat, _ = tree_flatten((args, kwargs))
        on_device = any(is_marked(t) for t in flat)
        if on_device and not self.guard.suspended:
            if func in SYNC_OPS:
                self.guard.report(str(func))
            elif func in _INDEX_OPS and _bool_index(args[1] if len(args) > 1 else kwargs.get("indices")):
                self.guard.report(f"{func} with a boolean mask")
            elif func in _COPY_OPS and is_marked(args[1]) and not is_marked(args[0]):
                self.guard.report("copy_ from device to host memory")
        out = func(*args, **kwargs)
        if on_device:
            for t in tree_flatten(out)[0]:
                _mark(t)
        return out


class _Function(TorchFunctionMode):
    def __init__(self, guard: SyncGuard):
        super().__init__()
        self.guard = guard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _READS or not args or not is_marked(args[0]) or self.guard.suspended:
            return func(*args, **kwargs)
        self.guard.report(f"Tensor.{getattr(func, '__name__', func)}")
        with self.guard.allowed():  # (one read, one report: not again for the ops it dispatches)
            out = func(*args, **kwargs)
            if func is torch.Tensor.cpu:  # what comes back is host memory (on a CPU, a copy made here)
                out = out.detach().clone() if out is args[0] else out
                setattr(out, _MARK, False)
        return out


class SyncGuard:
    """Context manager: while active, ops that would synchronise a GPU with its host are violations.

    `fail=True` raises SyncError at the first; else they are collected in `violations`."""

    def __init__(self, *, fail: bool = True):
        self.fail = fail
        self.violations: list[Violation] = []
        self.suspended = False
        self._stack = contextlib.ExitStack()

    # -- what lives on the device
    def mark(self, *tensors) -> None:
        for t in tree_flatten(tensors)[0]:
            _mark(t)

    def mark_module(self, module: torch.nn.Module) -> None:
        for t in (*module.parameters(), *module.buffers()):
            _mark(t)

    def mark_optimizer(self, opt: torch.optim.Optimizer) -> None:
        """The optimizer's state; its step counters only where the optimizer keeps them on the device
        (fused or capturable: elsewhere they are host tensors even on a GPU)."""
        on_device = any(g.get("fused") or g.get("capturable") for g in opt.param_groups)
        for state in opt.state.values():
            self.mark([v for k, v in state.items() if k != "step" or on_device])
        for g in opt.param_groups:
            self.mark([v for v in g.values() if isinstance(v, torch.Tensor)])

    def marked_transfer(self, fn):
        """`fn` (a host -> device copy) with its outputs marked."""

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            out = fn(*args, **kwargs)
            self.mark(out)
            return out

        return wrapper

    # -- checking
    def report(self, op: str) -> None:
        v = Violation(op, _caller())
        self.violations.append(v)
        if self.fail:
            raise SyncError(f"{op} would synchronise the GPU with the host, at {v.where}")

    @contextlib.contextmanager
    def allowed(self):
        """Reads that are meant (the logging read-back) pass unreported."""
        was, self.suspended = self.suspended, True
        try:
            yield
        finally:
            self.suspended = was

    def __enter__(self) -> SyncGuard:
        self._stack.enter_context(_Function(self))
        self._stack.enter_context(_Dispatch(self))
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()
