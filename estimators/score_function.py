"""The score-function (REINFORCE) estimator of seed section 5.1 and its baselines."""

from __future__ import annotations

import torch

from .base import (ElboEstimate, EstimatorError, attach_gradient, check_inputs, check_log_joint,
                   distribution_parameters)
from .baselines import EmaBaseline, leave_one_out, optimal_constant, per_sample_score_norms

__all__ = ["score_function", "score_function_ema", "score_function_loo", "score_function_optimal"]


def score_function(model, q, num_samples: int, baseline=None, *, _name="score_function",
                   _min_samples=1) -> ElboEstimate:
    """REINFORCE for the ELBO, with an optional baseline.

    Approximates:  the gradient of E_q[log p(x,z) - log q(z)]   (seed eq. 4)
    With:          mean_k (f(z_k) - b_k) grad log q(z_k) + mean_k grad f(z_k) with z_k held fixed,
                   f = log p(x, z) - log q(z), z_k ~ q   (seed section 5.1; the second term has
                   mean zero for lambda and is the whole gradient for theta)
    Requires:      q.log_prob differentiable in its parameters; any q, discrete ones included.
                   Unbiased when b_k is independent of z_k.
    References:    Williams 1992; Mnih & Gregor 2014 (learned baseline).

    ``baseline`` is ``None`` (no baseline), a tensor broadcastable to ``q.batch_shape`` (for example
    the output of a network of x: NVIL's learned baseline), or an :class:`EmaBaseline`, which is
    read before and updated after the step. A tensor baseline that requires grad is trained by the
    same backward pass: the surrogate gains a term, zero in value, whose gradient is that of
    -mean((f - b)^2), so ascending the surrogate fits the baseline to the learning signal.
    """
    check_inputs(_name, model, q, num_samples, min_samples=_min_samples)
    with torch.no_grad():
        z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    log_joint = model.log_joint(z)
    check_log_joint(_name, log_joint, z, q)
    signal = log_joint - log_q
    elbo = signal.mean(0)
    detached = signal.detach()

    learned_term = None
    if baseline is None:
        centred = detached
    elif isinstance(baseline, EmaBaseline):
        centred = detached - baseline.current(detached)
        baseline.update(detached)
    elif callable(baseline) and not torch.is_tensor(baseline):
        centred = baseline(detached, log_q)
    elif torch.is_tensor(baseline):
        try:
            torch.broadcast_shapes(baseline.shape, elbo.shape)
        except RuntimeError:
            raise EstimatorError(
                f"{_name}: baseline of shape {tuple(baseline.shape)} does not broadcast to "
                f"q.batch_shape {tuple(elbo.shape)}"
            ) from None
        centred = detached - baseline.detach()
        if baseline.requires_grad:
            learned_term = -(detached - baseline).pow(2).mean(0)
    else:
        raise EstimatorError(
            f"{_name}: baseline must be None, a tensor or an EmaBaseline, got {type(baseline).__name__}"
        )

    term = elbo + (centred * log_q).mean(0)
    if learned_term is not None:
        term = term + learned_term
    return ElboEstimate(elbo, attach_gradient(elbo, term))


def score_function_ema(model, q, num_samples: int, state: EmaBaseline | None = None, *,
                       decay: float = 0.9) -> ElboEstimate:
    """REINFORCE with an exponential-moving-average baseline.

    Approximates:  the gradient of the ELBO   (seed eq. 4)
    With:          mean_k (f(z_k) - b) grad log q(z_k) + ..., b a moving average of past signals
    Requires:      the caller keeps ``state`` (an EmaBaseline) across steps; without one, each call
                   starts from b = 0 and this is plain REINFORCE. Unbiased: b uses the past only.
    References:    Mnih & Gregor 2014.
    """
    if state is None:
        state = EmaBaseline(decay)
    return score_function(model, q, num_samples, baseline=state, _name="score_function_ema")


def score_function_loo(model, q, num_samples: int) -> ElboEstimate:
    """REINFORCE with the leave-one-out baseline.

    Approximates:  the gradient of the ELBO   (seed eq. 4)
    With:          mean_k (f(z_k) - mean_{j != k} f(z_j)) grad log q(z_k) + ...
    Requires:      num_samples >= 2. Unbiased: b_k uses the other, independent, samples.
    References:    Kool, van Hoof & Welling 2019; Mnih & Rezende 2016 (VIMCO's idea).
    """
    return score_function(model, q, num_samples, baseline=_loo, _name="score_function_loo",
                          _min_samples=2)


def _loo(signal, log_q):
    return signal - leave_one_out(signal)


def score_function_optimal(model, q, num_samples: int) -> ElboEstimate:
    """REINFORCE with the variance-minimising constant baseline, estimated leave-one-out.

    Approximates:  the gradient of the ELBO   (seed eq. 4)
    With:          mean_k (f(z_k) - b_k) grad log q(z_k) + ..., b_k = the optimal constant
                   E[f ||s||^2] / E[||s||^2] estimated from the samples j != k, s the score with
                   respect to the tensors q was built from
    Requires:      num_samples >= 2. Unbiased: b_k does not use z_k.
    References:    Mohamed, Rosca, Figurnov & Mnih 2020, section 7.4.
    """

    def optimal(signal, log_q):
        params = distribution_parameters(q)
        if not params:  # nothing to differentiate: any baseline gives the same (zero) gradient
            return signal - leave_one_out(signal)
        norms = per_sample_score_norms(log_q, params)
        return signal - optimal_constant(signal, norms)

    return score_function(model, q, num_samples, baseline=optimal, _name="score_function_optimal",
                          _min_samples=2)
