"""Train the MNIST VAE with any gradient estimator of the registry: R runs as one, fast, resumably.

``num_runs`` R independent runs of one configuration train as one group whose parameters carry
a leading run dimension; the loss is the sum of the runs' losses, so each run gets its own
gradient and Adam, which is elementwise, steps each run as if it were alone. **Run r (0-based) of
a group started with seed s is the run that a solo training with seed s + r makes**: every random
draw of a run comes from its own streams (:mod:`experiments.mnist.streams`). A run whose loss or
state turns non-finite is frozen at its last finite state and reported (its step, in
``TrainResult.diverged``); the others go on, as they would have without it. Only when every run
has frozen does training stop, with :class:`TrainingDiverged`.

The parts, each in one place:

- :mod:`~experiments.mnist.config`: :class:`TrainConfig` and its checks;
- :mod:`~experiments.mnist.schedule`: the steps a training takes and the learning rate of each
  epoch;
- :mod:`~experiments.mnist.streams`: every random draw, per run;
- :mod:`~experiments.mnist.group`: the R networks as one, the objective, the test bound;
- :mod:`~experiments.mnist.step`: one step, eager, compiled or captured as a CUDA graph;
- :mod:`~experiments.mnist.checkpoint`: checkpoints, written atomically, checked by checksum;
- this module: the loop that ties them together (:func:`train`) and the command line.

The whole training set lives on the device (:class:`~experiments.mnist.data.DeviceDataset`);
nothing goes through the host between evaluations: the running training bounds and the frozen
runs are kept in device tensors and read at evaluation and checkpoint points (and every 100
steps, to stop early when every run has frozen). Every evaluation records the same yardstick
for every estimator: each run's single-sample ELBO of ``eval_size`` test images
(:func:`~experiments.mnist.group.test_bounds`).

Command line: ``python -m experiments.mnist.train --help``. Under ``torchrun`` with
WORLD_SIZE > 1 each rank takes its shard of every minibatch (DistributedDataParallel; NCCL on
CUDA, Gloo on the CPU) and only rank 0 writes files. Every rank draws the whole minibatch and its
noise from the same streams and takes its shard, so the ranks' parameters stay identical and
equal those of one process, to rounding; each rank keeps its own moving average for
"score_function_ema" (rank 0's is checkpointed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.distributions import Distribution

from estimators import EmaBaseline
from estimators.base import set_validation, validation_enabled

from ..common import (Timer, check_writable, machine_free, metadata, progress, save_results,
                      torch_threads)
from .checkpoint import CheckpointError, load_checkpoint, remove_stale, save_checkpoint
from .config import DTYPES, TrainConfig
from .data import TEST_SEED, DeviceDataset, MnistError, load_mnist
from ..replicated import NVIL
from .group import Group, NvilBaseline, build_group, test_bounds
from .lock import holding
from .models import ARCHITECTURES, VAE
from .schedule import IWAE_PASSES, iwae_schedule, learning_rate_at, total_steps
from .step import Stepper
from .streams import RunStreams

__all__ = ["TrainConfig", "TrainResult", "RunResult", "TrainState", "TrainingDiverged", "train",
           "total_steps", "iwae_schedule", "IWAE_PASSES", "learning_rate_at", "NvilBaseline",
           "EmaBaseline", "load_checkpoint", "final_summary", "HISTORY_KEYS", "main"]

# The one sentence that keeps the two bounds a run reports apart.
BOUNDS_NOTE = ("train_bound is each run's mean bound over its training steps since the previous "
               "evaluation, on fresh minibatches while its parameters still moved (for iwae, dreg "
               "and vimco the K-sample bound); test_bound is the single-sample ELBO of its final "
               "parameters on the test images: a train bound below the test bound is expected")
HISTORY_KEYS = ("step", "examples_seen", "epoch", "train_bound", "test_bound", "wall_seconds",
                "learning_rate")
FINAL_KEYS = ("train_bound", "test_bound")  # the final numbers of a run's history

# Fields a resumed run may change without changing what it computes.
# Not "capture": a captured run's Adam arithmetic differs from an eager one's.
_RESUMABLE_CHANGES = {"epochs", "max_examples", "data_dir", "checkpoint", "checkpoint_every",
                      "compile"}


class TrainingDiverged(RuntimeError):
    """Every run's loss became NaN or infinite; the message names the steps and the checkpoint."""


@dataclass
class RunResult:
    seed: int  # the run is the solo run of this seed
    vae: VAE  # its trained network, a plain VAE (on the training device)
    baseline: object  # its NvilBaseline, its EmaBaseline, or None
    history: dict  # equal-length lists, one entry per evaluation (see train())
    diverged_at: int | None = None  # the step whose loss or state was non-finite (frozen before it)


@dataclass
class TrainResult:
    runs: list[RunResult]
    mode: str = "eager"  # how the steps ran at the end: "eager", "compiled" or "captured"
    finished: bool = True  # False: stopped at time_limit, to be resumed from the checkpoint
    group: Group | None = field(default=None, repr=False)  # the stacked networks, as trained

    # A solo run's numbers, and run 0's of a group.
    @property
    def vae(self) -> VAE:
        return self.runs[0].vae

    @property
    def baseline(self):
        return self.runs[0].baseline

    @property
    def history(self) -> dict:
        return self.runs[0].history

    @property
    def diverged(self) -> list[dict]:
        return [{"run": index, "seed": run.seed, "step": run.diverged_at}
                for index, run in enumerate(self.runs) if run.diverged_at is not None]


@dataclass
class TrainState:
    """What the callback sees at an evaluation point."""

    step: int
    examples_seen: int
    group: Group
    x: torch.Tensor  # the images of the step just taken, (R, B, pixels): this rank's shard
    diverged: list[int]  # the runs frozen so far

    @property
    def num_runs(self) -> int:
        return self.group.num_runs

    def vae(self, run: int = 0) -> VAE:
        """Run ``run``'s network now, as a plain VAE (a copy)."""
        return self.group.run_vae(run)

    def baseline(self, run: int = 0):
        return self.group.run_baseline(run)


def final_summary(histories: list[dict], diverged: list[dict] | None = None) -> dict:
    """The mean and standard error over runs of each final number, over the runs that did not
    diverge: ``{key: {"mean", "se", "runs"}}`` (se is NaN with one run)."""
    skipped = {d["run"] for d in diverged or []}
    out = {}
    for key in FINAL_KEYS:
        values = [h[key][-1] for index, h in enumerate(histories)
                  if h[key] and index not in skipped]
        values = torch.tensor(values, dtype=torch.float64)
        count = values.numel()
        out[key] = {"mean": values.mean().item() if count else math.nan,
                    "se": (values.std() / math.sqrt(count)).item() if count > 1 else math.nan,
                    "runs": count}
    return out


def _distributed():
    """(rank, world size) from torchrun's environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world


def _resolve_device(name: str, world: int, who: str = "the trainer") -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device name torch knows; use cpu, cuda, "
                         "cuda:N or auto") from None
    if device.type not in ("cpu", "cuda"):  # meta, mps, ...: the trainer runs on neither
        raise ValueError(f"--device {name}: {who} runs on cpu or cuda devices only; "
                         "use cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asks for CUDA, but torch sees no CUDA device; "
                             "use device 'cpu'")
        if world > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        elif device.index is None:  # "cuda": the current device, by index
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    return device


def _writable_checkpoint(path: Path) -> None:
    """Refuse, before any work, a checkpoint that could not be written."""
    try:
        check_writable(path.parent, "the checkpoint folder")
    except ValueError as error:
        raise ValueError(f"{error}; choose another --checkpoint") from None


def _free_memory(device: torch.device) -> int | None:
    """Bytes free on ``device`` now (None where it cannot be told)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _bytes(count: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.3g} {unit}"
        count /= 1000


def memory_per_run(config: TrainConfig, num_images: int) -> int:
    """Bytes one run of a group holds at least: its parameters, their gradients and Adam's two
    moments, a block of its minibatch draws (:mod:`~experiments.mnist.streams`) and its
    permutation of the training images. An underestimate (activations are left out), so that a
    refusal is never wrong."""
    from .streams import block_steps

    with torch.device("meta"):  # counted, not allocated
        modules = [VAE(ARCHITECTURES[config.architecture](config.latent),
                       likelihood=config.likelihood)]
        if config.estimator == NVIL:
            modules.append(NvilBaseline())
    parameters = sum(p.numel() for module in modules for p in module.parameters())
    size = DTYPES[config.dtype].itemsize
    steps = min(block_steps(config.batch_size, 784), max(num_images // config.batch_size, 1))
    draws = steps * config.batch_size * (784 + config.num_samples * config.latent)
    return 4 * parameters * size + draws * size + 8 * num_images


def check_memory(config: TrainConfig, device: torch.device, num_images: int | None = None):
    """Refuse, in one line and before anything is built, ``num_runs`` that cannot fit in the
    memory free on ``device`` (an over-large group otherwise spent minutes building its runs
    before failing, or swapped)."""
    num_images = num_images or config.train_size or 60_000
    per_run = memory_per_run(config, num_images)
    free = _free_memory(device)
    if free is None or per_run * config.num_runs <= free:
        return
    fits = free // per_run
    raise ValueError(f"num_runs {config.num_runs} needs at least "
                     f"{_bytes(per_run * config.num_runs)} of memory ({_bytes(per_run)} a run: "
                     f"parameters, gradients, Adam's moments, minibatch draws), more than the "
                     f"{_bytes(free)} free on {device}; "
                     + (f"use fewer runs per group (--num-runs; at most {fits} fit before "
                        "activations are counted)" if fits else
                        "even one run does not fit: use a smaller network or batch"))


def _load_data(config: TrainConfig, train_data, test_images, device, dtype):
    if train_data is None:
        images, _ = load_mnist(config.data_dir or None, "train")
        if config.train_size > len(images):
            raise ValueError(f"train_size {config.train_size} exceeds the {len(images)} "
                             "training images; use at most that, or 0 for all")
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
                                    TEST_SEED).evaluation_images(TEST_SEED)
    test_images = test_images[:config.eval_size]
    if config.batch_size > len(train_data):
        raise ValueError(f"batch_size {config.batch_size} exceeds the {len(train_data)} training "
                         "images; lower --batch-size or raise --train-size")
    return train_data, test_images


def train(config: TrainConfig, *, train_data: DeviceDataset | None = None,
          test_images: torch.Tensor | None = None,
          callback: Callable[[TrainState], None] | None = None, resume: bool = False,
          overwrite: bool = False, time_limit: float | None = None,
          distributed: bool = True, announce: bool = True,
          checkpoint_locked: bool = False) -> TrainResult:
    """Train ``config.num_runs`` runs of ``config`` as one group; return each run's result.

    ``train_data`` and ``test_images`` (float (N, 784), as the VAE sees them) replace the MNIST
    files; otherwise both are read from ``config.data_dir``. Each run's ``history`` holds, per
    evaluation: "step", "examples_seen" (per run), "epoch" (steps / steps per epoch),
    "train_bound" (the run's mean training bound over the steps since the previous evaluation:
    the ELBO, or for iwae and dreg the K-sample bound; NaN once it has frozen), "test_bound"
    (:func:`~experiments.mnist.group.test_bounds`: the single-sample ELBO of the first
    ``eval_size`` test images), "wall_seconds" (training time so far, evaluations, callbacks and
    checkpoints excluded; the warm-up and capture of ``capture`` included) and "learning_rate".
    ``callback(state)`` is called after each evaluation. With ``resume``, training continues
    from ``config.checkpoint``; an existing checkpoint is otherwise refused unless ``overwrite``.
    With ``time_limit`` (seconds), training stops at the first check (every 100 steps) after
    that much time, writes its checkpoint and returns with ``finished`` False. ``distributed``
    False trains in this process alone even under torchrun (whose ranks then train groups of
    their own, as the paper programme does).
    ``config.capture`` falls back to eager steps, with a one-line note on stderr, where the step
    cannot be captured or capturing it fails; ``announce`` False leaves out the note of what
    capture and compile will do (a caller that trains many groups says it once), not that of a
    failure. With ``config.checkpoint``, the checkpoint's lock (:mod:`~experiments.mnist.lock`)
    is held for the whole training: a second trainer on the same path is refused at once
    (``checkpoint_locked``: the caller holds it already, for work of its own around the training).
    ``num_runs`` whose networks, Adam states and minibatch draws cannot fit in the device's free
    memory are refused before anything is built (:func:`check_memory`).
    """
    config.validate()
    rank, world = _distributed() if distributed else (0, 1)
    device = _resolve_device(config.device, world)
    dtype = DTYPES[config.dtype]
    if config.batch_size % world:
        raise ValueError(f"batch_size {config.batch_size} must be divisible by the world size "
                         f"{world}")
    checkpoint_path = Path(config.checkpoint) if config.checkpoint else None
    if resume and checkpoint_path is None:
        raise ValueError("resume needs a checkpoint file; pass --checkpoint FILE")
    if checkpoint_path is not None:
        if checkpoint_path.is_dir():
            raise ValueError(f"the checkpoint {checkpoint_path} is a folder; give --checkpoint a "
                             f"file, e.g. {checkpoint_path / 'run.pt'}")
        _writable_checkpoint(checkpoint_path)
    check_memory(config, device, len(train_data) if train_data is not None else None)
    # Held from before the first look at the checkpoint to the end: a second trainer on the same
    # path is refused, and the temporary files found beside it are nobody's.
    lock = (holding(checkpoint_path, f"the checkpoint {checkpoint_path}",
                    "wait for that training to end, or choose another --checkpoint path")
            if checkpoint_path is not None and rank == 0 and not checkpoint_locked
            else contextlib.nullcontext())
    with lock:
        return _train(config, train_data, test_images, callback, resume, overwrite, time_limit,
                      rank, world, device, dtype, checkpoint_path, announce)


def _train(config, train_data, test_images, callback, resume, overwrite, time_limit, rank, world,
           device, dtype, checkpoint_path, announce) -> TrainResult:
    saved = None
    if checkpoint_path is not None:
        if rank == 0:
            remove_stale(checkpoint_path)
        if resume:
            saved = load_checkpoint(checkpoint_path)
            _check_resumable(saved, config, checkpoint_path)
        elif checkpoint_path.exists() and not overwrite:
            raise ValueError(f"the checkpoint {checkpoint_path} exists; pass --resume to go on "
                             "from it, --overwrite to start afresh over it, or a new "
                             "--checkpoint path")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    train_data, test_images = _load_data(config, train_data, test_images, device, dtype)

    group = build_group(config, device, dtype)
    stepper = Stepper(group, config, device, world, rank, announce=announce)
    streams = RunStreams(train_data, config.seeds, config.batch_size, config.num_samples,
                         config.latent)
    steps_per_epoch = streams.steps_per_epoch
    last_step = total_steps(config, len(train_data))
    if saved is not None and saved["step"] > last_step:
        raise ValueError(f"the checkpoint {checkpoint_path} has trained {saved['step']} steps, "
                         f"more than the {last_step} these settings take; raise --epochs or "
                         "--max-examples to at least its, or drop --resume")
    eval_every = config.eval_every or steps_per_epoch * config.batch_size
    shard = config.batch_size // world
    runs = config.num_runs

    histories = [{key: [] for key in HISTORY_KEYS} for _ in range(runs)]
    step, wall_seconds, last_checkpoint_step = 0, 0.0, None
    if saved is not None:
        _restore(saved, group, stepper, streams, checkpoint_path)
        histories = [{key: list(h[key]) for key in HISTORY_KEYS} for h in saved["histories"]]
        step, wall_seconds = saved["step"], saved["wall_seconds"]
        last_checkpoint_step = step
    stepper.counter.fill_(step)

    def save():
        nonlocal last_checkpoint_step
        if checkpoint_path is None or rank != 0:
            return
        save_checkpoint(checkpoint_path, {
            "config": dataclasses.asdict(config),
            "vae": group.vae.state_dict(),
            "nvil": group.nvil.state_dict() if group.nvil is not None else None,
            "ema": group.ema.state_dict() if group.ema is not None else None,
            "optimizers": [optimizer.state_dict() for optimizer in stepper.optimizers],
            "histories": histories,
            "step": step,
            "wall_seconds": wall_seconds,
            "bound_sum": stepper.bound_sum.cpu(),
            "bound_count": stepper.bound_count.cpu(),
            "alive": stepper.guard.alive.cpu(),
            "first_bad": stepper.guard.first_bad.cpu(),
            "streams": streams.state(step),
            "mode": stepper.mode,
        })
        last_checkpoint_step = step

    def frozen() -> list[int]:
        """The steps at which runs froze (-1: not); stops when every run has."""
        bad = stepper.guard.first_bad.clone()
        if world > 1:
            torch.distributed.all_reduce(bad, torch.distributed.ReduceOp.MAX)
        bad = bad.tolist()
        if min(bad) >= 0:
            kept = (f"the checkpoint of step {last_checkpoint_step} at {checkpoint_path} is kept"
                    if last_checkpoint_step is not None else "no checkpoint was written")
            steps = ", ".join(str(b) for b in bad)
            rate = learning_rate_at(config, (max(bad) - 1) // steps_per_epoch)
            raise TrainingDiverged(
                f"the loss became non-finite at step {steps} (of {config.estimator}, learning "
                f"rate {rate}{'; one step per run' if runs > 1 else ''}); {kept}")
        return bad

    def evaluate_now(x, rate, bad):
        totals = stepper.bound_sum.clone()
        counts = stepper.bound_count.clone()
        if world > 1:
            torch.distributed.all_reduce(totals)
            totals /= world
        tests = test_bounds(group, test_images, config.seeds).tolist()
        trains = (totals / counts.clamp_min(1)).where(counts > 0, math.nan).tolist()
        examples = step * config.batch_size
        for run, history in enumerate(histories):
            row = {"step": step, "examples_seen": examples, "epoch": step / steps_per_epoch,
                   "train_bound": trains[run], "test_bound": tests[run],
                   "wall_seconds": wall_seconds, "learning_rate": rate}
            for key in HISTORY_KEYS:
                history[key].append(row[key])
        stepper.bound_sum.zero_()
        stepper.bound_count.zero_()
        if callback is not None and rank == 0:
            callback(TrainState(step, examples, group, x,
                                [r for r, b in enumerate(bad) if b >= 0]))
        return tests

    def synchronise():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    # The estimators' NaN checks and torch.distributions' argument checks would each sync with
    # the host every step; a non-finite run is caught on the device instead.
    was_validating, was_checking_args = validation_enabled(), Distribution._validate_args
    set_validation(False)
    Distribution.set_default_validate_args(False)
    bar = progress(total=last_step, initial=step,
                   desc=f"train {config.estimator}" + (f" x{runs}" if runs > 1 else ""),
                   **({"disable": True} if rank != 0 else {}))
    finished, rate = True, None
    invocation = time.perf_counter()
    try:
        group.vae.train()
        started = time.perf_counter()
        while step < last_step:
            epoch_rate = learning_rate_at(config, step // steps_per_epoch)
            if epoch_rate != rate:
                stepper.set_rate(epoch_rate)
                rate = epoch_rate
            x, noise = streams.draws(step)
            if world > 1:
                x = x[:, rank * shard:(rank + 1) * shard]
                noise = noise[:, :, rank * shard:(rank + 1) * shard]
            stepper(x, noise, step)
            step += 1
            bar.update(1)
            evaluation_due = (step * config.batch_size // eval_every
                              > (step - 1) * config.batch_size // eval_every)
            checkpoint_due = bool(config.checkpoint_every) and step % config.checkpoint_every == 0
            last = step == last_step
            if evaluation_due or checkpoint_due or last or step % 100 == 0:
                synchronise()
                wall_seconds += time.perf_counter() - started
                bad = frozen()
                if evaluation_due or last:
                    tests = evaluate_now(x, rate, bad)
                    bar.set_postfix(test_bound=f"{sum(tests) / len(tests):.2f}")
                out_of_time = (time_limit is not None and not last
                               and time.perf_counter() - invocation > time_limit)
                if (checkpoint_due or last or out_of_time
                        or (evaluation_due and not config.checkpoint_every)):
                    save()
                if out_of_time:
                    finished = False
                    break
                started = time.perf_counter()
    finally:
        bar.close()
        set_validation(was_validating)
        Distribution.set_default_validate_args(was_checking_args)
    bad = stepper.guard.first_bad.tolist()
    results = [RunResult(seed, group.run_vae(run), group.run_baseline(run), histories[run],
                         bad[run] if bad[run] >= 0 else None)
               for run, seed in enumerate(config.seeds)]
    return TrainResult(results, stepper.final_mode(), finished, group)


def _check_resumable(saved: dict, config: TrainConfig, path: Path) -> None:
    try:
        previous = TrainConfig(**saved["config"])
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{path} holds no trainer settings this version reads "
                              f"({type(error).__name__}: {error}); start afresh with "
                              "--overwrite or a new --checkpoint path") from None
    changed = [f.name for f in dataclasses.fields(TrainConfig)
               if getattr(previous, f.name) != getattr(config, f.name)
               and f.name not in _RESUMABLE_CHANGES]
    if changed:
        raise ValueError(f"the checkpoint {path} was made with other settings "
                         f"({', '.join(changed)}); resume with the same settings")


def _restore(saved: dict, group: Group, stepper: Stepper, streams: RunStreams,
             path: Path) -> None:
    """Load a checked checkpoint's state into the group, its optimisers and its streams."""
    try:
        group.vae.load_state_dict(saved["vae"])
        if group.nvil is not None:
            group.nvil.load_state_dict(saved["nvil"])
        if group.ema is not None:
            group.ema.load_state_dict(saved["ema"])
            if group.ema.value is not None:
                group.ema.value = group.ema.value.to(stepper.device)
        if len(saved["optimizers"]) != len(stepper.optimizers):
            raise ValueError(f"{len(saved['optimizers'])} optimiser states for "
                             f"{len(stepper.optimizers)} optimisers")
        for optimizer, state in zip(stepper.optimizers, saved["optimizers"]):
            optimizer.load_state_dict(state)
        for name in ("bound_sum", "bound_count"):
            getattr(stepper, name).copy_(saved[name])
        stepper.guard.alive.copy_(saved["alive"])
        stepper.guard.first_bad.copy_(saved["first_bad"])
        streams.restore(saved["streams"], saved["step"])
        if len(saved["histories"]) != group.num_runs:
            raise ValueError(f"{len(saved['histories'])} histories for {group.num_runs} runs")
    except (KeyError, RuntimeError, ValueError, TypeError) as error:
        first = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        raise CheckpointError(f"{path} does not fit these settings ({type(error).__name__}: "
                              f"{first}); start afresh with --overwrite or a new --checkpoint "
                              "path") from None


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
    from ..replicated import estimator_names

    parser = _Parser(prog="python -m experiments.mnist.train",
                     description="Train the MNIST VAE with one gradient estimator, R runs as one "
                                 "(--num-runs R; run r is the solo run of --seed S + r).",
                     epilog="estimators: " + ", ".join(estimator_names()))
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
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh over an existing --checkpoint FILE")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE.json",
                        help="write each run's history, the mean and standard error over runs "
                             "of the final numbers, the config and metadata here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1, which a shared or small CPU runs "
                             "fastest; 0: torch's default, one per core)")
    return parser


def main(argv=None) -> dict:
    args = _parser().parse_args(argv)
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    config = TrainConfig(**values)
    try:
        config.validate()
        if args.threads < 0:
            raise ValueError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
        if args.out is not None:
            _writable_out(args.out, config.checkpoint)
        with Timer() as timer, torch_threads(args.threads):
            result = train(config, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, MnistError, FileNotFoundError, TrainingDiverged) as error:
        raise SystemExit(f"error: {error}") from None
    rank, _ = _distributed()
    histories = [run.history for run in result.runs]
    final = final_summary(histories, result.diverged)
    if rank == 0:
        def rounded(value):  # the --out file keeps every digit; one run has no s.e. (null)
            return round(value, 3) if math.isfinite(value) else None

        shown = {key: {"mean": rounded(v["mean"]), "se": rounded(v["se"]), "runs": v["runs"]}
                 for key, v in final.items()}
        print(json.dumps({"estimator": config.estimator, "mode": result.mode,
                          "num_runs": config.num_runs, "diverged": result.diverged, **shown}))
        print(BOUNDS_NOTE, file=sys.stderr)
        if args.out is not None:
            # Where this machine keeps its files is no part of what was computed.
            recorded = config.replace(checkpoint=machine_free(config.checkpoint),
                                      data_dir=machine_free(config.data_dir))
            meta = metadata(recorded, "mnist-train", timer.seconds, "experiments.mnist.train",
                            argv)
            save_results(args.out, {"runs": [{"seed": run.seed, "history": run.history,
                                              "diverged_at": run.diverged_at}
                                             for run in result.runs],
                                    "final": final, "diverged": result.diverged,
                                    "note": BOUNDS_NOTE}, meta)
    return {"runs": histories, "final": final}


def _writable_out(path: Path, checkpoint: str) -> None:
    """Refuse, before training, a results file that could not be written or would replace the
    checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--out {path} is a folder; give a file, e.g. {path / 'history.json'}")
    if checkpoint and path.resolve() == Path(checkpoint).resolve():
        raise ValueError(f"--out and --checkpoint are the same file ({path}): the results would "
                         "replace the checkpoint; give them different paths")
    check_writable(path.parent, "the folder of --out")


if __name__ == "__main__":
    main()
