"""VIMCO: the score-function gradient of the importance-weighted bound, leave-one-out baselines."""

from __future__ import annotations

import math

import torch

from .base import ElboEstimate, attach_gradient, check_inputs, evaluate_model, log_mean_exp

__all__ = ["vimco", "leave_one_out_bounds"]


def leave_one_out_bounds(log_weights: torch.Tensor) -> torch.Tensor:
    """L_{-k} = log (1/K) [sum_{j != k} w_j + exp(mean_{j != k} log w_j)], shape (K, *batch).

    The bound of :func:`estimators.iwae` with sample k's weight replaced by the geometric mean
    of the others': it does not depend on z_k. Computed in log space from exclusive prefix and
    suffix log-sums (``torch.logcumsumexp``), so a dominant weight does not cancel.
    """
    num_samples = log_weights.shape[0]
    log_weights = log_weights.detach()
    empty = torch.full_like(log_weights[:1], -math.inf)
    before = torch.cat([empty, torch.logcumsumexp(log_weights, 0)[:-1]])
    after = torch.cat([torch.logcumsumexp(log_weights.flip(0), 0).flip(0)[1:], empty])
    others = torch.logaddexp(before, after)  # log sum_{j != k} w_j
    geometric = (log_weights.sum(0, keepdim=True) - log_weights) / (num_samples - 1)
    return torch.logaddexp(others, geometric) - math.log(num_samples)


def vimco(model, q, num_samples: int) -> ElboEstimate:
    """The multi-sample score function of the K-sample bound, with VIMCO's per-sample baselines.

    Approximates:  the gradient of E[log (1/K) sum_k w_k], w_k = p(x, z_k) / q(z_k), z_k ~ q: the
                   K-sample bound of :func:`estimators.iwae`
    With:          sum_k (L - L_{-k}) grad log q(z_k) + sum_k wn_k grad log w_k at fixed z_k,
                   L = log (1/K) sum_j w_j, wn_k = w_k / sum_j w_j, and L_{-k} the bound with
                   log w_k replaced by the mean of the other log w_j (the geometric mean of the
                   other weights: :func:`leave_one_out_bounds`)
    Requires:      num_samples >= 2; q.log_prob differentiable in its parameters; any q,
                   discrete ones included. Unbiased for the gradient of the K-sample bound: the
                   baseline L_{-k} does not depend on z_k.
    References:    Mnih & Rezende 2016 (VIMCO); Burda, Grosse & Salakhutdinov 2016 (the bound).
    """
    name = "vimco"
    check_inputs(name, model, q, num_samples, min_samples=2)
    with torch.no_grad():
        z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    log_joint = evaluate_model(name, model, z, q)
    log_weights = log_joint - log_q
    bound = log_mean_exp(log_weights, 0)
    signal = bound.detach() - leave_one_out_bounds(log_weights)
    normalised = torch.softmax(log_weights.detach(), 0)
    term = (signal * log_q).sum(0) + (normalised * log_weights).sum(0)
    return ElboEstimate(bound, attach_gradient(bound, term))
