"""The score-function (REINFORCE) estimator of seed section 5.1 and its baselines."""

from __future__ import annotations

import torch

from .base import (ElboEstimate, EstimatorError, attach_gradient, check_inputs,
                   distribution_parameters, evaluate_model, validation_enabled)
from .baselines import EmaBaseline, leave_one_out, optimal_constant, per_sample_score_norms

__all__ = ["score_function", "score_function_autodiff", "score_function_ema",
           "score_function_loo", "score_function_optimal"]


def score_function(model, q, num_samples: int, baseline=None) -> ElboEstimate:
    """REINFORCE for the ELBO as the seed derives it, with an optional baseline.

    Approximates:  the gradient of E_q[log p(x,z) - log q(z)]   (seed eq. 4)
    With:          lambda: mean_k (f(z_k) - b_k) grad_lambda log q(z_k);
                   theta:  mean_k grad_theta log p(x, z_k);
                   f = log p(x, z) - log q(z), z_k ~ q (seed section 5.1, eq. 8 and the line after
                   it: E_q[grad_lambda log q] = 0, "the very last term disappears", so it is not
                   estimated at all)
    Requires:      q.log_prob differentiable in its parameters; any q, discrete ones included;
                   a model whose log p(x, z) at fixed z does not depend on lambda.
                   Unbiased when b_k is independent of z_k.
    References:    Williams 1992; Mnih & Gregor 2014 (learned baseline).

    ``baseline`` is ``None`` (no baseline), a tensor broadcastable to ``q.batch_shape`` (for example
    the output of a network of x: NVIL's learned baseline), or an :class:`EmaBaseline`, which is
    read before and updated after the step. A tensor baseline that requires grad is trained by the
    same backward pass: the surrogate gains a term, zero in value, whose gradient is that of
    -mean((f - b)^2), so ascending the surrogate fits the baseline to the learning signal.
    """
    return _score_function("score_function", model, q, num_samples, baseline)


def score_function_autodiff(model, q, num_samples: int, baseline=None) -> ElboEstimate:
    """REINFORCE as autograd writes it: the score term plus the gradient of f at the fixed sample.

    Approximates:  the gradient of the ELBO   (seed eq. 4)
    With:          mean_k (f(z_k) - b_k) grad log q(z_k) + mean_k grad f(z_k) at fixed z_k: what
                   differentiating log p - log q through a detached sample gives. For lambda the
                   second term is -mean_k grad_lambda log q(z_k), the term the seed drops (mean
                   zero, not zero: on a Normal-Normal model it triples the variance of d/dmu);
                   for theta it is :func:`score_function`'s.
    Requires:      q.log_prob differentiable in its parameters; any q. Unbiased when b_k is
                   independent of z_k.
    References:    Williams 1992; Schulman, Heess, Weber & Abbeel 2015 (the surrogate of a
                   stochastic computation graph, whose cost depends on lambda directly).
    """
    return _score_function("score_function_autodiff", model, q, num_samples, baseline,
                           autodiff=True)


def _score_function(name, model, q, num_samples, baseline, *, min_samples=1,
                    autodiff=False) -> ElboEstimate:
    check_inputs(name, model, q, num_samples, min_samples=min_samples)
    with torch.no_grad():
        z = q.sample((num_samples,))
    log_q = q.log_prob(z)
    log_joint = evaluate_model(name, model, z, q)
    signal = log_joint - log_q
    elbo = signal.mean(0)
    detached = signal.detach()

    learned_term = None
    if baseline is None:
        centred = detached
    elif isinstance(baseline, EmaBaseline):
        if baseline.value is not None and not _broadcasts_to(baseline.value.shape, elbo.shape):
            raise EstimatorError(
                f"{name}: the EmaBaseline (batch_dims={baseline.batch_dims}) holds averages of "
                f"shape {tuple(baseline.value.shape)} from a batch that was not q.batch_shape "
                f"{tuple(elbo.shape)}; keep one EmaBaseline per batch shape, or batch_dims=0 "
                "(one average for every batch)")
        centred = detached - baseline.current(detached)
        baseline.update(detached)
    elif callable(baseline) and not torch.is_tensor(baseline):
        centred = baseline(detached, log_q)
    elif torch.is_tensor(baseline):
        # Broadcasting to q.batch_shape, not merely with it: a (3, 1) baseline against a batch
        # (4,) would make the estimate (3, 4).
        if not _broadcasts_to(baseline.shape, elbo.shape):
            raise EstimatorError(
                f"{name}: baseline of shape {tuple(baseline.shape)} does not broadcast to "
                f"q.batch_shape {tuple(elbo.shape)}"
            )
        if validation_enabled() and not torch.isfinite(baseline).all():
            raise EstimatorError(f"{name}: baseline contains NaN or an infinite value; check "
                                 "what computes it (set_validation(False) skips this scan)")
        centred = detached - baseline.detach()
        if baseline.requires_grad:
            learned_term = -(detached - baseline).pow(2).mean(0)
    else:
        raise EstimatorError(
            f"{name}: baseline must be None, a tensor or an EmaBaseline, got {type(baseline).__name__}"
        )

    # At fixed z, log p carries theta's gradient; the autodiff form also differentiates -log q.
    direct = (signal if autodiff else log_joint).mean(0)
    term = direct + (centred * log_q).mean(0)
    if learned_term is not None:
        term = term + learned_term
    return ElboEstimate(elbo, attach_gradient(elbo, term))


def _broadcasts_to(shape, target) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def score_function_ema(model, q, num_samples: int, state: EmaBaseline | None = None, *,
                       decay: float = 0.9) -> ElboEstimate:
    """The seed's REINFORCE with an exponential-moving-average baseline.

    Approximates:  the gradient of the ELBO   (seed eq. 4)
    With:          as :func:`score_function`, b a moving average of past signals
    Requires:      the caller keeps ``state`` (an EmaBaseline) across steps; without one, each call
                   starts from b = 0 and this is plain REINFORCE. Unbiased: b uses the past only.
    References:    Mnih & Gregor 2014.
    """
    if state is None:
        state = EmaBaseline(decay)
    return _score_function("score_function_ema", model, q, num_samples, state)


def score_function_loo(model, q, num_samples: int) -> ElboEstimate:
    """The seed's REINFORCE with the leave-one-out baseline.

    Approximates:  the gradient of the ELBO   (seed eq. 4)
    With:          as :func:`score_function`, b_k = mean_{j != k} f(z_j)
    Requires:      num_samples >= 2. Unbiased: b_k uses the other, independent, samples.
    References:    Kool, van Hoof & Welling 2019; Mnih & Rezende 2016 (VIMCO's idea).
    """
    return _score_function("score_function_loo", model, q, num_samples, _loo, min_samples=2)


def _loo(signal, log_q):
    return signal - leave_one_out(signal)


def score_function_optimal(model, q, num_samples: int) -> ElboEstimate:
    """The seed's REINFORCE with the variance-minimising constant baseline, estimated leave-one-out.

    Approximates:  the gradient of the ELBO   (seed eq. 4)
    With:          as :func:`score_function`, b_k = the optimal constant E[f ||s||^2] / E[||s||^2]
                   estimated from the samples j != k, s the score with respect to the tensors q
                   was built from
    Requires:      num_samples >= 2. Unbiased: b_k does not use z_k.
    References:    Mohamed, Rosca, Figurnov & Mnih 2020, section 7.4.
    """

    def optimal(signal, log_q):
        params = distribution_parameters(q)
        if not params:  # nothing to differentiate: any baseline gives the same (zero) gradient
            return signal - leave_one_out(signal)
        # Eager even inside torch.compile: batched autograd.grad does not trace.
        norms = torch.compiler.disable(per_sample_score_norms)(log_q, params)
        return signal - optimal_constant(signal, norms)

    return _score_function("score_function_optimal", model, q, num_samples, optimal,
                           min_samples=2)
