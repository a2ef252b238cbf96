"""R copies of one network as one: parameters with a leading run (or replicate) dimension.

Independent problems are a batch dimension. A group of R training runs of one configuration is
one run whose parameters all carry a leading run dimension R (:func:`stack_modules`: every
linear layer a :class:`RunLinear`, one :func:`torch.baddbmm` for all runs); the loss is the sum
of the runs' losses, so one backward pass gives each run its own gradient, and Adam, which is
elementwise, steps each run as if it were alone. A gradient probe of R replicates is the same
with R copies of one parameter set: :func:`replicated_vae_build` runs them through
:func:`torch.func.vmap` over :func:`torch.func.functional_call`, for
:func:`estimators.diagnostics.replicate_gradients`. (For training, the batched layers are the
faster of the two: ``python -m experiments.benchmark_runs`` measures both.)

:class:`RunGenerators` gives run r its own random stream, seeded s + r, and stacks the runs'
draws, so that run r of a group started with seed s is the solo run of seed s + r.
:class:`RunGuard` freezes a run whose loss or state turns non-finite at its last finite state,
on the device, while the others go on.

Also here, for the VAE studies (gmm-vae, mnist-vae, the MNIST trainer): the names of the
estimators they train with (the registry's, plus NVIL's) and the options of a gradient
measurement that must not move training's state (:func:`probe_options`).
"""

from __future__ import annotations

import copy
import zlib
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.distributions import Independent, Normal
from torch.func import functional_call, vmap

from estimators import ESTIMATORS, EmaBaseline

__all__ = ["NVIL", "estimator_names", "estimator_for", "probe_options", "RunLinear",
           "stack_modules", "unstack_module", "run_forward", "replicated_vae_build",
           "stream_seed", "RunGenerators", "RunGuard"]

# The score function with NVIL's learned, input-dependent baseline b(x) (Mnih & Gregor 2014): the
# registry's score_function given ``baseline=b(x)``, a tensor of shape (B,), or (R, B) for R runs.
NVIL = "score_function+nvil"


def estimator_names() -> list[str]:
    """The registry names that a Gaussian VAE can train, then NVIL's.

    The estimators of discrete latents only (``Estimator.q_kinds`` without "continuous":
    enumeration, the relaxations, REBAR, RELAX, ARM, DisARM) cannot take a Gaussian q and are
    left out; the discrete study trains them on Bernoulli latents.
    """
    return [name for name, e in ESTIMATORS.items() if "continuous" in e.q_kinds] + [NVIL]


def estimator_for(name: str):
    """The registry entry behind ``name`` (NVIL is the score function with a baseline)."""
    if name == NVIL:
        return ESTIMATORS["score_function"]
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(estimator_names())}")
    return ESTIMATORS[name]


def probe_options(name: str, x: torch.Tensor, options: Mapping | None = None,
                  baseline=None) -> dict:
    """The options of estimator ``name`` for measuring gradients on the minibatch ``x``.

    NVIL's baseline (``baseline``, else ``options["baseline"]``: a network b(x) or a tensor of
    shape (B,)) is used detached, so that measuring does not train it. score_function_ema's
    ``state`` is copied, so that measuring does not move training's running average.
    """
    options = dict(options or {})
    if name == NVIL:
        baseline = options.get("baseline") if baseline is None else baseline
        if baseline is None:
            raise ValueError(f"{NVIL} needs baseline=: a network b(x) or a tensor of shape (B,)")
        value = baseline(x) if callable(baseline) and not torch.is_tensor(baseline) else baseline
        value = value.detach().reshape(-1).to(dtype=x.dtype)
        if value.shape[0] != x.shape[0]:
            raise ValueError(f"{NVIL}: baseline has {value.shape[0]} values for a minibatch of "
                             f"{x.shape[0]} inputs")
        options["baseline"] = value
    elif name == "score_function_ema":
        # One state even when none is given (score_function_ema would make its own per call):
        # the chunks of a chunked measurement share it, each moving it for the next, as they
        # always have; the numbers of chunked runs depend on that.
        options["state"] = copy.deepcopy(options.get("state") or EmaBaseline())
    return options


# --------------------------------------------------------------------------------------------
# Groups of runs: R modules of one architecture as one module
# --------------------------------------------------------------------------------------------


class RunLinear(nn.Module):
    """R independent affine maps as one: run r's is ``x @ weight[r] + bias[r]``.

    ``weight`` is (R, in, out) and ``bias`` (R, 1, out); inputs are (..., R, B, in), the run
    dimension third from the end as in every batch shape of a group, (S, R, B) for S samples of
    z. One :func:`torch.baddbmm` does every run at once.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    @classmethod
    def stack(cls, linears: Sequence[nn.Linear]) -> "RunLinear":
        weight = torch.stack([layer.weight.detach().t() for layer in linears]).contiguous()
        bias = torch.stack([layer.bias.detach() for layer in linears]).unsqueeze(1)
        return cls(weight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(f"RunLinear: inputs are (..., R, B, in), got {tuple(x.shape)}")
        runs_first = x.movedim(-3, 0)  # free when x came out of a RunLinear: its own layout
        flat = runs_first.reshape(runs_first.shape[0], -1, runs_first.shape[-1])
        inputs, outputs = self.weight.shape[1:]
        # A matrix product with one output (or one input) column is a matrix-vector product, and
        # on the CPU its result for run r depends on how many runs there are; written as a
        # product and a sum it does not, so a group's runs compute what solo runs compute.
        if outputs == 1:
            out = (flat * self.weight[:, :, 0].unsqueeze(1)).sum(-1, keepdim=True) + self.bias
        elif inputs == 1:
            out = flat * self.weight + self.bias
        else:
            out = torch.baddbmm(self.bias, flat, self.weight)
        return out.reshape(*runs_first.shape[:-1], out.shape[-1]).movedim(0, -3)

    def run(self, index: int) -> nn.Linear:
        """Run ``index``'s map as a plain :class:`torch.nn.Linear`."""
        layer = nn.Linear(self.weight.shape[1], self.weight.shape[2], device=self.weight.device,
                          dtype=self.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(self.weight[index].t())
            layer.bias.copy_(self.bias[index, 0])
        return layer

    def extra_repr(self) -> str:
        return f"runs={self.weight.shape[0]}, in={self.weight.shape[1]}, out={self.weight.shape[2]}"


def stack_modules(modules: Sequence[nn.Module]) -> nn.Module:
    """One module that runs R copies of an architecture, each with its own numbers.

    A copy of ``modules[0]`` in which every :class:`torch.nn.Linear` becomes a :class:`RunLinear`
    of the R modules' layers, and every other parameter or buffer p becomes (R, 1, *p.shape),
    run r's at ``[r, 0]``: shaped so that it broadcasts against (..., R, B, ...), as a shared p
    broadcasts against (..., B, ...). The module's own methods then run unchanged on inputs with
    a run dimension: ``posterior(x)`` on x of shape (R, B, 784) gives q of batch shape (R, B).
    Build the R modules each from its own seed, as solo runs would, and stack them: the group
    starts where the solo runs start. :func:`unstack_module` takes run r back out.
    """
    if not modules:
        raise ValueError("stack_modules needs at least one module")
    group = copy.deepcopy(modules[0])
    linears = [name for name, sub in group.named_modules() if isinstance(sub, nn.Linear)]
    for name in linears:
        parent, _, leaf = name.rpartition(".")
        owner = group.get_submodule(parent) if parent else group
        setattr(owner, leaf, RunLinear.stack([m.get_submodule(name) for m in modules]))
    for sub_name, sub in group.named_modules():
        if isinstance(sub, RunLinear):
            continue
        prefix = f"{sub_name}." if sub_name else ""
        for name, _ in list(sub.named_parameters(recurse=False)):
            values = [m.get_parameter(prefix + name).detach() for m in modules]
            setattr(sub, name, nn.Parameter(torch.stack(values).unsqueeze(1)))
        for name, _ in list(sub.named_buffers(recurse=False)):
            values = [m.get_buffer(prefix + name) for m in modules]
            sub.register_buffer(name, torch.stack(values).unsqueeze(1).clone())
    return group


def unstack_module(group: nn.Module, template: nn.Module, index: int) -> nn.Module:
    """Run ``index`` of a :func:`stack_modules` group as a plain module like ``template``."""
    plain = copy.deepcopy(template)
    with torch.no_grad():
        for name, sub in group.named_modules():
            if isinstance(sub, RunLinear):
                target = plain.get_submodule(name)
                target.weight.copy_(sub.weight[index].t())
                target.bias.copy_(sub.bias[index, 0])
                continue
            prefix = f"{name}." if name else ""
            for leaf, value in sub.named_parameters(recurse=False):
                plain.get_parameter(prefix + leaf).copy_(value[index, 0])
            for leaf, value in sub.named_buffers(recurse=False):
                plain.get_buffer(prefix + leaf).copy_(value[index, 0])
    return plain


def run_forward(module: nn.Module, params: Mapping[str, torch.Tensor], *inputs,
                in_dims: Sequence, out_dims=0):
    """``module(*inputs)`` once per replicate, in one vectorised pass: replicate r's parameters
    are ``params[name][r]``; ``in_dims`` says which dimension of each input is the replicate's
    (None: the input is shared)."""
    return vmap(lambda p, *a: functional_call(module, p, a), in_dims=(0, *in_dims),
                out_dims=out_dims)(dict(params), *inputs)


class _Posterior(nn.Module):
    """q(z | x)'s tensors, so that :func:`functional_call` can swap the encoder's weights."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        q = self.vae.posterior(x)
        return q.base_dist.loc, q.base_dist.scale


class _LogLikelihood(nn.Module):
    """log p(x | z) under swappable decoder weights."""

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae

    def forward(self, z, x):
        return self.vae.bind(x).log_likelihood(z)


class _ReplicatedModel:
    """R decoders, one per replicate: samples (S, R, B, D) -> log densities (S, R, B)."""

    def __init__(self, vae: nn.Module, x: torch.Tensor, theta: Mapping[str, torch.Tensor]):
        self.plain = vae.bind(x)  # the prior, which has no replicated parameters
        self._wrapper = _LogLikelihood(vae)
        self._x = x
        self._params = {f"vae.{n}": p for n, p in theta.items()}

    @property
    def prior(self):
        return self.plain.prior

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        # Replicate r's decoder sees z[:, r] only.
        return run_forward(self._wrapper, self._params, z, self._x, in_dims=(1, None),
                           out_dims=1)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(z) + self.log_likelihood(z)


def replicated_vae_build(vae: nn.Module, x: torch.Tensor) -> Callable:
    """``build`` for :func:`estimators.diagnostics.replicate_gradients` on a VAE and a minibatch
    ``x`` (B, data).

    ``vae.posterior(x)`` must return an Independent Normal and ``vae.bind(x)`` a model with
    ``prior`` and ``log_likelihood(z)``; parameters are named as in ``vae.named_parameters()``.
    Each arrives with a leading dimension R; :func:`torch.func.vmap` over it runs R encoders on
    the same x (q gets batch shape (R, B)) and R decoders, replicate r's on z[:, r], so one
    backward pass gives R independent gradients.
    """
    posterior = _Posterior(vae)

    def build(lam, theta):
        params = {f"vae.{n}": p for n, p in lam.items()}
        loc, scale = run_forward(posterior, params, x, in_dims=(None,))
        return _ReplicatedModel(vae, x, theta), Independent(Normal(loc, scale), 1)

    return build


# --------------------------------------------------------------------------------------------
# Random streams and non-finite runs
# --------------------------------------------------------------------------------------------


def stream_seed(seed: int, purpose: str) -> int:
    """A 63-bit seed for one purpose of one run, independent of every other (numpy's SeedSequence)."""
    words = np.random.SeedSequence([int(seed), zlib.crc32(purpose.encode())]).generate_state(
        2, np.uint32)
    return int(words[0]) << 31 | int(words[1]) >> 1


class RunGenerators:
    """One torch.Generator per run, run r's seeded ``seeds[r]``; draws are made run by run and
    stacked, so each run's numbers do not depend on how many runs share the group."""

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu"):
        if not seeds:
            raise ValueError("RunGenerators needs at least one seed")
        self.device = torch.device(device)
        self.generators = [torch.Generator(device=self.device).manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def normal(self, shape: Sequence[int], dtype: torch.dtype, dim: int = 0) -> torch.Tensor:
        """Standard normals, each run's ``shape`` from its own stream, stacked at ``dim``."""
        return torch.stack([torch.randn(tuple(shape), generator=g, device=self.device,
                                        dtype=dtype) for g in self.generators], dim)

    def uniform(self, shape: Sequence[int], dtype: torch.dtype, dim: int = 0) -> torch.Tensor:
        return torch.stack([torch.rand(tuple(shape), generator=g, device=self.device,
                                       dtype=dtype) for g in self.generators], dim)

    def permutation(self, size: int) -> torch.Tensor:
        """(R, size): each run's own random order of ``size`` items."""
        return torch.stack([torch.randperm(size, generator=g, device=self.device)
                            for g in self.generators])

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: Sequence[torch.Tensor]) -> None:
        if len(states) != len(self.generators):
            raise ValueError(f"{len(states)} generator states for {len(self.generators)} runs")
        for generator, state in zip(self.generators, states):
            generator.set_state(state)


def _runs_view(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape[0], *([1] * (like.dim() - 1)))


class RunGuard:
    """Freeze each run of a group at its last finite state, on the device, with no host sync.

    ``state()`` lists the tensors that make up the runs' state (parameters, learned baselines),
    each with a leading run dimension R. Call :meth:`snapshot` before a step and :meth:`keep`
    after it with the runs' losses: a run whose loss, or whose new state, is not finite gets its
    state from before the step back, and stays frozen from then on; ``first_bad[r]`` is the
    step at which it froze (-1: never). The other runs' numbers are untouched, since runs share
    nothing. In place throughout, so a CUDA graph can hold it.
    """

    def __init__(self, state: Callable[[], list[torch.Tensor]], num_runs: int,
                 device: torch.device | str):
        self.state, self.num_runs = state, num_runs
        self.snapshots: list[torch.Tensor] = []
        self.alive = torch.ones(num_runs, dtype=torch.bool, device=device)
        self.first_bad = torch.full((num_runs,), -1, dtype=torch.int64, device=device)

    @torch.no_grad()
    def snapshot(self) -> None:
        tensors = self.state()
        for index, tensor in enumerate(tensors):
            if index < len(self.snapshots) and self.snapshots[index].shape == tensor.shape:
                self.snapshots[index].copy_(tensor)
            elif index < len(self.snapshots):
                self.snapshots[index] = tensor.detach().clone()
            else:
                self.snapshots.append(tensor.detach().clone())

    @torch.no_grad()
    def keep(self, loss: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Restore the runs that turned non-finite at ``step`` (a device tensor); return the
        mask of the runs that took this step."""
        tensors = self.state()[:len(self.snapshots)]
        sums = [t.reshape(self.num_runs, -1).sum(1).to(loss.dtype) for t in tensors
                if t.is_floating_point()]
        finite = torch.isfinite(loss.detach())
        if sums:
            finite = finite & torch.isfinite(torch.stack(sums).sum(0))
        took = self.alive & finite
        for tensor, saved in zip(tensors, self.snapshots):
            tensor.copy_(torch.where(_runs_view(took, tensor), tensor, saved))
        self.first_bad.copy_(torch.where(self.alive & ~finite, step.to(torch.int64),
                                         self.first_bad))
        self.alive.copy_(took)
        return took
