"""The importance-weighted bound and its doubly reparameterized gradient."""

from __future__ import annotations

import torch

from .base import ElboEstimate, attach_gradient, check_inputs, evaluate_model, log_mean_exp

__all__ = ["iwae", "dreg"]


def _log_weights(name, model, q, num_samples):
    check_inputs(name, model, q, num_samples, needs_rsample=True)
    z = q.rsample((num_samples,))
    log_joint = evaluate_model(name, model, z, q)
    return z, log_joint, log_joint - q.log_prob(z)


def iwae(model, q, num_samples: int) -> ElboEstimate:
    """The K-sample importance-weighted bound with its pathwise gradient.

    Approximates:  the gradient of E[log (1/K) sum_k p(x, z_k) / q(z_k)], z_k ~ q, a bound
                   between the ELBO (K = 1, seed eq. 4) and log p(x) (K -> infinity)
    With:          grad log (1/K) sum_k w_k, w_k = p(x, g(e_k)) / q(g(e_k)); K = num_samples
    Requires:      q.rsample. Unbiased for the gradient of the K-sample bound, not of the ELBO.
    References:    Burda, Grosse & Salakhutdinov 2016.
    """
    _, _, log_weights = _log_weights("iwae", model, q, num_samples)
    bound = log_mean_exp(log_weights, 0)
    return ElboEstimate(bound, bound)


def dreg(model, q, num_samples: int) -> ElboEstimate:
    """The doubly reparameterized gradient of the importance-weighted bound.

    Approximates:  the gradient of the K-sample bound of :func:`iwae`
    With:          lambda: sum_k wn_k^2 d log w_k / d z_k * d z_k / d lambda (q's parameters held
                   fixed inside log q); theta: sum_k wn_k grad_theta log p(x, z_k);
                   wn_k = w_k / sum_j w_j
    Requires:      q.rsample. Unbiased for the gradient of the K-sample bound; equals :func:`stl`
                   at K = 1.
    References:    Tucker, Lawson, Gu & Maddison 2019.
    """
    z, log_joint, log_weights = _log_weights("dreg", model, q, num_samples)
    bound = log_mean_exp(log_weights, 0)
    normalised = torch.softmax(log_weights.detach(), 0)
    # The gradient of log w along the path only: add back log q(z) at fixed z (the score term).
    path_log_weights = log_weights + q.log_prob(z.detach())
    # The squared weights belong to lambda alone; theta keeps the IWAE weights. log p at a fixed
    # z carries exactly the theta part, so swap it between the two weightings.
    log_joint_fixed_z = model.log_joint(z.detach())
    term = (normalised.pow(2) * (path_log_weights - log_joint_fixed_z)
            + normalised * log_joint_fixed_z).sum(0)
    return ElboEstimate(bound, attach_gradient(bound, term))
