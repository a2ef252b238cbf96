"""The pathwise (reparameterization) estimators of seed section 5.2 and their relatives."""

from __future__ import annotations

from torch.distributions import kl_divergence

from .base import ElboEstimate, EstimatorError, attach_gradient, check_inputs, evaluate_model

__all__ = ["pathwise", "pathwise_analytic_kl", "stl"]


def _reparameterized_signal(name, model, q, num_samples):
    check_inputs(name, model, q, num_samples, needs_rsample=True)
    z = q.rsample((num_samples,))
    log_joint = evaluate_model(name, model, z, q)
    return z, log_joint - q.log_prob(z)


def pathwise(model, q, num_samples: int) -> ElboEstimate:
    """The reparameterization trick on the joint form of the ELBO.

    Approximates:  the gradient of E_q[log p(x,z) - log q(z)]   (seed eq. 4)
    With:          mean_k grad [log p(x, g(e_k)) - log q(g(e_k))], z = g_lambda(e), e ~ zeta
                   (seed section 5.2)
    Requires:      q.rsample; log p(x, z) differentiable in z. Unbiased.
    References:    Kingma & Welling 2014; Rezende, Mohamed & Wierstra 2014.
    """
    _, signal = _reparameterized_signal("pathwise", model, q, num_samples)
    elbo = signal.mean(0)
    return ElboEstimate(elbo, elbo)


def pathwise_analytic_kl(model, q, num_samples: int) -> ElboEstimate:
    """Reparameterized reconstruction term minus the KL to the prior in closed form.

    Approximates:  the gradient of E_q[log p(x|z)] - KL(q(z) || p(z))   (seed eq. 6)
    With:          mean_k grad log p(x | g(e_k)) - grad KL(q || p), the KL from torch's registry
    Requires:      q.rsample; model.prior and model.log_likelihood; a KL pair registered for
                   (type(q), type(model.prior)) in torch.distributions.kl. Unbiased.
    References:    Kingma & Welling 2014 (their estimator B).
    """
    name = "pathwise_analytic_kl"
    check_inputs(name, model, q, num_samples, needs_rsample=True, needs_factorised=True)
    prior_event = getattr(model.prior, "event_shape", None)
    if prior_event is not None and prior_event != q.event_shape:
        raise EstimatorError(
            f"{name}: the prior has event shape {tuple(prior_event)} and q {tuple(q.event_shape)};"
            " the KL(q || prior) needs the same latent dimension in both")
    try:
        kl = kl_divergence(q, model.prior)
    except NotImplementedError:
        raise EstimatorError(
            f"{name}: no analytic KL is registered for ({type(q).__name__}, "
            f"{type(model.prior).__name__}); register one with "
            "torch.distributions.kl.register_kl or use 'pathwise'"
        ) from None
    z = q.rsample((num_samples,))
    log_likelihood = evaluate_model(name, model, z, q, what="log_likelihood")
    elbo = log_likelihood.mean(0) - kl
    if elbo.shape != q.batch_shape:
        raise EstimatorError(
            f"{name}: KL(q || prior) has shape {tuple(kl.shape)}, which does not match "
            f"q.batch_shape {tuple(q.batch_shape)}; give the prior event shape (D,)"
        )
    return ElboEstimate(elbo, elbo)


def stl(model, q, num_samples: int) -> ElboEstimate:
    """Sticking the landing: the pathwise gradient without its score term.

    Approximates:  the gradient of the ELBO   (seed eq. 4)
    With:          mean_k grad [log p(x, g(e_k)) - log q_stop(g(e_k))], where q_stop has its
                   parameters held fixed; the dropped term grad_lambda log q(z) has mean zero.
                   Zero variance when q is the exact posterior.
    Requires:      q.rsample. Unbiased.
    References:    Roeder, Wu & Duvenaud 2017.
    """
    z, signal = _reparameterized_signal("stl", model, q, num_samples)
    # log q(z) with z held fixed carries exactly the score term; adding it back cancels it.
    score_term = q.log_prob(z.detach())
    elbo = signal.mean(0)
    return ElboEstimate(elbo, attach_gradient(elbo, (signal + score_term).mean(0)))
