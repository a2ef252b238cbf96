"""The R runs of one training configuration as one network, and the objective each step ascends.

:func:`build_group` builds run r's VAE (and NVIL baseline) under run r's own "init" seed, as a
solo run would, and stacks the R of them (:func:`experiments.replicated.stack_modules`): every
parameter gets a leading run dimension. :class:`GroupObjective` is the loss of one step: for the
images x (R, B, 784) and the noise (K, R, B, latent) of the step, each run's negative mean
surrogate over its own minibatch, (R,). Their sum is what the backward pass differentiates, so
each run gets its own gradient, exactly as alone. :func:`test_bounds` evaluates every run's test
bound in one pass; :meth:`Group.run` takes run r out as a plain :class:`~models.VAE`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from estimators import ESTIMATORS, EmaBaseline

from ..replicated import NVIL, estimator_for, stack_modules, unstack_module
from .config import TrainConfig
from .models import ARCHITECTURES, VAE
from .streams import evaluation_generators, stream_seed

__all__ = ["NvilBaseline", "Group", "build_group", "GroupObjective", "test_bounds"]


class NvilBaseline(nn.Module):
    """NVIL's baseline (Mnih & Gregor 2014): a running mean c of the bound plus b(x), 784-100-1 tanh.

    The network learns only the input-dependent residual around c, as in the paper; without c it
    would have to climb from 0 to a bound of minus a few hundred nats at Adam's pace first. In a
    group (stacked) c and its update count are (R, 1), one per run, and :meth:`update` takes the
    runs' bounds as (R, 1).
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
        weight = (self.updates > 0).to(self.centre.dtype) * self.decay  # 0 at the first update
        self.centre.copy_(weight * self.centre + (1 - weight) * bound.to(self.centre.dtype))
        self.updates += 1


@dataclass
class Group:
    """The networks of R runs: stacked modules, and one plain module of each kind to unstack into."""

    vae: nn.Module  # the stacked VAE: its methods take (R, B, ...) inputs
    nvil: nn.Module | None  # the stacked NvilBaseline, for NVIL's runs
    ema: EmaBaseline | None  # one moving average per run (batch_dims=1), for score_function_ema
    templates: dict  # "vae", "nvil": plain modules of the architecture

    @property
    def num_runs(self) -> int:
        return next(self.vae.parameters()).shape[0]

    def run_vae(self, run: int) -> VAE:
        return unstack_module(self.vae, self.templates["vae"], run)

    def run_baseline(self, run: int):
        """Run ``run``'s learned baseline: an NvilBaseline, an EmaBaseline, or None."""
        if self.nvil is not None:
            return unstack_module(self.nvil, self.templates["nvil"], run)
        if self.ema is not None:
            own = EmaBaseline(self.ema.decay)
            own.value = None if self.ema.value is None else self.ema.value[run, 0].clone()
            return own
        return None

    def state(self) -> list[torch.Tensor]:
        """Every tensor of the runs' state that a non-finite step must not keep (run dim first)."""
        tensors = [*self.vae.parameters()]
        if self.nvil is not None:
            tensors += [*self.nvil.parameters(), self.nvil.centre, self.nvil.updates]
        if self.ema is not None and self.ema.value is not None:
            tensors.append(self.ema.value)
        return tensors


def build_group(config: TrainConfig, device: torch.device, dtype: torch.dtype) -> Group:
    """Run r's networks built under its own "init" seed, as its solo run builds them; stacked."""
    vaes, nvils = [], []
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # drawn in the run's own dtype, whatever the process default
    try:
        for seed in config.seeds:
            torch.manual_seed(stream_seed(seed, "init"))
            vaes.append(VAE(ARCHITECTURES[config.architecture](config.latent),
                            likelihood=config.likelihood).to(device=device))
            if config.estimator == NVIL:
                nvils.append(NvilBaseline(vaes[-1].data_dim).to(device=device))
    finally:
        torch.set_default_dtype(default)
    templates = {"vae": copy.deepcopy(vaes[0])}
    nvil = None
    if nvils:
        templates["nvil"] = copy.deepcopy(nvils[0])
        nvil = stack_modules(nvils)
    ema = EmaBaseline(batch_dims=1) if config.estimator == "score_function_ema" else None
    return Group(stack_modules(vaes), nvil, ema, templates)


class GroupObjective(nn.Module):
    """Each run's negative mean surrogate over its minibatch, and its mean bound: (R,), (R,).

    One module holds every trained parameter (the stacked VAE, NVIL's network), so that
    DistributedDataParallel and torch.compile can wrap it. NVIL's baseline requires grad: the
    score function fits it to the learning signal in the same backward pass.
    """

    def __init__(self, group: Group, num_samples: int, estimator: str):
        super().__init__()
        self.vae, self.nvil = group.vae, group.nvil
        self.ema = group.ema
        self.estimator, self.num_samples = estimator_for(estimator), num_samples

    def forward(self, x: torch.Tensor, noise: torch.Tensor):
        options = {}
        if self.nvil is not None:
            options["baseline"] = self.nvil(x)  # (R, B): c_r + b_r(x)
        elif self.ema is not None:
            options["state"] = self.ema
        estimate = self.estimator(self.vae.bind(x), self.vae.posterior(x, noise),
                                  self.num_samples, **options)
        return -estimate.surrogate.mean(-1), estimate.elbo.detach().mean(-1)


@torch.no_grad()
def test_bounds(group: Group, images: torch.Tensor, seeds, batch_size: int = 500) -> torch.Tensor:
    """Each run's single-sample ELBO (seed eq. 6) on the test images, (R,) float64 on the device.

    The same yardstick for every estimator, drawn from each run's "evaluate" stream afresh, so
    every evaluation of a run uses the same noise and no evaluation moves training's streams.
    """
    estimator = ESTIMATORS["pathwise_analytic_kl"]
    vae = group.vae
    generators = evaluation_generators(seeds, images.device)
    latent = group.templates["vae"].latent_dim
    runs = len(seeds)
    total = torch.zeros(runs, dtype=torch.float64, device=images.device)
    was_training = vae.training
    vae.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            part = images[start:start + batch_size]
            x = part.unsqueeze(0).expand(runs, *part.shape)
            noise = generators.normal((1, part.shape[0], latent), part.dtype, dim=1)
            bound = estimator(vae.bind(x), vae.posterior(x, noise), 1).elbo
            total += bound.double().sum(-1)
    finally:
        vae.train(was_training)
    return total / images.shape[0]
