"""Gradient diagnostics: R independent gradient estimates in one pass, and their statistics.

Each of R replicates gets its own copy of the parameters, a leading dimension R. Because batch
entries of q are independent problems, one backward pass of the summed surrogate then yields R
independent gradient estimates, with no Python loop over replicates. The parameters of q (lambda
in the seed) are reported apart from the model's (theta): section 5 of the seed shows their
gradients are different problems, and their variances differ by orders of magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from .base import ElboEstimate

__all__ = [
    "batch_mean",
    "ReplicateGradients",
    "ParameterStatistics",
    "replicate_gradients",
    "gradient_statistics",
    "diagnose",
]


def batch_mean(estimator: Callable) -> Callable:
    """A minibatch estimator from a per-point one: the mean over the last batch dimension.

    For amortised models, where q's batch shape is (R, B) with B data points, so that each
    replicate is one full minibatch gradient, as a training step would take it.
    """

    def estimate(model, q, num_samples, **options) -> ElboEstimate:
        result = estimator(model, q, num_samples, **options)
        return ElboEstimate(result.elbo.mean(-1), result.surrogate.mean(-1))

    return estimate


@dataclass
class ReplicateGradients:
    """R independent gradient estimates: each tensor has a leading dimension R."""

    elbo: torch.Tensor
    lambda_: dict[str, torch.Tensor]
    theta: dict[str, torch.Tensor]


def _replicate(params: Mapping[str, torch.Tensor], num_replicates: int) -> dict[str, torch.Tensor]:
    return {
        name: value.detach().unsqueeze(0).expand(num_replicates, *value.shape).clone()
        .requires_grad_(True)
        for name, value in params.items()
    }


def replicate_gradients(
    estimator: Callable,
    build: Callable,
    lambda_params: Mapping[str, torch.Tensor],
    theta_params: Mapping[str, torch.Tensor] | None = None,
    *,
    num_replicates: int,
    num_samples: int,
    **options,
) -> ReplicateGradients:
    """Draw ``num_replicates`` independent gradient estimates in one vectorised pass.

    ``build(lambda_params, theta_params) -> (model, q)`` receives each parameter with a leading
    dimension R (one copy per replicate, each a leaf that requires grad) and must return a q whose
    batch shape starts with R and a model that broadcasts its parameters against samples of shape
    (num_samples, R, ..., D).
    """
    if num_replicates < 2:
        raise ValueError(f"num_replicates must be >= 2 to estimate a variance, got {num_replicates}")
    lam = _replicate(lambda_params, num_replicates)
    theta = _replicate(theta_params or {}, num_replicates)
    model, q = build(lam, theta)
    if q.batch_shape[:1] != (num_replicates,):
        raise ValueError(
            f"build must return q with batch shape (R, ...) = ({num_replicates}, ...), "
            f"got {tuple(q.batch_shape)}"
        )
    estimate = estimator(model, q, num_samples, **options)
    leaves = list(lam.values()) + list(theta.values())
    grads = torch.autograd.grad(estimate.surrogate.sum(), leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
    names = list(lam) + list(theta)
    by_name = dict(zip(names, grads))
    return ReplicateGradients(
        elbo=estimate.elbo.detach(),
        lambda_={n: by_name[n] for n in lam},
        theta={n: by_name[n] for n in theta},
    )


@dataclass
class ParameterStatistics:
    """Statistics of R gradient estimates of one parameter, each with its standard error.

    ``mean``, ``variance``, ``snr`` and ``bias`` have the parameter's shape; ``total_variance``
    is the trace of the covariance (a scalar). ``bias`` and ``z`` are None without an exact value.
    """

    num_replicates: int
    mean: torch.Tensor
    mean_se: torch.Tensor
    variance: torch.Tensor
    variance_se: torch.Tensor
    snr: torch.Tensor
    snr_se: torch.Tensor
    total_variance: torch.Tensor
    total_variance_se: torch.Tensor
    bias: torch.Tensor | None = None
    bias_se: torch.Tensor | None = None
    z: torch.Tensor | None = None


def gradient_statistics(grads: torch.Tensor, exact: torch.Tensor | None = None) -> ParameterStatistics:
    """Mean, variance, SNR and bias of replicate gradients ``grads`` (leading dimension R).

    Standard errors: the mean's is sqrt(var / R); a variance is the mean of the squared
    deviations, so its standard error is their standard deviation over sqrt(R); the SNR
    |mean| / sd (Rainforth et al. 2018) gets a delta-method error from the first three moments.
    """
    grads = grads.detach().to(torch.float64)
    count = grads.shape[0]
    mean = grads.mean(0)
    deviation = grads - mean
    squared = deviation.pow(2)
    correction = count / (count - 1)
    variance = squared.mean(0) * correction
    variance_se = squared.std(0) / math.sqrt(count)
    mean_se = (variance / count).sqrt()
    total = squared.reshape(count, -1).sum(1)  # reshape, not flatten(1): scalar parameters too
    total_variance = total.mean() * correction
    total_variance_se = total.std() / math.sqrt(count)

    tiny = torch.finfo(torch.float64).tiny
    safe_var = variance.clamp_min(tiny)
    snr = mean.abs() / safe_var.sqrt()
    third = deviation.pow(3).mean(0)
    snr_var = (1.0 / count + mean.pow(2) * variance_se.pow(2) / (4 * safe_var.pow(3))
               - mean * third / (count * safe_var.pow(2)))
    snr_se = snr_var.clamp_min(0).sqrt()

    stats = ParameterStatistics(count, mean, mean_se, variance, variance_se, snr, snr_se,
                                total_variance, total_variance_se)
    if exact is not None:
        exact = torch.as_tensor(exact, dtype=torch.float64, device=grads.device)
        stats.bias = mean - exact
        stats.bias_se = mean_se
        # A deterministic gradient has se = 0: count a bias within rounding error as zero.
        rounding = 64 * torch.finfo(grads.dtype).eps * (exact.abs() + mean.abs()) + tiny
        stats.z = stats.bias / torch.maximum(mean_se, rounding)
    return stats


def diagnose(
    estimator: Callable,
    build: Callable,
    lambda_params: Mapping[str, torch.Tensor],
    theta_params: Mapping[str, torch.Tensor] | None = None,
    *,
    num_replicates: int,
    num_samples: int,
    exact_lambda: Mapping[str, torch.Tensor] | None = None,
    exact_theta: Mapping[str, torch.Tensor] | None = None,
    **options,
) -> dict[str, dict[str, ParameterStatistics]]:
    """Replicate gradients and summarise them: ``{"lambda": {name: stats}, "theta": {...}}``."""
    grads = replicate_gradients(estimator, build, lambda_params, theta_params,
                                num_replicates=num_replicates, num_samples=num_samples, **options)
    exact_lambda, exact_theta = exact_lambda or {}, exact_theta or {}
    return {
        "lambda": {n: gradient_statistics(g, exact_lambda.get(n)) for n, g in grads.lambda_.items()},
        "theta": {n: gradient_statistics(g, exact_theta.get(n)) for n, g in grads.theta.items()},
    }
