"""Train the MNIST VAE with any gradient estimator of the registry, fast and resumably.

The whole training set lives on the device (:class:`~experiments.mnist.data.DeviceDataset`); each
step draws its minibatch there, computes the estimator's surrogate (seed eq. 4 or 6, or the
importance-weighted bound for "iwae" and "dreg") and takes an Adam step. Nothing goes through the
host between evaluations: the running training bound and the first non-finite loss are kept in
device tensors and read at evaluation and checkpoint points.

Every evaluation records the same yardstick for every estimator: the single-sample ELBO of
``eval_size`` test images (:func:`evaluate.test_elbo` with "pathwise_analytic_kl"). Evaluations and
the callback run under :func:`torch.random.fork_rng`, so they never move the training's random
stream: a run's parameters do not depend on how often it is evaluated or what the callback does.

Checkpoints are written atomically (temporary file, then :func:`os.replace`), hold only tensors
and plain Python values (``torch.load(path, weights_only=True)`` reads them), and carry every
random state, so a resumed run ends with the same parameters, bit for bit on the CPU, as one that
was never interrupted.

With ``capture`` on one CUDA device the whole step (forward, backward, both Adam steps, NVIL's
running mean and the bookkeeping above) is recorded once as a CUDA graph and replayed for every
minibatch, which removes the Python and kernel-launch overhead of a small network; see
:class:`_CapturedStep`. Its random numbers come from the graph-safe Philox stream of the default
CUDA generator, and its Adam is the "capturable" one with a learning-rate tensor, so a captured
run does not reproduce an eager run bit for bit: a checkpoint records ``capture`` and resumes in
the same mode only (the graph is captured anew after loading).

Command line: ``python -m experiments.mnist.train --help``. Under ``torchrun`` with WORLD_SIZE > 1
each rank takes its shard of every minibatch (DistributedDataParallel; NCCL on CUDA, Gloo on the
CPU) and only rank 0 writes files. Every rank starts from rank 0's network and the gradients are
averaged, so the ranks' parameters stay identical; each rank keeps its own moving average for
"score_function_ema" (rank 0's is checkpointed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.distributions import Distribution

from estimators import EmaBaseline
from estimators.base import set_validation, validation_enabled

from ..common import Timer, atomic_write, metadata, progress, save_results
from . import evaluate
from .data import BINARIZATIONS, DeviceDataset, MnistError, load_mnist
from .models import ARCHITECTURES, VAE

__all__ = ["TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "train",
           "total_steps", "iwae_schedule", "learning_rate_at", "NvilBaseline", "load_checkpoint",
           "main"]

SCHEDULES = ("constant", "iwae")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# The IWAE paper's schedule (Burda et al. 2016, section 5): 3^i passes at 1e-3 * 10^(-i/7).
IWAE_STAGES = 8


@dataclass(frozen=True)
class TrainConfig:
    architecture: str = "kingma-welling"  # a key of models.ARCHITECTURES: kingma-welling, iwae, tutorial
    latent: int = 20  # dimension of z
    likelihood: str = "bernoulli"  # decoder: "bernoulli" (binary or grey pixels) or "gaussian" (grey only)
    estimator: str = "pathwise_analytic_kl"  # any name of evaluate.estimator_names()
    num_samples: int = 1  # K: samples of z per image per step (the K of iwae and dreg)
    batch_size: int = 100  # images per step, over all ranks together
    learning_rate: float = 1e-3  # Adam's; the "iwae" schedule starts from it
    schedule: str = "constant"  # "constant", or "iwae": 3^i passes at learning_rate * 10^(-i/7), i = 0..7
    epochs: int = 1  # passes over the training set (caps the 3280 of the iwae schedule)
    max_examples: int = 0  # stop after this many training images seen (0: no cap)
    train_size: int = 0  # use the first n training images (0: all 60,000)
    binarization: str = "dynamic"  # "dynamic" (fresh Bernoulli draw per minibatch), "fixed" or "grey"
    seed: int = 0  # initialisation, minibatch order, binarization, samples, evaluation
    device: str = "cpu"  # "cpu", "cuda", "cuda:N" or "auto"
    dtype: str = "float32"  # "float32" or "float64", of the network and the data
    data_dir: str = ""  # folder of the MNIST files ("": $MNIST_DIR or data.default_directory())
    eval_every: int = 0  # training images between evaluations (0: once per epoch)
    eval_size: int = 1000  # test images (at most) in each evaluation of the test bound
    compile: bool = False  # torch.compile the objective and Adam (CUDA only; eager where it fails)
    capture: bool = False  # run each step as one CUDA graph (CUDA, one process; else eager)
    checkpoint: str = ""  # file to write checkpoints to ("": none)
    checkpoint_every: int = 0  # steps between checkpoints (0: at each evaluation)

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise ValueError with a one-line message naming the field and the fix."""
        names = evaluate.estimator_names()
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture {self.architecture!r} is unknown; choose from "
                             f"{', '.join(ARCHITECTURES)}")
        if self.estimator not in names:
            raise ValueError(f"estimator {self.estimator!r} is unknown; choose from "
                             f"{', '.join(names)}")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {self.likelihood!r}")
        if self.binarization not in BINARIZATIONS:
            raise ValueError(f"binarization must be one of {', '.join(BINARIZATIONS)}, "
                             f"got {self.binarization!r}")
        if self.likelihood == "gaussian" and self.binarization != "grey":
            raise ValueError("a gaussian likelihood models grey levels; use binarization 'grey'")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        minimum = evaluate.estimator_for(self.estimator).min_samples
        if self.num_samples < minimum:
            raise ValueError(f"estimator {self.estimator} needs num_samples >= {minimum}, "
                             f"got {self.num_samples}")
        for name in ("latent", "batch_size", "epochs", "eval_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_examples", "train_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: the default), got {getattr(self, name)}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError(f"learning_rate must be a positive number, got {self.learning_rate}")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the step and the checkpoint kept."""


@dataclass
class TrainResult:
    vae: VAE  # the trained network (on the training device)
    baseline: object  # the NVIL network, the EmaBaseline, or None
    history: dict  # equal-length lists, one entry per evaluation (see train())
    mode: str = "eager"  # how the steps ran at the end: "eager", "compiled" or "captured"


@dataclass
class TrainState:
    """What the callback sees at an evaluation point."""

    step: int
    examples_seen: int
    vae: VAE
    baseline: object
    x: torch.Tensor  # the minibatch of the step just taken (this rank's shard)


class NvilBaseline(nn.Module):
    """NVIL's baseline (Mnih & Gregor 2014): a running mean c of the bound plus b(x), 784-100-1 tanh.

    The network learns only the input-dependent residual around c, as in the paper; without c it
    would have to climb from 0 to a bound of minus a few hundred nats at Adam's pace first.
    """

    def __init__(self, data_dim: int = 784, hidden: int = 100, decay: float = 0.9):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(data_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.decay = decay
        self.register_buffer("centre", torch.zeros(()))
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.centre + self.net(x).squeeze(-1)

    @torch.no_grad()
    def update(self, bound: torch.Tensor) -> None:
        """Move c towards the minibatch's mean bound (on the device: no host sync)."""
        weight = torch.where(self.updates > 0, self.decay, 0.0).to(self.centre.dtype)
        self.centre.copy_(weight * self.centre + (1 - weight) * bound.to(self.centre.dtype))
        self.updates += 1


class _CapturedStep:
    """A whole training step as one CUDA graph, replayed for every minibatch.

    ``step(x)`` must do everything a step does (forward, backward, optimiser steps, bookkeeping)
    with tensor operations only: no host reads, no shapes that change, no Python-side state that
    changes from step to step (which a replay would not see). Each call copies the minibatch into
    one static input buffer on the device. The first ``warmup`` calls run ``step`` eagerly on a
    side stream, as PyTorch's recipe for whole-network capture does (Adam's moments, cuBLAS
    workspaces and the gradients' streams are set up outside the graph); the next call captures
    it and every call from then on replays the graph. The step sets the gradients to None before
    its backward pass, so during capture they are allocated in the graph's memory pool and each
    replay overwrites them.
    """

    def __init__(self, step: Callable[[torch.Tensor], object], device: torch.device,
                 warmup: int = 3):
        self.step, self.device, self.warmup = step, device, warmup
        self.static_x = None
        self.graph = None
        self.outputs = None  # what the captured step returned: static tensors, new each replay
        self._side_stream = None

    def __call__(self, x: torch.Tensor):
        if self.static_x is None:
            self.static_x = torch.empty_like(x)
        self.static_x.copy_(x)
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
            outputs = self.step(self.static_x)
        current.wait_stream(self._side_stream)
        return outputs

    def _capture(self):
        """(graph, outputs): the step recorded, not run; the caller replays it."""
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outputs = self.step(self.static_x)
        return graph, outputs


def _capture_blocker(config: TrainConfig, device: torch.device, world: int) -> str | None:
    """Why the step cannot be captured as a CUDA graph here, or None if it can."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, this run is on {device.type}"
    if world > 1:
        return "DistributedDataParallel's gradient all-reduce stays eager"
    if config.estimator == "score_function_ema":
        return "score_function_ema keeps its moving average in Python, which a replay would not update"
    if not evaluate.estimator_for(config.estimator).needs_rsample:
        # Seen on an H200 with torch 2.11: capturing the score function's q.sample (torch.normal
        # with tensor arguments) fails with "Offset increment outside graph capture encountered
        # unexpectedly", and leaves the CUDA generator unusable for the eager fallback.
        return (f"{config.estimator} draws z with q.sample, which CUDA graph capture rejects "
                "on torch 2.11")
    return None


def _compiles_on(device: torch.device) -> bool:
    """Whether ``compile`` compiles on this device (on the CPU it does not pay)."""
    return device.type == "cuda"


class _Objective(nn.Module):
    """The negative mean surrogate of a minibatch: one module, so that DDP and compile wrap it."""

    def __init__(self, vae: VAE, estimator, num_samples: int, nvil: NvilBaseline | None,
                 ema: EmaBaseline | None):
        super().__init__()
        self.vae, self.nvil = vae, nvil
        self.estimator, self.num_samples, self.ema = estimator, num_samples, ema

    def forward(self, x):
        options = {}
        if self.nvil is not None:
            # requires grad: score_function fits it to the learning signal in the same backward
            options["baseline"] = self.nvil(x)
        elif self.ema is not None:
            options["state"] = self.ema
        estimate = self.estimator(self.vae.bind(x), self.vae.posterior(x), self.num_samples,
                                  **options)
        return -estimate.surrogate.mean(), estimate.elbo.detach().mean()


def _bookkeep(counter, first_bad, bound_sum, loss, bound):
    """Count the step, note the first non-finite loss, add the bound: in place, on the device.

    In place because a captured graph keeps writing to the tensors it was captured with. The
    three running tensors have one element, not none: compiled by torch 2.13 on the CPU, an
    ``add_`` into a 0-d float64 tensor is lost.
    """
    counter.add_(1)
    first_bad.copy_(torch.where((first_bad < 0) & ~torch.isfinite(loss), counter, first_bad))
    bound_sum.add_(bound.to(bound_sum.dtype))  # the float64 running sum of the bounds


class _EagerFallback:
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


HISTORY_KEYS = ("step", "examples_seen", "epoch", "train_bound", "test_bound", "wall_seconds",
                "learning_rate")


def iwae_schedule(base: float = 1e-3) -> list[tuple[int, float]]:
    """(passes, learning rate) of each stage: 3^i passes at base * 10^(-i/7), i = 0..7."""
    return [(3 ** i, base * 10 ** (-i / 7)) for i in range(IWAE_STAGES)]


IWAE_PASSES = sum(passes for passes, _ in iwae_schedule())  # 3280: the whole schedule


def total_steps(config: TrainConfig, num_train_images: int) -> int:
    """The steps :func:`train` takes on ``num_train_images`` images: every whole minibatch of each
    epoch (an epoch drops its last partial one) for ``epochs`` passes, at most the iwae schedule's,
    or ceil(max_examples / batch_size) steps if that is fewer (the last minibatch is whole)."""
    epochs = config.epochs
    if config.schedule == "iwae":  # the schedule ends after its passes
        epochs = min(epochs, IWAE_PASSES)
    steps = epochs * (num_train_images // config.batch_size)
    if config.max_examples:
        steps = min(steps, math.ceil(config.max_examples / config.batch_size))
    return steps


def learning_rate_at(config: TrainConfig, epoch: int) -> float:
    """The learning rate of the (0-based) epoch."""
    if config.schedule == "constant":
        return config.learning_rate
    end = 0
    for passes, rate in iwae_schedule(config.learning_rate):
        end += passes
        if epoch < end:
            return rate
    return iwae_schedule(config.learning_rate)[-1][1]


def _distributed():
    """(rank, world size) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world


def _resolve_device(name: str, world: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device name torch knows; use cpu, cuda, "
                         "cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asks for CUDA, but torch sees no CUDA device; "
                             "use device 'cpu'")
        if world > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        elif device.index is None:  # "cuda": the current device, by index (fork_rng needs one)
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def _fork_rng(device: torch.device):
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# Fields a resumed run may change without changing what it computes.
# Not "capture": a captured run's random stream and Adam arithmetic differ from an eager one's.
_RESUMABLE_CHANGES = {"epochs", "max_examples", "data_dir", "checkpoint", "checkpoint_every",
                      "compile"}


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A checkpoint as saved by :func:`train` (tensors and plain values only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; drop --resume to start afresh")
    return torch.load(path, map_location="cpu", weights_only=True)


def train(config: TrainConfig, *, train_data: DeviceDataset | None = None,
          test_images: torch.Tensor | None = None,
          callback: Callable[[TrainState], None] | None = None,
          resume: bool = False) -> TrainResult:
    """Train a VAE as ``config`` says; return it with its baseline and history.

    ``train_data`` and ``test_images`` (float (N, 784), as the VAE sees them) replace the MNIST
    files; otherwise both are read from ``config.data_dir``. ``history`` holds, per evaluation:
    "step", "examples_seen", "epoch" (steps / steps per epoch), "train_bound" (the mean training
    bound of the steps since the previous evaluation: the ELBO, or for iwae and dreg the K-sample
    bound), "test_bound" (:func:`evaluate.test_elbo` with pathwise_analytic_kl, one sample, on
    the first ``eval_size`` test images, each evaluation under ``torch.manual_seed(config.seed)``),
    "wall_seconds" (training time so far, evaluations, callbacks and checkpoints excluded; the
    warm-up and capture of ``capture`` included) and "learning_rate". ``callback(state)`` is called
    after each history row. With ``resume``, training continues from ``config.checkpoint``.
    ``config.capture`` falls back to eager steps, with a one-line note on stderr, where the step
    cannot be captured (see :func:`_capture_blocker`) or capturing it fails.
    """
    config.validate()
    rank, world = _distributed()
    device = _resolve_device(config.device, world)
    dtype = DTYPES[config.dtype]
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the world size "
                         f"{world}")
    if resume and not config.checkpoint:
        raise ValueError("resume needs a checkpoint file; pass --checkpoint FILE")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    if train_data is None:
        images, _ = load_mnist(config.data_dir or None, "train")
        if config.train_size:
            images = images[:config.train_size]
        train_data = DeviceDataset(images, config.binarization, device, dtype, config.seed)
    elif config.train_size and config.train_size < len(train_data):
        raise ValueError(f"train_size {config.train_size} with train_data of {len(train_data)} "
                         "images: pass the subset itself, or train_size 0")
    if train_data.device.type != device.type or train_data.dtype != dtype:
        raise ValueError(f"train_data is {train_data.dtype} on {train_data.device}, the config "
                         f"says {dtype} on {device}; build the DeviceDataset with "
                         f"device={str(device)!r}, dtype={dtype}")
    if test_images is None:
        test, _ = load_mnist(config.data_dir or None, "test")
        test_images = DeviceDataset(test[:config.eval_size], config.binarization, device, dtype,
                                    config.seed).evaluation_images(config.seed)
    test_images = test_images[:config.eval_size]
    if config.batch_size > len(train_data):
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(train_data)} training "
                         "images; lower --batch-size or raise --train-size")

    # -- the model, its baseline and optimisers ------------------------------------------------
    torch.manual_seed(config.seed)
    vae = VAE(ARCHITECTURES[config.architecture](config.latent),
              likelihood=config.likelihood).to(device=device, dtype=dtype)
    nvil = ema = None
    if config.estimator == evaluate.NVIL:
        nvil = NvilBaseline(vae.data_dim).to(device=device, dtype=dtype)
    elif config.estimator == "score_function_ema":
        ema = EmaBaseline()
    baseline = nvil if nvil is not None else ema
    # Each rank draws its own samples of z; every rank starts from rank 0's network (DDP).
    torch.manual_seed(config.seed + rank)
    estimator = evaluate.estimator_for(config.estimator)
    objective = _Objective(vae, estimator, config.num_samples, nvil, ema)
    adam = {"eps": 1e-4} if config.schedule == "iwae" else {}  # Burda et al.'s Adam epsilon
    blocker = _capture_blocker(config, device, world) if config.capture else None
    capture = config.capture and blocker is None
    if config.capture and rank == 0:
        print(f"capture: skipped ({blocker}); running eagerly" if blocker else
              "capture: each step runs as one CUDA graph (after 3 eager warm-up steps)",
              file=sys.stderr)
    compiling = config.compile and _compiles_on(device)
    if config.compile and not compiling and rank == 0:
        print("compile: skipped on the CPU (it pays off on CUDA only)", file=sys.stderr)
    # Adam: fused on CUDA (one kernel instead of a dozen foreach launches); compiled, the
    # foreach Adam, which inductor turns into a few kernels that spread over the whole GPU
    # (on a small network the fused kernel keeps a dozen of its multiprocessors busy).
    if (capture or device.type == "cuda") and not compiling:
        adam["fused"] = True
    tensor_rate = capture or compiling
    learning_rate = config.learning_rate
    if tensor_rate:
        # A graph, or a compiled step, holds the learning rate it was made with unless it is a
        # device tensor; the schedule fill_()s this one at epoch boundaries. float32: fused
        # Adam reads it so.
        learning_rate = torch.tensor(config.learning_rate, dtype=torch.float32, device=device)
        adam["capturable"] = True
    optimizer = torch.optim.Adam(vae.parameters(), lr=learning_rate, **adam)
    nvil_optimizer = (torch.optim.Adam(nvil.parameters(), lr=learning_rate, **adam)
                      if nvil is not None else None)
    step_fn = objective
    if world > 1:
        step_fn = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device] if device.type == "cuda" else None)

    def optimizer_steps():
        optimizer.step()
        if nvil_optimizer is not None:
            nvil_optimizer.step()

    # Compiled, the objective's elementwise work, Adam's and the bookkeeping's run as a few
    # kernels; with capture, the compiled kernels are what the graph records.
    def compiled(function):
        return torch.compile(function) if compiling else None

    run_objective = _EagerFallback(step_fn, compiled(step_fn), "the objective")
    run_optimizers = _EagerFallback(optimizer_steps, compiled(optimizer_steps), "Adam")
    bookkeep = _EagerFallback(_bookkeep, compiled(_bookkeep), "the bookkeeping")
    warm = False

    def run_step(x):
        nonlocal warm
        if run_objective.compiled is not None and not warm:
            # One eager pass first fills torch.distributions' KL dispatch cache, whose first
            # lookup would otherwise split the compiled graph in five.
            with torch.no_grad(), _fork_rng(device):
                objective(x)
            warm = True
        return run_objective(x)

    generator = torch.Generator(device=device).manual_seed(config.seed)
    steps_per_epoch = len(train_data) // config.batch_size
    last_step = total_steps(config, len(train_data))
    eval_every = config.eval_every or steps_per_epoch * config.batch_size
    checkpoint_path = Path(config.checkpoint) if config.checkpoint else None
    shard = config.batch_size // world

    # -- state that a checkpoint carries -------------------------------------------------------
    history = {key: [] for key in HISTORY_KEYS}
    step, wall_seconds, last_checkpoint_step = 0, 0.0, None
    epoch_generator_state = None
    bound_sum = torch.zeros(1, dtype=torch.float64, device=device)  # one element: _bookkeep
    bound_count = 0
    if resume:
        saved = load_checkpoint(checkpoint_path)
        previous = TrainConfig(**saved["config"])
        changed = [f.name for f in dataclasses.fields(TrainConfig)
                   if getattr(previous, f.name) != getattr(config, f.name)
                   and f.name not in _RESUMABLE_CHANGES]
        if changed:
            raise ValueError(f"the checkpoint {checkpoint_path} was made with other settings "
                             f"({', '.join(changed)}); resume with the same settings")
        vae.load_state_dict(saved["vae"])
        optimizer.load_state_dict(saved["optimizer"])
        if nvil is not None:
            nvil.load_state_dict(saved["baseline"]["network"])
            nvil_optimizer.load_state_dict(saved["baseline"]["optimizer"])
        elif ema is not None:
            ema.load_state_dict(saved["baseline"])
            if ema.value is not None:
                ema.value = ema.value.to(device)
        history = {key: list(saved["history"][key]) for key in HISTORY_KEYS}
        step, wall_seconds = saved["step"], saved["wall_seconds"]
        bound_sum.copy_(saved["bound_sum"])
        bound_count = saved["bound_count"]
        epoch_generator_state = saved["epoch_generator_state"]
        generator.set_state(saved["generator_state"])
        _set_rng_state(saved["rng"], device)
        last_checkpoint_step = step

    def save_checkpoint():
        nonlocal last_checkpoint_step
        if checkpoint_path is None or rank != 0:
            return
        state = {
            "config": dataclasses.asdict(config),
            "vae": vae.state_dict(),
            "optimizer": optimizer.state_dict(),
            "baseline": ({"network": nvil.state_dict(), "optimizer": nvil_optimizer.state_dict()}
                         if nvil is not None else ema.state_dict() if ema is not None else None),
            "history": history,
            "step": step,
            "wall_seconds": wall_seconds,
            "bound_sum": bound_sum.cpu(),
            "bound_count": bound_count,
            "epoch_generator_state": epoch_generator_state,
            "generator_state": generator.get_state(),
            "rng": _rng_state(device),
            "mode": mode,
        }
        atomic_write(checkpoint_path, lambda tmp: torch.save(state, tmp))
        last_checkpoint_step = step

    first_bad = torch.full((1,), -1, dtype=torch.int64, device=device)
    counter = torch.full((1,), step, dtype=torch.int64, device=device)

    def take_step(x):
        """One step on the minibatch x: device work only, so that a CUDA graph can hold it."""
        loss, bound = run_step(x)
        optimizer.zero_grad(set_to_none=True)
        if nvil_optimizer is not None:
            nvil_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run_optimizers()
        if nvil_optimizer is not None:
            signal = bound
            if world > 1:  # every rank's c follows the bound of the whole minibatch
                signal = bound.clone()
                torch.distributed.all_reduce(signal)
                signal /= world
            nvil.update(signal)
        bookkeep(counter, first_bad, bound_sum, loss.detach(), bound.detach())
        return loss, bound

    captured = _CapturedStep(take_step, device) if capture else None
    mode = ("compiled+captured" if capture and compiling else "captured" if capture
            else "compiled" if compiling else "eager")

    def check_finite():
        bad = first_bad.clone()
        if world > 1:
            torch.distributed.all_reduce(bad, torch.distributed.ReduceOp.MAX)
        bad = int(bad.item())
        if bad >= 0:
            kept = (f"the checkpoint of step {last_checkpoint_step} at {checkpoint_path} is kept"
                    if last_checkpoint_step is not None else "no checkpoint was written")
            raise TrainingDiverged(f"the loss became non-finite at step {bad} (of "
                                   f"{config.estimator}, learning rate "
                                   f"{learning_rate_at(config, (bad - 1) // steps_per_epoch)}); "
                                   f"{kept}")

    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def evaluate_now(x):
        nonlocal bound_count
        total = bound_sum.clone()
        if world > 1:
            torch.distributed.all_reduce(total)
            total /= world
        with _fork_rng(device):
            torch.manual_seed(config.seed)
            test_bound = evaluate.test_elbo(vae, test_images)
        examples = step * config.batch_size
        row = {"step": step, "examples_seen": examples, "epoch": step / steps_per_epoch,
               "train_bound": total.item() / bound_count if bound_count else math.nan,
               "test_bound": test_bound, "wall_seconds": wall_seconds,
               "learning_rate": rate}
        for key in HISTORY_KEYS:
            history[key].append(row[key])
        bound_sum.zero_()
        bound_count = 0
        if callback is not None and rank == 0:
            with _fork_rng(device):
                callback(TrainState(step, examples, vae, baseline, x))
        return row

    # The estimators' NaN checks and torch.distributions' argument checks would each sync with
    # the host every step; a NaN is caught by check_finite() instead.
    was_validating, was_checking_args = validation_enabled(), Distribution._validate_args
    set_validation(False)
    Distribution.set_default_validate_args(False)
    bar = progress(total=last_step, initial=step, desc=f"train {config.estimator}",
                   **({"disable": True} if rank != 0 else {}))
    try:
        objective.train()
        while step < last_step:
            epoch, skip = divmod(step, steps_per_epoch)
            if skip:  # resumed mid-epoch: redraw this epoch's permutation, then replay below
                generator.set_state(epoch_generator_state)
            else:
                epoch_generator_state = generator.get_state()
            rate = learning_rate_at(config, epoch)
            for opt in (optimizer, nvil_optimizer):
                if opt is not None:
                    for group in opt.param_groups:
                        # captured: the one tensor the graph reads (a loaded state replaces it)
                        group["lr"] = learning_rate if tensor_rate else rate
            if tensor_rate:
                learning_rate.fill_(rate)
            batches = train_data.batches(config.batch_size, generator)
            for _ in range(skip):  # replay the epoch's draws up to where the checkpoint was
                next(batches)
            started = time.perf_counter()
            for x in batches:
                if world > 1:
                    x = x[rank * shard:(rank + 1) * shard]
                if captured is None:
                    take_step(x)
                else:
                    try:
                        captured(x)
                    except Exception as error:  # never lose a run to capture: eager always works
                        print(f"capture: failed at step {step + 1} ({type(error).__name__}: "
                              f"{str(error).splitlines()[0][:200] if str(error) else ''}); "
                              "running eagerly", file=sys.stderr)
                        captured, mode = None, "compiled" if compiling else "eager"
                        torch.cuda.synchronize(device)
                        take_step(x)
                step += 1
                bound_count += 1
                bar.update(1)
                evaluation_due = (step * config.batch_size // eval_every
                                  > (step - 1) * config.batch_size // eval_every)
                checkpoint_due = (config.checkpoint_every and step % config.checkpoint_every == 0)
                last = step == last_step
                if evaluation_due or checkpoint_due or last or step % 100 == 0:
                    synchronise()
                    wall_seconds += time.perf_counter() - started
                    check_finite()
                    if evaluation_due or last:
                        row = evaluate_now(x)
                        bar.set_postfix(test_bound=f"{row['test_bound']:.2f}")
                    if checkpoint_due or last or (evaluation_due and not config.checkpoint_every):
                        save_checkpoint()
                    started = time.perf_counter()
                if last:
                    break
            else:
                synchronise()
                wall_seconds += time.perf_counter() - started
    finally:
        bar.close()
        set_validation(was_validating)
        Distribution.set_default_validate_args(was_checking_args)
    if run_objective.compiled is None and mode.startswith("compiled"):  # compiling it failed
        mode = mode.removeprefix("compiled").removeprefix("+") or "eager"
    return TrainResult(vae, baseline, history, mode)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise SystemExit(f"error: {message} (see --help)")


def _field_help() -> dict[str, str]:
    """The comment after each TrainConfig field, as its --help text."""
    import inspect
    import re

    helps = {}
    for line in inspect.getsource(TrainConfig).splitlines():
        match = re.match(r"\s+(\w+): [^=]+=[^#]*#\s*(.*)", line)
        if match:
            helps[match.group(1)] = match.group(2).replace("%", "%%")
    return helps


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m experiments.mnist.train",
                     description="Train the MNIST VAE with one gradient estimator.",
                     epilog="estimators: " + ", ".join(evaluate.estimator_names()))
    helps = _field_help()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = helps.get(f.name, "") + f" (default: {f.default!r})"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=text)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str)
                                                             else f.type.__name__]
            parser.add_argument(flag, type=kind, default=f.default, help=text,
                                metavar=f.name.upper())
    parser.add_argument("--resume", action="store_true",
                        help="continue from --checkpoint FILE where it stopped")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                        help="write the history, the config and metadata here")
    return parser


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**values)
    try:
        config.validate()
        with Timer() as timer:
            result = train(config, resume=args.resume)
    except (ValueError, MnistError, FileNotFoundError, TrainingDiverged) as error:
        raise SystemExit(f"error: {error}") from None
    rank, _ = _distributed()
    history = result.history
    if rank == 0:
        last = {key: values[-1] for key, values in history.items() if values}
        print(json.dumps({"estimator": config.estimator, "mode": result.mode, **last}))
        if args.out is not None:
            meta = metadata(config, "mnist-train", timer.seconds, "experiments.mnist.train", argv)
            save_results(args.out, {"history": history}, meta)
    return history


if __name__ == "__main__":
    main()
