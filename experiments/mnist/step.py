"""One training step of a group of runs, eager, compiled or captured as one CUDA graph.

A step (:meth:`Stepper.take`) does device work only, so that a CUDA graph can hold it: it keeps
the runs' state (:class:`~experiments.replicated.RunGuard`), evaluates the group's objective on
the step's images and noise, differentiates the sum of the runs' losses, takes Adam's steps
(Adam is elementwise: each run's update is its own), moves NVIL's running mean, freezes a run
whose loss or state turned non-finite at its last finite state, and adds the runs' bounds to
running sums. Nothing is read back to the host; the trainer reads the sums and the frozen runs at
evaluation and checkpoint points.

``compile`` compiles the objective, Adam and the bookkeeping (:class:`EagerFallback`: eager from
the first failure on); ``capture`` records the whole step once as a CUDA graph and replays it for
every minibatch (:class:`CapturedStep`). The step draws no random numbers (its noise comes in as
an input, see :mod:`experiments.mnist.streams`), so every estimator of the registry captures,
and a captured step computes what the eager step computes; its Adam is the "capturable" one with
a learning-rate tensor, which rounds differently from the eager one, so a checkpoint resumes in
the mode it was made in only.
"""

from __future__ import annotations

import sys
import warnings
from typing import Callable

import torch

from ..replicated import RunGuard
from .config import TrainConfig
from .group import Group, GroupObjective

__all__ = ["capture_blocker", "compiles_on", "EagerFallback", "CapturedStep", "Stepper"]


def capture_blocker(config: TrainConfig, device: torch.device, world: int) -> str | None:
    """Why the step cannot be captured as a CUDA graph here, or None if it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, this run is on {device.type}"
    if world > 1:
        return "DistributedDataParallel's gradient all-reduce stays eager"
    return None


def compiles_on(device: torch.device) -> bool:
    """Whether ``compile`` compiles on this device (on the CPU it does not pay)."""
    return device.type == "cuda"


class EagerFallback:
    """``compiled(*args)``; where compiling it fails, a note and ``eager(*args)`` from then on.

    torch.compile cannot trace everything (``score_function_optimal``'s batched per-sample
    gradients, with torch 2.13); the eager function always works.
    """

    def __init__(self, eager: Callable, compiled: Callable | None, what: str):
        self.eager, self.compiled, self.what = eager, compiled, what

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as error:
                first_line = str(error).splitlines()[0][:200] if str(error) else ""
                print(f"compile: failed for {self.what} ({type(error).__name__}: {first_line}); "
                      "running it eagerly", file=sys.stderr)
                self.compiled = None
        return self.eager(*args)


class CapturedStep:
    """A whole training step as one CUDA graph, replayed for every minibatch.

    ``step(*inputs)`` must do everything a step does (forward, backward, optimiser steps,
    bookkeeping) with tensor operations only: no host reads, no shapes that change, no
    Python-side state that changes from step to step (which a replay would not see). Each call
    copies the inputs into static buffers on the device. The first ``warmup`` calls run ``step``
    eagerly on a side stream, as PyTorch's recipe for whole-network capture does (Adam's moments,
    cuBLAS workspaces and the gradients' streams are set up outside the graph); the next call
    captures it and every call from then on replays the graph. The step sets the gradients to
    None before its backward pass, so during capture they are allocated in the graph's memory
    pool and each replay overwrites them.
    """

    def __init__(self, step: Callable, device: torch.device, warmup: int = 3):
        self.step, self.device, self.warmup = step, device, warmup
        self.static_inputs = None
        self.graph = None
        self.outputs = None  # what the captured step returned: static tensors, new each replay
        self._side_stream = None

    def __call__(self, *inputs):
        if self.static_inputs is None:
            self.static_inputs = tuple(torch.empty_like(value) for value in inputs)
        for static, value in zip(self.static_inputs, inputs):
            static.copy_(value)
        if self.graph is None:
            if self.warmup > 0:
                self.warmup -= 1
                return self._run_aside()
            self.graph, self.outputs = self._capture()
        self.graph.replay()
        return self.outputs

    def _run_aside(self):
        """One eager step on a side stream, ordered after and before the current stream's work."""
        current = torch.cuda.current_stream(self.device)
        if self._side_stream is None:
            self._side_stream = torch.cuda.Stream(self.device)
        self._side_stream.wait_stream(current)
        with torch.cuda.stream(self._side_stream), warnings.catch_warnings():
            # Adam warns that capturable=True slows eager steps; these few are meant to be eager.
            warnings.filterwarnings("ignore", message=".*capturable=True.*")
            outputs = self.step(*self.static_inputs)
        current.wait_stream(self._side_stream)
        return outputs

    def _capture(self):
        """(graph, outputs): the step recorded, not run; the caller replays it."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.step(*self.static_inputs)
        return graph, outputs


def _count(bound_sum: torch.Tensor, bound_count: torch.Tensor, bound: torch.Tensor,
           took: torch.Tensor) -> None:
    """Add the bounds of the runs that took the step to their running sums: in place, on the device.

    In place because a captured graph keeps writing to the tensors it was captured with; the
    tensors have at least one element (compiled by torch 2.13 on the CPU, an ``add_`` into a 0-d
    float64 tensor is lost).
    """
    bound_sum.add_(torch.where(took, bound.to(bound_sum.dtype), 0.0))
    bound_count.add_(took.to(bound_count.dtype))


class Stepper:
    """The step of one group in the form ``config`` asks for, with its optimisers and counters.

    ``counter`` (1,) counts steps taken; ``bound_sum`` and ``bound_count`` (R,) sum each run's
    bounds since they were last zeroed; ``guard.first_bad`` (R,) is the step at which each run
    froze (-1: never). All on the device.
    """

    def __init__(self, group: Group, config: TrainConfig, device: torch.device, world: int,
                 rank: int, announce: bool = True):
        self.group, self.config, self.device, self.world = group, config, device, world
        runs = group.num_runs
        self.objective = GroupObjective(group, config.num_samples, config.estimator)
        blocker = capture_blocker(config, device, world) if config.capture else None
        self.capture = config.capture and blocker is None
        if config.capture and rank == 0 and announce:
            print(f"capture: skipped ({blocker}); running eagerly" if blocker else
                  "capture: each step runs as one CUDA graph (after 3 eager warm-up steps)",
                  file=sys.stderr)
        self.compiling = config.compile and compiles_on(device)
        if config.compile and not self.compiling and rank == 0 and announce:
            print("compile: skipped on the CPU (it pays off on CUDA only)", file=sys.stderr)

        adam = {"eps": 1e-4} if config.schedule == "iwae" else {}  # Burda et al.'s Adam epsilon
        # Adam: fused on CUDA (one kernel instead of a dozen foreach launches); compiled, the
        # foreach Adam, which inductor turns into a few kernels that spread over the whole GPU
        # (on a small network the fused kernel keeps a dozen of its multiprocessors busy).
        if (self.capture or device.type == "cuda") and not self.compiling:
            adam["fused"] = True
        self.tensor_rate = self.capture or self.compiling
        self.learning_rate = config.learning_rate
        if self.tensor_rate:
            # A graph, or a compiled step, holds the learning rate it was made with unless it is
            # a device tensor; set_rate fill_()s this one. float32: fused Adam reads it so.
            self.learning_rate = torch.tensor(config.learning_rate, dtype=torch.float32,
                                              device=device)
            adam["capturable"] = True
        self.optimizers = [torch.optim.Adam(group.vae.parameters(), lr=self.learning_rate,
                                            **adam)]
        if group.nvil is not None:
            self.optimizers.append(torch.optim.Adam(group.nvil.parameters(),
                                                    lr=self.learning_rate, **adam))
        self.forward = self.objective
        if world > 1:
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.objective, device_ids=[device] if device.type == "cuda" else None)

        self.guard = RunGuard(group.state, runs, device)
        self.counter = torch.zeros(1, dtype=torch.int64, device=device)
        self.bound_sum = torch.zeros(runs, dtype=torch.float64, device=device)
        self.bound_count = torch.zeros(runs, dtype=torch.int64, device=device)

        # Compiled, the objective's elementwise work, Adam's and the bookkeeping's run as a few
        # kernels; with capture, the compiled kernels are what the graph records.
        def compiled(function):
            return torch.compile(function) if self.compiling else None

        if self.compiling:
            # Each training compiles its own step afresh. Without the reset, a process that
            # trains many groups in a row (the paper programme measures 9 and trains 9) passes
            # dynamo's recompile limit of 8 for the objective and Adam, and the later groups
            # run uncompiled with only a warning (seen on an H200, torch 2.11).
            torch._dynamo.reset()

        self._objective = EagerFallback(self.forward, compiled(self.forward), "the objective")
        self._optimizers = EagerFallback(self._optimizer_steps, compiled(self._optimizer_steps),
                                         "Adam")
        self._snapshot = EagerFallback(self.guard.snapshot, compiled(self.guard.snapshot),
                                       "the run guard")
        self._finish = EagerFallback(self._finish_step, compiled(self._finish_step),
                                     "the bookkeeping")
        self._warm = False
        self.captured = CapturedStep(self.take, device) if self.capture else None
        self.mode = ("compiled+captured" if self.capture and self.compiling else
                     "captured" if self.capture else "compiled" if self.compiling else "eager")

    def _optimizer_steps(self):
        for optimizer in self.optimizers:
            optimizer.step()

    def _finish_step(self, loss, bound):
        self.counter.add_(1)
        took = self.guard.keep(loss, self.counter)
        _count(self.bound_sum, self.bound_count, bound, took)

    def set_rate(self, rate: float) -> None:
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                # captured: the one tensor the graph reads (a loaded state replaces it)
                group["lr"] = self.learning_rate if self.tensor_rate else rate
        if self.tensor_rate:
            self.learning_rate.fill_(rate)

    def take(self, x: torch.Tensor, noise: torch.Tensor):
        """One step on the runs' images x (R, B, pixels) and noise (K, R, B, latent)."""
        if self._objective.compiled is not None and not self._warm:
            # One eager pass first fills torch.distributions' KL dispatch cache, whose first
            # lookup would otherwise split the compiled graph in five; its EMA update is undone.
            ema = self.group.ema
            saved = None if ema is None or ema.value is None else ema.value.clone()
            with torch.no_grad():
                self.objective(x, noise)
            if ema is not None:
                ema.value = saved
            self._warm = True
        self._snapshot()
        loss, bound = self._objective(x, noise)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        self._optimizers()
        if self.group.nvil is not None:
            signal = bound
            if self.world > 1:  # every rank's c follows the bound of the whole minibatch
                signal = bound.clone()
                torch.distributed.all_reduce(signal)
                signal /= self.world
            self.group.nvil.update(signal.unsqueeze(-1))
        self._finish(loss.detach(), bound.detach())
        return loss, bound

    def __call__(self, x: torch.Tensor, noise: torch.Tensor, step: int) -> None:
        """Take the step, captured where it can be; a failed capture goes on eagerly."""
        if self.captured is None:
            self.take(x, noise)
            return
        try:
            self.captured(x, noise)
        except Exception as error:  # never lose a run to capture: eager always works
            print(f"capture: failed at step {step + 1} ({type(error).__name__}: "
                  f"{str(error).splitlines()[0][:200] if str(error) else ''}); "
                  "running eagerly", file=sys.stderr)
            self.captured = None
            self.mode = "compiled" if self.compiling else "eager"
            torch.cuda.synchronize(self.device)
            self.take(x, noise)

    def final_mode(self) -> str:
        if self._objective.compiled is None and self.mode.startswith("compiled"):
            return self.mode.removeprefix("compiled").removeprefix("+") or "eager"
        return self.mode
