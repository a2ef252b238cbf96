"""Evaluation of a trained MNIST VAE: test bound, L_5000, active units, gradient variance.

Every function takes images as the VAE sees them (a float tensor (N, 784): binary pixels for a
Bernoulli decoder, grey levels in [0, 1] for a Gaussian one), on any device; each minibatch is
moved to the device of the VAE's parameters, so the test set may stay on the CPU.

- :func:`test_elbo`: the mean bound per datapoint, in nats, of any estimator of the registry;
- :func:`importance_sampled_log_likelihood`: the L_k estimate of log p(x) of Burda et al. 2016
  (k = 5000 in their Table 1), with a chunked logsumexp so memory stays bounded for any k;
- :func:`active_units`: the number of latent units whose posterior mean varies across inputs;
- :func:`gradient_variance`: for several estimators on the same parameters and minibatch, the
  total variance and the signal-to-noise ratio of the encoder (lambda in the seed) and decoder
  (theta) gradients, from R independent minibatch gradients computed in one vectorised pass.
"""

from __future__ import annotations

import copy
import math
from typing import Iterable, Mapping

import torch
from torch import nn
from torch.distributions import Independent, Normal
from torch.func import functional_call, vmap

from estimators import ESTIMATORS, EmaBaseline
from estimators.diagnostics import (ReplicateGradients, batch_mean, gradient_statistics,
                                    replicate_gradients)

from .models import VAE

__all__ = ["NVIL", "estimator_names", "estimator_for", "test_elbo",
           "importance_sampled_log_likelihood", "posterior_mean_variance", "active_units",
           "replicate_vae_gradients", "gradient_variance"]

# The score function with NVIL's learned, input-dependent baseline b(x) (Mnih & Gregor 2014): the
# registry's score_function given ``baseline=b(x)``.
NVIL = "score_function+nvil"

# Estimators whose value needs autograd even when only the bound is wanted.
_NEEDS_AUTOGRAD = {"score_function_optimal"}


def estimator_names() -> list[str]:
    """Every name :func:`gradient_variance` and :func:`test_elbo` accept."""
    return [*ESTIMATORS, NVIL]


def estimator_for(name: str):
    """The registry entry behind ``name`` (NVIL is the score function with a baseline)."""
    if name == NVIL:
        return ESTIMATORS["score_function"]
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(estimator_names())}")
    return ESTIMATORS[name]


def _device(vae: nn.Module) -> torch.device:
    return next(vae.parameters()).device


def _dtype(vae: nn.Module) -> torch.dtype:
    return next(vae.parameters()).dtype


def _batches(images: torch.Tensor, batch_size: int, vae: nn.Module):
    if images.dim() != 2 or images.shape[0] == 0:
        raise ValueError(f"images must have shape (N, {vae.data_dim}) with N >= 1, "
                         f"got {tuple(images.shape)}")
    if images.shape[1] != vae.data_dim:
        raise ValueError(f"images have {images.shape[1]} pixels, the VAE expects {vae.data_dim}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device, dtype = _device(vae), _dtype(vae)
    for start in range(0, images.shape[0], batch_size):
        yield images[start:start + batch_size].to(device=device, dtype=dtype)


def test_elbo(vae: VAE, images: torch.Tensor, batch_size: int = 500,
              estimator: str = "pathwise_analytic_kl", num_samples: int = 1) -> float:
    """The mean bound per datapoint, in nats, as ``estimator`` estimates it.

    For the ELBO estimators every name gives an unbiased estimate of the same ELBO (seed eq. 4);
    "iwae" and "dreg" give the num_samples-sample importance-weighted bound instead. The
    score-function baselines change the gradient only, so an NVIL name needs no baseline here.
    """
    est = estimator_for(estimator)
    was_training = vae.training
    vae.eval()
    total, count = 0.0, 0
    try:
        with torch.set_grad_enabled(est.name in _NEEDS_AUTOGRAD):
            for x in _batches(images, batch_size, vae):
                options = {"state": EmaBaseline()} if est.name == "score_function_ema" else {}
                bound = est(vae.bind(x), vae.posterior(x), num_samples, **options).elbo
                total += bound.detach().double().sum().item()
                count += x.shape[0]
    finally:
        vae.train(was_training)
    return total / count


@torch.no_grad()
def importance_sampled_log_likelihood(vae: VAE, images: torch.Tensor, num_samples: int = 5000,
                                      chunk: int = 250, batch_size: int = 100) -> torch.Tensor:
    """L_k per datapoint: log (1/k) sum_j p(x, z_j) / q(z_j | x), z_j ~ q(z | x), in nats.

    Approximates:  log p(x) from below; the bound tightens as k grows (Burda et al. 2016, Thm. 1),
                   and L_1 is the one-sample ELBO.
    With:          ``chunk`` samples at a time for ``batch_size`` images, combined by a running
                   logsumexp, so memory is O(chunk x batch_size x 784) whatever k is.
    Returns:       a float64 tensor (N,) on the CPU; its mean is the test log-likelihood that
                   Burda et al. report (as an NLL, its negative) with k = 5000.
    """
    if num_samples < 1 or chunk < 1:
        raise ValueError(f"num_samples and chunk must be >= 1, got {num_samples} and {chunk}")
    values = []
    for x in _batches(images, batch_size, vae):
        q = vae.posterior(x)
        model = vae.bind(x)
        running = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        for start in range(0, num_samples, chunk):
            z = q.sample((min(chunk, num_samples - start),))
            log_weights = (model.log_joint(z) - q.log_prob(z)).double()
            running = torch.logaddexp(running, torch.logsumexp(log_weights, 0))
        values.append((running - math.log(num_samples)).cpu())
    return torch.cat(values)


@torch.no_grad()
def posterior_mean_variance(vae: VAE, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Cov_x(E_q[z_d | x]) for each latent unit d: the variance across inputs of its posterior mean."""
    means = torch.cat([vae.posterior(x).mean.double().cpu()
                       for x in _batches(images, batch_size, vae)])
    if means.shape[0] < 2:
        raise ValueError("active units need at least two images to measure a variance")
    return means.var(0)


def active_units(vae: VAE, images: torch.Tensor, threshold: float = 1e-2) -> int:
    """The number of latent units whose posterior mean varies across inputs by more than threshold.

    A unit u is active when Cov_x(E_{q(u|x)}[u]) > threshold (Burda et al. 2016, section 5.2,
    threshold 1e-2): an inactive unit's posterior ignores x and the unit carries no information.
    """
    return int((posterior_mean_variance(vae, images) > threshold).sum().item())


# --------------------------------------------------------------------------------------------
# Gradient variance: R replicates of the network, one vectorised pass
# --------------------------------------------------------------------------------------------


class _Posterior(nn.Module):
    """q(z | x) as its tensors, so that :func:`functional_call` can swap the encoder's weights."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, x):
        q = self.vae.posterior(x)
        return q.base_dist.loc, q.base_dist.scale


class _LogLikelihood(nn.Module):
    """log p(x | z) under swappable decoder weights."""

    def __init__(self, vae: VAE):
        super().__init__()
        self.vae = vae

    def forward(self, z, x):
        return self.vae.observation(z).log_prob(x)


class _ReplicatedModel:
    """R decoders, one per replicate: samples (S, R, B, D) -> log densities (S, R, B)."""

    def __init__(self, vae: VAE, x: torch.Tensor, theta: Mapping[str, torch.Tensor]):
        self.vae = vae
        wrapper = _LogLikelihood(vae)
        self._params = {f"vae.{n}": p for n, p in theta.items()}
        # Replicate r's decoder sees z[:, r] only: vmap over the parameters' and z's R axes.
        self._run = vmap(lambda p, z: functional_call(wrapper, p, (z, x)), in_dims=(0, 1),
                         out_dims=1)

    @property
    def prior(self):
        return self.vae.prior

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        return self._run(self._params, z)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.prior.log_prob(z) + self.log_likelihood(z)


def _replicated_build(vae: VAE, x: torch.Tensor):
    """``build`` for :func:`estimators.diagnostics.replicate_gradients` on a VAE and a minibatch.

    Each parameter arrives with a leading dimension R; :func:`torch.func.vmap` over it runs R
    encoders on the same x (q gets batch shape (R, B)) and R decoders, replicate r's on z[:, r].
    """
    posterior = _Posterior(vae)

    def build(lam, theta):
        params = {f"vae.{n}": p for n, p in lam.items()}
        loc, scale = vmap(lambda p: functional_call(posterior, p, (x,)))(params)
        return _ReplicatedModel(vae, x, theta), Independent(Normal(loc, scale), 1)

    return build


def _split(total: int, chunk: int | None) -> list[int]:
    """Chunk sizes that add up to total, each >= 2 (a variance needs two replicates).

    Each is at most ``chunk`` where that allows; an odd total with ``chunk`` 2 has one chunk of 3.
    """
    if chunk is None or chunk >= total:
        return [total]
    count = min(math.ceil(total / max(chunk, 2)), total // 2)
    base, extra = divmod(total, count)
    return [base + (i < extra) for i in range(count)]


def _options(name: str, x: torch.Tensor, baseline, options: Mapping | None) -> dict:
    options = dict(options or {})
    if name == NVIL:
        if baseline is None:
            raise ValueError(f"{NVIL} needs baseline=: a network b(x) or a tensor of shape (B,)")
        value = baseline(x) if callable(baseline) and not torch.is_tensor(baseline) else baseline
        value = value.detach().reshape(-1).to(dtype=x.dtype)
        if value.shape[0] != x.shape[0]:
            raise ValueError(f"{NVIL}: baseline has {value.shape[0]} values for a minibatch of "
                             f"{x.shape[0]} images")
        options["baseline"] = value
    elif name == "score_function_ema":
        # Measuring must not move the caller's running average.
        options["state"] = copy.deepcopy(options.get("state") or EmaBaseline())
    return options


def replicate_vae_gradients(vae: VAE, x: torch.Tensor, name: str, num_replicates: int,
                            num_samples: int, *, baseline=None, options: Mapping | None = None,
                            replicate_chunk: int | None = None) -> ReplicateGradients:
    """R independent minibatch gradient estimates of ``name`` at the VAE's current parameters.

    Each replicate is the gradient of the mean bound over the minibatch ``x`` with its own
    num_samples draws per image. The network's parameters get a leading dimension R (one copy per
    replicate), :func:`torch.func.functional_call` under :func:`torch.func.vmap` runs the R copies,
    and one backward pass gives all R gradients (:func:`estimators.diagnostics.replicate_gradients`).
    ``replicate_chunk`` bounds memory: replicates are then done that many at a time, each chunk
    still one vectorised pass. Returns gradients keyed by the VAE's parameter names.
    """
    est = estimator_for(name)
    if num_samples < est.min_samples:
        raise ValueError(f"{name} needs num_samples >= {est.min_samples}, got {num_samples}")
    x = x.to(device=_device(vae), dtype=_dtype(vae))
    options = _options(name, x, baseline, options)
    encoder = {id(p) for p in vae.encoder_parameters()}
    decoder = {id(p) for p in vae.decoder_parameters()}
    lam = {n: p.detach() for n, p in vae.named_parameters() if id(p) in encoder}
    theta = {n: p.detach() for n, p in vae.named_parameters() if id(p) in decoder}
    parts = [replicate_gradients(batch_mean(est), _replicated_build(vae, x), lam, theta,
                                 num_replicates=size, num_samples=num_samples, **options)
             for size in _split(num_replicates, replicate_chunk)]
    if len(parts) == 1:
        return parts[0]
    return ReplicateGradients(
        elbo=torch.cat([p.elbo for p in parts]),
        lambda_={n: torch.cat([p.lambda_[n] for p in parts]) for n in lam},
        theta={n: torch.cat([p.theta[n] for p in parts]) for n in theta},
    )


def _summarise(grads: Mapping[str, torch.Tensor]) -> dict:
    """Total variance and mean SNR of one group of parameters, each with its standard error."""
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], -1)
    stats = gradient_statistics(flat)
    # Weights from always-blank pixels get an exact zero gradient from every estimator: they
    # carry no signal and no noise, so the SNR averages over the parameters that vary.
    varying = stats.variance > 0
    count = int(varying.sum().item())
    snr = stats.snr[varying]
    snr_se = stats.snr_se[varying]
    return {
        "total_variance": stats.total_variance.item(),
        "total_variance_se": stats.total_variance_se.item(),
        "mean_snr": snr.mean().item() if count else float("nan"),
        "mean_snr_se": (snr_se.pow(2).sum().sqrt() / count).item() if count else float("nan"),
        "squared_norm_of_mean": stats.mean.pow(2).sum().item(),
        "num_parameters": flat.shape[1],
        "num_varying": count,
    }


def gradient_variance(vae: VAE, x: torch.Tensor, estimator_names: Iterable[str],
                      num_replicates: int, num_samples: int, *, baseline=None,
                      options: Mapping[str, Mapping] | None = None,
                      replicate_chunk: int | None = None, seed: int | None = None) -> dict:
    """Variance and SNR of encoder and decoder gradients, per estimator, same parameters and x.

    For each name (any registry name, or ``"score_function+nvil"`` with ``baseline`` a network
    b(x) or a tensor of shape (B,), used detached) returns
    ``{"encoder": stats, "decoder": stats, "bound": mean, "bound_se": se}`` where ``stats`` has
    ``total_variance`` (the trace of the covariance of the flattened gradient, summed over
    parameters), ``mean_snr`` (the mean over parameters of |mean| / sd, Rainforth et al. 2018),
    both with standard errors (``*_se``) from :func:`estimators.diagnostics.gradient_statistics`.
    ``options`` maps a name to extra keyword arguments of its estimator. With ``seed``, each
    estimator's draws start from ``seed``, so results do not depend on the order of the names.
    """
    options = options or {}
    out = {}
    for name in estimator_names:
        if seed is not None:
            torch.manual_seed(seed)
        grads = replicate_vae_gradients(vae, x, name, num_replicates, num_samples,
                                        baseline=baseline, options=options.get(name),
                                        replicate_chunk=replicate_chunk)
        bound = grads.elbo.double()
        out[name] = {
            "encoder": _summarise(grads.lambda_),
            "decoder": _summarise(grads.theta),
            "bound": bound.mean().item(),
            "bound_se": (bound.std() / math.sqrt(bound.numel())).item(),
        }
    return out
