"""The training step captured as CUDA graphs (train.cuda_graphs): the host issues one replay per micro-batch
and one for the optimiser instead of thousands of kernel launches.

An eager step costs the host some 10,000 dispatched ops before the GPU has run anything (benchmarks/
README.md: an H200 was busy 11-24 % of each step). Here, for each packed-batch shape (train.shape_buckets
makes them few), the objective's forward and backward and the accumulation of the loss statistics are
captured once as a graph that reads the batch from a static device buffer; the clipping, AdamW
(capturable, its learning rate a device tensor the schedule sets in place) and the zeroing of the gradients
are one more graph. A step then copies each micro-batch's host buffer into its shape's static buffer and
replays. Gradients persist between steps (zeroed inside the optimiser graph, never set to None), and every
statistic stays on the device until the loop's logging read-back.

Before a shape is captured, its forward and backward run once eagerly on the capture stream (compiled
kernels, cuBLAS handles, the mask caches are made outside the capture) with the gradients and the random
state saved and put back, so the warm-up changes nothing. The first step of a run is eager (it allocates AdamW's state).

`GraphedStep(..., backend=EagerGraphs())` runs the same code with "capture" keeping the Python function and
"replay" calling it: what the CPU tests check (plumbing, static buffers, equal losses to the eager step).
"""

from __future__ import annotations

import contextlib
import warnings

import torch

from .packed import STAT_SLOTS
from .step import StepStats, _phase, _trainable, collate_for, host_lr, train_step


class CudaGraphs:
    """Capture and replay on CUDA, all graphs sharing one memory pool and one capture stream."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = torch.cuda.Stream(self.device)

    @contextlib.contextmanager
    def warmup(self):
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield
        torch.cuda.current_stream(self.device).wait_stream(self.stream)

    def capture(self, fn):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            fn()
        return graph.replay


class EagerGraphs:
    """A stand-in with the same control flow: capture keeps `fn`, replay runs it (CPU tests)."""

    def warmup(self):
        return contextlib.nullcontext()

    def capture(self, fn):
        return fn


class GraphedStep:
    """train_step, captured per packed-batch shape and replayed. Call it as train_step (without the
    objective, optimizer and schedule it was made with); returns a StepStats."""

    def __init__(self, acc, objective, opt, sched, cfg, shapes, *, backend=None):
        self.acc, self.objective, self.opt, self.sched, self.cfg, self.shapes = acc, objective, opt, sched, cfg, shapes
        self.dev = acc.device
        self.backend = backend or CudaGraphs(self.dev)
        self.params = _trainable(opt)
        self.stats = torch.zeros(STAT_SLOTS + 1, dtype=torch.float64, device=self.dev)  # loss sums, grad norm
        self.micro: dict[tuple, tuple] = {}  # shape key -> (static buffer, its layout, replay)
        self.opt_replay = None
        self.captures = 0

    def __call__(self, micro_rows, pad_id: int, denom: float, deepest: int | None = None) -> StepStats:
        if not self.opt.state:  # the first step: eager, so that AdamW's state exists before any capture
            return train_step(self.acc, self.objective, self.opt, self.sched, micro_rows, pad_id, self.cfg, denom,
                              deepest=deepest, shapes=self.shapes)
        for p in self.params:  # (static gradients: accumulated in place, zeroed by the optimiser graph)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        counts, tokens = [0] * STAT_SLOTS, [0, 0, 0, 0]
        for rows in micro_rows:
            with _phase("ao.collate"):
                batch = collate_for(self.cfg, rows, pad_id, scale=self.acc.num_processes / denom, shapes=self.shapes)
                flat, layout = batch.host_buffer()
            if batch.key not in self.micro:
                self.micro[batch.key] = self._capture_micro(batch, flat, layout)
            static, _, replay = self.micro[batch.key]
            with _phase("ao.to_device"):
                static.copy_(flat.pin_memory() if static.is_cuda else flat, non_blocking=True)
            with _phase("ao.forward"):
                replay()
            counts = [c + k for c, k in zip(counts, batch.task_counts)]
            tokens = [a + b for a, b in zip(tokens, (batch.real_tokens, batch.context_tokens, batch.pad_tokens,
                                                     batch.total_tokens))]
        if self.opt_replay is None:
            self.opt_replay = self.backend.capture(self._optimizer_work)
            self.captures += 1
        lr = host_lr(self.sched)
        with _phase("ao.optimizer"):
            self.opt_replay()
        self.sched.step()
        snapshot = self.stats.clone()
        self.stats.zero_()
        gnorm = snapshot[STAT_SLOTS] if self.cfg.optim.max_grad_norm > 0 else None
        return StepStats(self.acc, snapshot[:STAT_SLOTS], gnorm, counts, tokens, lr, denom)

    # -- what is captured
    def _micro_work(self, kwargs):
        ce, slots = self.objective(**kwargs)
        (ce * kwargs["label_weight"]).sum().backward()
        self.stats[:STAT_SLOTS].index_add_(0, slots, ce.detach().double())

    def _optimizer_work(self):
        if self.cfg.optim.max_grad_norm > 0:
            gnorm = torch.nn.utils.clip_grad_norm_(self.params, self.cfg.optim.max_grad_norm, foreach=True)
            self.stats[STAT_SLOTS].copy_(gnorm)
        self.opt.step()
        torch._foreach_zero_([p.grad for p in self.params])

    def _capture_micro(self, batch, flat, layout):
        from .packed import unpack_buffer

        static = torch.empty(flat.numel(), dtype=torch.uint8, device=self.dev)
        static.copy_(flat)
        kwargs = dict(unpack_buffer(static, layout), layers=batch.layers, bounds=batch.bounds)
        from .checkpoint import rng_state, set_rng_state

        saved, rng = [p.grad.clone() for p in self.params], rng_state()
        with self.backend.warmup():  # (eager once: everything lazily made is made outside the capture)
            ce, _ = self.objective(**kwargs)
            (ce * kwargs["label_weight"]).sum().backward()
            for p, g in zip(self.params, saved):
                p.grad.copy_(g)
        set_rng_state(rng)  # (the warm-up's dropout draws are not the run's)
        del saved, ce
        self.objective.graph_capture = True
        try:
            replay = self.backend.capture(lambda: self._micro_work(kwargs))
        finally:
            self.objective.graph_capture = False
        self.captures += 1
        return static, layout, replay


def make_stepper(cfg, acc, objective, opt, sched, shapes) -> GraphedStep | None:
    """GraphedStep with train.cuda_graphs on one GPU; else None (the eager train_step), with a warning when
    graphs were asked for where they cannot run."""
    if not cfg.train.cuda_graphs:
        return None
    if acc.device.type != "cuda" or acc.num_processes > 1:
        warnings.warn("train.cuda_graphs needs one process on a GPU; the step runs eagerly", stacklevel=3)
        return None
    return GraphedStep(acc, objective, opt, sched, cfg, shapes)
