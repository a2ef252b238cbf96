"""What one training of the MNIST VAE is: :class:`TrainConfig`, a commented dataclass, and its checks.

``num_runs`` R trains R independent runs of the configuration as one group: run r (0-based) is
the run that a solo training with seed ``seed + r`` makes (see :mod:`experiments.mnist.train`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..replicated import estimator_for, estimator_names
from .data import BINARIZATIONS
from .models import ARCHITECTURES
from .schedule import SCHEDULES

__all__ = ["TrainConfig", "DTYPES", "MAX_SEED"]

DTYPES = {"float32": torch.float32, "float64": torch.float64}
MAX_SEED = 2 ** 32 - 1  # numpy's and every other seeded tool's limit


@dataclass(frozen=True)
class TrainConfig:
    architecture: str = "kingma-welling"  # a key of models.ARCHITECTURES: kingma-welling, iwae, tutorial
    latent: int = 20  # dimension of z
    likelihood: str = "bernoulli"  # decoder: "bernoulli" (binary or grey pixels) or "gaussian" (grey only)
    estimator: str = "pathwise_analytic_kl"  # any name of estimator_names()
    num_samples: int = 1  # K: samples of z per image per step (the K of iwae and dreg)
    batch_size: int = 100  # images per step and run, over all ranks together
    learning_rate: float = 1e-3  # Adam's; the "iwae" schedule starts from it
    schedule: str = "constant"  # "constant", or "iwae": 3^i passes at learning_rate * 10^(-i/7), i = 0..7
    epochs: int = 1  # passes over the training set (caps the 3280 of the iwae schedule)
    max_examples: int = 0  # stop after this many training images seen per run (0: no cap)
    train_size: int = 0  # use the first n training images (0: all 60,000)
    binarization: str = "dynamic"  # "dynamic" (fresh Bernoulli draw per minibatch), "fixed" or "grey"
    seed: int = 0  # run r of the group: initialisation, minibatch order, binarization, samples from seed + r
    num_runs: int = 1  # R: independent runs trained as one group (each its own seed, seed + r)
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

    @property
    def seeds(self) -> list[int]:
        """The seed of each run: run r of the group is the solo run of seed ``seed + r``."""
        return [self.seed + run for run in range(self.num_runs)]

    def validate(self) -> None:
        """Raise ValueError with a one-line message naming the field and the fix."""
        names = estimator_names()
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
        minimum = estimator_for(self.estimator).min_samples
        if self.num_samples < minimum:
            raise ValueError(f"estimator {self.estimator} needs num_samples >= {minimum}, "
                             f"got {self.num_samples}")
        for name in ("latent", "batch_size", "epochs", "eval_size", "num_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_examples", "train_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: the default), got {getattr(self, name)}")
        if self.num_runs > MAX_SEED + 1:  # each run takes a seed of its own
            raise ValueError(f"num_runs must be <= {MAX_SEED + 1} (one seed a run), got "
                             f"{self.num_runs}")
        if not 0 <= self.seed or self.seed + self.num_runs - 1 > MAX_SEED:
            raise ValueError(f"seed must lie in 0..{MAX_SEED - self.num_runs + 1} (the runs take "
                             f"seeds seed .. seed + num_runs - 1 <= {MAX_SEED}), got {self.seed}")
        if not 0 < self.learning_rate <= 1:  # NaN fails too; above 1, Adam's steps overflow
            raise ValueError(f"learning_rate must be a positive number no larger than 1, got "
                             f"{self.learning_rate}")
