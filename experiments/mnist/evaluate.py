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

import math
from typing import Iterable, Mapping

import torch
from torch import nn

from estimators.diagnostics import (ReplicateGradients, batch_mean, group_summary,
                                    replicate_gradients)

# NVIL, estimator_names and estimator_for are shared with experiments.gmm_vae; the trainer and
# mnist_vae use them as evaluate.NVIL, evaluate.estimator_names() and evaluate.estimator_for(name).
from ..replicated import (NVIL, estimator_for, estimator_names, probe_options,
                          replicated_vae_build)

from .models import VAE

__all__ = ["NVIL", "estimator_names", "estimator_for", "test_elbo",
           "importance_sampled_log_likelihood", "posterior_mean_variance", "active_units",
           "replicate_vae_gradients", "gradient_variance"]

# Estimators whose value needs autograd even when only the bound is wanted.
_NEEDS_AUTOGRAD = {"score_function_optimal"}


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
    total, count = None, 0
    try:
        with torch.set_grad_enabled(est.name in _NEEDS_AUTOGRAD):
            for x in _batches(images, batch_size, vae):
                # score_function_ema without a state starts from b = 0 each call, as wanted here.
                bound = est(vae.bind(x), vae.posterior(x), num_samples).elbo
                part = bound.detach().double().sum()
                total = part if total is None else total + part  # on the device: no sync
                count += x.shape[0]
    finally:
        vae.train(was_training)
    return total.item() / count


LIKELIHOOD_CHUNK = 250  # samples of z drawn at a time for a batch of images, in L_k
LIKELIHOOD_BATCH = 100  # images of such a batch


@torch.no_grad()
def importance_sampled_log_likelihood(vae: VAE, images: torch.Tensor, num_samples: int = 5000,
                                      chunk: int = LIKELIHOOD_CHUNK,
                                      batch_size: int = LIKELIHOOD_BATCH,
                                      description: str | None = None) -> torch.Tensor:
    """L_k per datapoint: log (1/k) sum_j p(x, z_j) / q(z_j | x), z_j ~ q(z | x), in nats.

    Approximates:  log p(x) from below; the bound tightens as k grows (Burda et al. 2016, Thm. 1),
                   and L_1 is the one-sample ELBO.
    With:          ``chunk`` samples at a time for ``batch_size`` images, combined by a running
                   logsumexp, so memory is O(chunk x batch_size x 784) whatever k is.
    Returns:       a float64 tensor (N,) on the CPU; its mean is the test log-likelihood that
                   Burda et al. report (as an NLL, its negative) with k = 5000.
    ``description``: show a progress bar over the batches with this label (on a CPU, L_5000 of
    the 10,000 test images takes about 20 minutes a run).
    """
    if num_samples < 1 or chunk < 1:
        raise ValueError(f"num_samples and chunk must be >= 1, got {num_samples} and {chunk}")
    values = []
    batches = _batches(images, batch_size, vae)
    if description is not None:
        from ..common import progress

        batches = progress(batches, total=math.ceil(images.shape[0] / batch_size),
                           desc=description, leave=False)
    for x in batches:
        q = vae.posterior(x)
        model = vae.bind(x)
        running = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        for start in range(0, num_samples, chunk):
            z = q.sample((min(chunk, num_samples - start),))
            log_weights = (model.log_joint(z) - q.log_prob(z)).double()
            running = torch.logaddexp(running, torch.logsumexp(log_weights, 0))
        values.append(running - math.log(num_samples))
    return torch.cat(values).cpu()  # one copy to the host, after every batch


@torch.no_grad()
def posterior_mean_variance(vae: VAE, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Cov_x(E_q[z_d | x]) for each latent unit d: the variance across inputs of its posterior mean."""
    means = torch.cat([vae.posterior(x).mean.double()
                       for x in _batches(images, batch_size, vae)]).cpu()
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


def replicate_vae_gradients(vae: VAE, x: torch.Tensor, name: str, num_replicates: int,
                            num_samples: int, *, baseline=None, options: Mapping | None = None,
                            replicate_chunk: int | None = None) -> ReplicateGradients:
    """R independent minibatch gradient estimates of ``name`` at the VAE's current parameters.

    Each replicate is the gradient of the mean bound over the minibatch ``x`` with its own
    num_samples draws per image. The network's parameters get a leading dimension R (one copy per
    replicate), :func:`torch.func.functional_call` under :func:`torch.func.vmap` runs the R copies,
    and one backward pass gives all R gradients (:func:`estimators.diagnostics.replicate_gradients`).
    ``replicate_chunk`` bounds memory: replicates are then done that many at a time, each chunk
    still one vectorised pass (:func:`estimators.diagnostics.chunk_sizes`). Returns gradients
    keyed by the VAE's parameter names.
    """
    est = estimator_for(name)
    if num_samples < est.min_samples:
        raise ValueError(f"{name} needs num_samples >= {est.min_samples}, got {num_samples}")
    x = x.to(device=_device(vae), dtype=_dtype(vae))
    options = probe_options(name, x, options, baseline=baseline)
    encoder = {id(p) for p in vae.encoder_parameters()}
    decoder = {id(p) for p in vae.decoder_parameters()}
    lam = {n: p.detach() for n, p in vae.named_parameters() if id(p) in encoder}
    theta = {n: p.detach() for n, p in vae.named_parameters() if id(p) in decoder}
    return replicate_gradients(batch_mean(est), replicated_vae_build(vae, x), lam, theta,
                               num_replicates=num_replicates, num_samples=num_samples,
                               chunk=replicate_chunk, **options)


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
            "encoder": group_summary(grads.lambda_),
            "decoder": group_summary(grads.theta),
            "bound": bound.mean().item(),
            "bound_se": (bound.std() / math.sqrt(bound.numel())).item(),
        }
    return out
