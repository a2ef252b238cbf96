"""Estimators for a q with discrete latents, where backpropagation cannot reach (seed section 5.2).

The seed ends section 5.2 with "discrete distributions like the binomial cannot then be learned
by using backpropagation!": for a Bernoulli or categorical q the score function of section 5.1
(:mod:`estimators.score_function`) is the one unbiased tool that needs nothing of the model.
This module holds the others: the exact sum over a small latent, the continuous relaxations
(biased), the relaxations used as control variates (REBAR, RELAX: unbiased) and the antithetic
estimators of Bernoulli latents (ARM, DisARM: unbiased, no relaxation).

Which q (:func:`q_kind`)
------------------------
* ``"bernoulli"``: ``Independent(Bernoulli(logits), 1)``, event shape (D,), values in {0, 1};
* ``"categorical"``: ``OneHotCategorical(logits)`` (one latent of C categories, event (C,)),
  ``Independent(OneHotCategorical(logits), 1)`` (D latents, event (D, C)), or
  ``Independent(Categorical(logits), 1)`` (event (D,), index values: enumeration and the score
  function only, since a relaxation needs one-hot values);
* ``"mixture"``: ``MixtureSameFamily`` whose components have ``rsample``: a discrete choice
  inside a continuous q (enumeration and the Gumbel-softmax relaxation of the choice);
* ``"continuous"``: anything else (the Gaussian, the families of seed section 6).
``Estimator.q_kinds`` in the registry says which of these each estimator takes.

Relaxed values
--------------
The relaxations evaluate the learning signal at relaxed values y (in [0, 1]^D, or on the simplex
for each categorical latent): f(y) = log p(x, y) - log q_fixed(y), where log q_fixed is the
continuous extension of log q with q's parameters held fixed, y . logits - softplus(logits) for a
Bernoulli and sum_c y_c log pi_c for a categorical. So the model's ``log_joint`` must be defined
and differentiable there (a Bernoulli likelihood written with
``binary_cross_entropy_with_logits`` is). Holding q's parameters fixed drops the direct term
-grad log q(b), whose mean is zero at the discrete b (the seed's "the very last term
disappears"), from the relaxed signal.

Randomness
----------
Every estimator here draws its noise as uniforms in (0, 1) through the option
``uniform(shape) -> tensor`` (default: ``torch.rand`` on q's dtype and device, torch's global
stream), in the order its docstring gives. R training runs of one group pass a ``uniform`` that
draws each run's share from the run's own generator, so that run r of the group is the solo run
of its seed. :class:`BernoulliWithNoise` does the same for the score-function family, whose
samples come from ``q.sample``.
"""

from __future__ import annotations

import math
import numbers
import re
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import (Bernoulli, Categorical, Distribution, Independent,
                                 MixtureSameFamily, OneHotCategorical)
from torch.distributions.utils import clamp_probs

from .base import (ElboEstimate, EstimatorError, attach_gradient, check_inputs, evaluate_model,
                   validation_enabled)

__all__ = ["CONTINUOUS", "BERNOULLI", "CATEGORICAL", "MIXTURE", "ANY_Q", "MAX_OUTCOMES",
           "q_kind", "enumeration", "gumbel_softmax", "straight_through", "rebar", "relax",
           "arm", "disarm", "RelaxControlVariate", "BernoulliWithNoise"]

CONTINUOUS, BERNOULLI, CATEGORICAL, MIXTURE = "continuous", "bernoulli", "categorical", "mixture"
ANY_Q = (CONTINUOUS, BERNOULLI, CATEGORICAL, MIXTURE)

# The largest number of outcomes per batch entry that enumeration sums over by default, and
# the largest it accepts at all (the outcomes' indices fit torch's int64 arithmetic with room).
MAX_OUTCOMES = 4096
MAX_OUTCOMES_LIMIT = 2**31 - 1


def q_kind(q) -> str:
    """Which kind of q this is, in the sense of ``Estimator.q_kinds`` (module docstring)."""
    if isinstance(q, Independent) and q.reinterpreted_batch_ndims == 1:
        if isinstance(q.base_dist, Bernoulli):
            return BERNOULLI
        if isinstance(q.base_dist, (OneHotCategorical, Categorical)):
            return CATEGORICAL
    if isinstance(q, OneHotCategorical):
        return CATEGORICAL
    if isinstance(q, MixtureSameFamily):
        return MIXTURE
    return CONTINUOUS


class _Parts(NamedTuple):
    """What the estimators need of a discrete q."""

    kind: str
    logits: torch.Tensor  # as q stores them: (*batch, *event); a categorical's are normalised
    one_hot: bool  # one-hot values (a relaxation can move them); False: Bernoulli or indices
    event_dims: int  # len(q.event_shape)


def _parts(name: str, model, q, num_samples, kinds, *, min_samples: int = 1,
           needs_logits: bool = False) -> _Parts:
    """Check q and the inputs for an estimator that takes ``kinds``; fail saying what to do."""
    if not isinstance(q, Distribution):
        raise EstimatorError(f"{name}: q must be a torch.distributions.Distribution, got "
                             f"{type(q).__name__}")
    kind = q_kind(q)
    if kind not in kinds:
        if isinstance(q, (Bernoulli, Categorical, OneHotCategorical)) and q.batch_shape:
            raise EstimatorError(f"{name}: wrap q ({type(q).__name__}) in "
                                 "torch.distributions.Independent(..., 1) so that its last "
                                 "dimension is the latent vector")
        if kinds == (BERNOULLI,):
            raise EstimatorError(
                f"{name} is for Bernoulli latents, q = Independent(Bernoulli(logits=...), 1); "
                f"got a {kind} q ({type(q).__name__}). For categorical latents use rebar, "
                "relax, gumbel_softmax or score_function_loo")
        if needs_logits:
            raise EstimatorError(
                f"{name} relaxes a discrete q and needs its logits: q = Independent(Bernoulli"
                "(logits), 1) or a OneHotCategorical; got a q with no logits "
                f"({type(q).__name__}). For a continuous q use pathwise; for any q, "
                "score_function")
        raise EstimatorError(f"{name} takes a q of kind {', '.join(kinds)}; got a {kind} q "
                             f"({type(q).__name__}). score_function takes any q")
    if kind == MIXTURE:
        check_inputs(name, model, q, num_samples, min_samples=min_samples)
        return _Parts(kind, q.mixture_distribution.logits, True, 1)
    base = q.base_dist if isinstance(q, Independent) else q
    one_hot = isinstance(base, OneHotCategorical) or kind == BERNOULLI
    if needs_logits and not one_hot:
        raise EstimatorError(f"{name}: a relaxation needs one-hot values, got "
                             "Independent(Categorical(logits), 1) (index values); use "
                             "Independent(OneHotCategorical(logits=...), 1)")
    check_inputs(name, model, q, num_samples, min_samples=min_samples)
    return _Parts(kind, base.logits, one_hot, len(q.event_shape))


def _log_joint(name: str, model, z: torch.Tensor, q, parts: _Parts) -> torch.Tensor:
    return evaluate_model(name, model, z, q)


def _sum_event(values: torch.Tensor, parts: _Parts) -> torch.Tensor:
    return values.sum(tuple(range(-parts.event_dims, 0)))


def _draw(name: str, uniform: Callable | None, shape, like: torch.Tensor) -> torch.Tensor:
    """Uniforms in (0, 1) of ``shape``: the caller's ``uniform``, else torch's global stream.

    The caller's values are clamped into the open interval (torch.rand may give 0); with
    validation on, values outside [0, 1] or NaN are refused rather than clamped or passed on."""
    shape = torch.Size(shape)
    if uniform is None:
        values = torch.rand(shape, dtype=like.dtype, device=like.device)
    else:
        if not callable(uniform):
            raise EstimatorError(f"{name}: uniform must be a function shape -> tensor of "
                                 f"uniforms, got {type(uniform).__name__}")
        values = uniform(tuple(shape))
        if not torch.is_tensor(values) or values.shape != shape:
            got = tuple(values.shape) if torch.is_tensor(values) else type(values).__name__
            raise EstimatorError(f"{name}: uniform({tuple(shape)}) must return a tensor of that "
                                 f"shape, got {got}")
        values = values.to(dtype=like.dtype, device=like.device)
        if validation_enabled() and not ((values >= 0) & (values <= 1)).all():
            low, high = values.min().item(), values.max().item()
            raise EstimatorError(f"{name}: uniform({tuple(shape)}) returned values outside "
                                 f"[0, 1] or NaN (min {low:.3g}, max {high:.3g}); it must draw "
                                 "uniforms in (0, 1) (set_validation(False) skips this scan)")
    return clamp_probs(values)


def _check_number(name: str, what: str, value, *, positive: bool) -> None:
    """``value`` a finite real number (> 0 if ``positive``), or a floating tensor of them:
    refused in one line before any draw. A Python number costs nothing to check; a tensor's
    values are read back only while validation is on."""
    rule = "a finite number > 0" if positive else "a finite number"
    if torch.is_tensor(value):
        if not value.is_floating_point():
            raise EstimatorError(f"{name}: {what} must be {rule}, got a tensor of dtype "
                                 f"{value.dtype}")
        if validation_enabled():
            bad = ~torch.isfinite(value)
            if positive:
                bad = bad | (value <= 0)
            if bad.any():
                raise EstimatorError(f"{name}: {what} must be {rule}, got "
                                     f"{value.detach()[bad].flatten()[0].item()}")
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise EstimatorError(f"{name}: {what} must be {rule}, got {value!r}")
    if not math.isfinite(value) or (positive and value <= 0):
        raise EstimatorError(f"{name}: {what} must be {rule}, got {value!r}")


def _noisy_logits(parts: _Parts, noise: torch.Tensor) -> torch.Tensor:
    """z = logits + logistic noise (Bernoulli: b = H(z)) or + Gumbel noise (categorical:
    b = one_hot(argmax z)), from uniforms: the Gumbel-max trick (Jang et al. 2017, eq. 1)."""
    if parts.kind == BERNOULLI:
        return parts.logits + torch.logit(noise)
    return parts.logits - torch.log(-torch.log(noise))


def _hard(parts: _Parts, z: torch.Tensor) -> torch.Tensor:
    if parts.kind == BERNOULLI:
        return (z > 0).to(z.dtype)
    return F.one_hot(z.argmax(-1), z.shape[-1]).to(z.dtype)


def _relaxed(parts: _Parts, z: torch.Tensor, temperature) -> torch.Tensor:
    """sigma(z / tau) (binary Concrete) or softmax(z / tau) (Concrete): Maddison et al. 2017."""
    temperature = torch.as_tensor(temperature, dtype=z.dtype, device=z.device)
    temperature = temperature.reshape(*temperature.shape, *[1] * parts.event_dims)
    if parts.kind == BERNOULLI:
        return torch.sigmoid(z / temperature)
    scores = z / temperature
    return (scores - scores.logsumexp(-1, keepdim=True)).exp()


def _log_q_fixed(parts: _Parts, y: torch.Tensor) -> torch.Tensor:
    """log q at (relaxed) values y with q's parameters held fixed: the continuous extension."""
    logits = parts.logits.detach()
    if parts.kind == BERNOULLI:
        terms = -F.binary_cross_entropy_with_logits(logits.expand_as(y), y, reduction="none")
    else:
        terms = y * logits  # normalised logits: sum_c y_c log pi_c
    return _sum_event(terms, parts)


def _conditional(parts: _Parts, b: torch.Tensor, noise: torch.Tensor, z=None) -> torch.Tensor:
    """z~ ~ p(z | b), reparameterized by uniforms and differentiable in the logits.

    Bernoulli (z = logits + logit(u), b = 1 iff u > 1 - pi): u | b is uniform on (1 - pi, 1) or
    (0, 1 - pi), so u~ = b (1 - pi + v pi) + (1 - b) v (1 - pi). Categorical (z_k = log pi_k +
    Gumbel): the winner z~_b = -log(-log v_b), the others z~_k = -log(-log(v_k) / pi_k -
    log v_b), each Gumbel truncated below z~_b. Tucker et al. 2017, appendix (REBAR); Grathwohl
    et al. 2018, appendix B (RELAX).
    """
    if parts.kind == BERNOULLI:
        prob = torch.sigmoid(parts.logits)
        shifted = b * (1 - prob + noise * prob) + (1 - b) * noise * (1 - prob)
        return parts.logits + torch.logit(clamp_probs(shifted))
    exponential = -torch.log(noise)
    winner = (b * exponential).sum(-1, keepdim=True)
    others = -torch.log(exponential / parts.logits.exp() + winner)
    return b * -torch.log(winner) + (1 - b) * others


def _score(parts: _Parts, b: torch.Tensor) -> torch.Tensor:
    """d log q(b) / d (the logits as q stores them), per sample: b - sigma(logits) for a
    Bernoulli; b for a categorical, whose stored logits are normalised upstream."""
    if parts.kind == BERNOULLI:
        return b - torch.sigmoid(parts.logits.detach())
    return b


def _to_raw_logits(parts: _Parts, grad: torch.Tensor) -> torch.Tensor:
    """A gradient with respect to the stored logits as one with respect to the logits q was given
    (a categorical's stored logits are logits - logsumexp(logits): project out the mean)."""
    if parts.kind == BERNOULLI:
        return grad
    probs = parts.logits.detach().exp()
    return grad - probs * grad.sum(-1, keepdim=True)


# --------------------------------------------------------------------------------------------
# The exact sum
# --------------------------------------------------------------------------------------------


def enumeration(model, q, num_samples: int, *, max_outcomes: int = MAX_OUTCOMES) -> ElboEstimate:
    """The ELBO as an exact sum over every outcome of a small discrete latent.

    Approximates:  the gradient of E_q[log p(x, b) - log q(b)]   (seed eq. 4), exactly
    With:          sum_b q(b) [log p(x, b) - log q(b)], b over all 2^D (Bernoulli) or C^D
                   (categorical) outcomes, differentiated by autograd: no noise at all, and
                   ``num_samples`` is not used. For a mixture q = sum_c pi_c q_c with
                   reparameterizable components: sum_c pi_c (1/K) sum_k [log p(x, z_ck) -
                   log q(z_ck)], z_ck = g_c(e_ck), C x K evaluations of the model.
    Requires:      a q of kind bernoulli, categorical or mixture with at most ``max_outcomes``
                   outcomes (components) per batch entry; refused in one line beyond it.
                   Exact for a discrete q, unbiased for a mixture.
    References:    the exact marginalisation that every estimator here approximates; for the
                   mixture, Roeder, Wu & Duvenaud 2017, section 5 (sum over components).
    """
    name = "enumeration"
    if (isinstance(max_outcomes, bool) or not isinstance(max_outcomes, numbers.Integral)
            or not 1 <= max_outcomes <= MAX_OUTCOMES_LIMIT):
        shown = repr(max_outcomes)
        shown = shown if len(shown) <= 40 else f"{shown[:20]}... ({len(shown)} characters)"
        raise EstimatorError(f"{name}: max_outcomes must be an int in 1..{MAX_OUTCOMES_LIMIT} "
                             f"(2^31 - 1: no memory holds more outcomes), got {shown}")
    parts = _parts(name, model, q, num_samples, (BERNOULLI, CATEGORICAL, MIXTURE))
    if parts.kind == MIXTURE:
        return _enumerate_mixture(name, model, q, num_samples, max_outcomes)
    if parts.kind == BERNOULLI:
        base, latents = 2, q.event_shape[0]
    elif parts.event_dims == 2 or not parts.one_hot:
        base, latents = parts.logits.shape[-1], q.event_shape[0]
    else:  # one OneHotCategorical of C categories
        base, latents = q.event_shape[0], 1
    # In logarithms: base ** latents of a thousand latents is an integer no float holds.
    if latents * math.log(base) > math.log(max_outcomes) + 1e-9:
        digits = latents * math.log10(base)
        count = f"{base ** latents:.3g}" if digits < 300 else f"about 1e{int(digits)}"
        raise EstimatorError(f"{name}: q has {base}^{latents} = {count} outcomes per batch "
                             f"entry, more than max_outcomes={max_outcomes}; use a Monte Carlo "
                             "estimator (disarm, rebar, relax, score_function_loo) or pass a "
                             "larger max_outcomes")
    count = base ** latents
    grids = [torch.arange(base, device=parts.logits.device)] * latents
    indices = torch.cartesian_prod(*grids).reshape(count, latents)  # (N, latents)
    if parts.kind == BERNOULLI:
        outcomes = indices.to(parts.logits.dtype)
    elif not parts.one_hot:
        outcomes = indices
    else:
        outcomes = F.one_hot(indices, base).to(parts.logits.dtype)  # (N, latents, C)
        if parts.event_dims == 1:
            outcomes = outcomes[:, 0]
    batch = q.batch_shape
    z = outcomes.reshape(count, *[1] * len(batch), *q.event_shape).expand(
        count, *batch, *q.event_shape)
    log_q = q.log_prob(z)  # (N, *batch)
    signal = _log_joint(name, model, z, q, parts) - log_q
    elbo = (log_q.exp() * signal).sum(0)
    return ElboEstimate(elbo, elbo)


def _enumerate_mixture(name, model, q, num_samples, max_outcomes) -> ElboEstimate:
    components = q.component_distribution
    if not components.has_rsample:
        raise EstimatorError(f"{name}: the mixture's components ({type(components).__name__}) "
                             "have no rsample; use score_function")
    if q.mixture_distribution.logits.shape[-1] > max_outcomes:
        raise EstimatorError(f"{name}: the mixture has more than max_outcomes={max_outcomes} "
                             "components; use score_function or pass a larger max_outcomes")
    points = components.rsample((num_samples,))  # (K, *batch, C, D)
    moved = points.movedim(-2, 0)  # (C, K, *batch, D): each component's samples
    log_joint = evaluate_model(name, model, moved, q)
    signal = log_joint - q.log_prob(moved)  # (C, K, *batch)
    weights = torch.softmax(q.mixture_distribution.logits, -1).movedim(-1, 0)  # (C, *batch)
    elbo = (weights * signal.mean(1)).sum(0)
    return ElboEstimate(elbo, elbo)


# --------------------------------------------------------------------------------------------
# Relaxations (biased)
# --------------------------------------------------------------------------------------------


def gumbel_softmax(model, q, num_samples: int, *, temperature: float = 0.5,
                   uniform: Callable | None = None) -> ElboEstimate:
    """The Gumbel-softmax (Concrete) relaxation: backpropagation through a relaxed sample.

    Approximates:  the gradient of the ELBO (seed eq. 4); biased for every temperature > 0
    With:          (1/K) sum_k grad f(y_k), f(y) = log p(x, y) - log q_fixed(y) (module
                   docstring), y = sigma((logits + logit u) / tau) for a Bernoulli, softmax((log
                   pi + G) / tau) with G = -log(-log u) Gumbel for a categorical; for a mixture q
                   the choice is relaxed, z = sum_c y_c g_c(e_c), f(z) = log p(x, z) - log q(z).
                   ``elbo`` is the relaxed estimate (1/K) sum_k f(y_k). Draws: u, (K, *batch,
                   *event) (a mixture: (K, *batch, C)), then a mixture's component noise from
                   torch's global stream.
    Requires:      q with logits (Bernoulli, one-hot categorical, or a mixture with
                   reparameterizable components); log p(x, z) defined and differentiable at
                   relaxed z. The bias: f is evaluated at y, which does not follow q; it
                   vanishes as tau -> 0 (y -> b) while the variance grows (d y / d logits ~ 1/tau
                   near the boundary); the gradient of theta is biased too.
    References:    Jang, Gu & Poole 2017; Maddison, Mnih & Teh 2017.
    """
    name = "gumbel_softmax"
    parts = _parts(name, model, q, num_samples, (BERNOULLI, CATEGORICAL, MIXTURE),
                   needs_logits=True)
    # A negative temperature flips the sign of the gradient; zero, NaN or inf make NaN that the
    # model's scan would then blame on the model.
    _check_number(name, "temperature", temperature, positive=True)
    if parts.kind == MIXTURE:
        components = q.component_distribution
        if not components.has_rsample:
            raise EstimatorError(f"{name}: the mixture's components have no rsample; use "
                                 "score_function")
        noise = _draw(name, uniform, (num_samples, *parts.logits.shape), parts.logits)
        weights = _relaxed(parts._replace(kind=CATEGORICAL, event_dims=1),
                           _noisy_logits(parts._replace(kind=CATEGORICAL), noise), temperature)
        points = components.rsample((num_samples,))  # (K, *batch, C, D)
        z = (weights.unsqueeze(-1) * points).sum(-2)
        log_joint = evaluate_model(name, model, z, q)
        elbo = (log_joint - q.log_prob(z)).mean(0)
        return ElboEstimate(elbo, elbo)
    noise = _draw(name, uniform, (num_samples, *q.batch_shape, *q.event_shape), parts.logits)
    y = _relaxed(parts, _noisy_logits(parts, noise), temperature)
    elbo = (_log_joint(name, model, y, q, parts) - _log_q_fixed(parts, y)).mean(0)
    return ElboEstimate(elbo, elbo)


def straight_through(model, q, num_samples: int, *, temperature: float = 0.5,
                     uniform: Callable | None = None) -> ElboEstimate:
    """Straight-through Gumbel: the discrete sample forward, the relaxed gradient backward.

    Approximates:  the gradient of the ELBO (seed eq. 4); biased at every temperature
    With:          b_st = b + y - stop_gradient(y), b = H(logits + logit u) (a Bernoulli) or
                   one_hot(argmax(log pi + G)) (a categorical), y as in :func:`gumbel_softmax`;
                   (1/K) sum_k grad f(b_st,k), f = log p(x, .) - log q_fixed(.): the value is
                   the plain Monte Carlo ELBO at b, the lambda-gradient df/db at b times dy/d
                   logits. Draws: u, (K, *batch, *event).
    Requires:      q with logits (Bernoulli or one-hot categorical); log p(x, z) differentiable
                   in z. The bias: for one Bernoulli coordinate, as tau -> 0 the mean tends to
                   d pi/d logit * (f'(0) + f'(1)) / 2 (the trapezoid rule) where the exact
                   gradient has d pi/d logit * (f(1) - f(0)): unbiased in that limit only when f
                   is at most quadratic in each b_d, biased otherwise and at every tau > 0. The
                   theta-gradient, at the discrete b, is unbiased.
    References:    Bengio, Leonard & Courville 2013 (straight-through); Jang, Gu & Poole 2017,
                   section 2.2 (Straight-Through Gumbel-Softmax).
    """
    name = "straight_through"
    parts = _parts(name, model, q, num_samples, (BERNOULLI, CATEGORICAL), needs_logits=True)
    _check_number(name, "temperature", temperature, positive=True)
    noise = _draw(name, uniform, (num_samples, *q.batch_shape, *q.event_shape), parts.logits)
    z = _noisy_logits(parts, noise)
    y = _relaxed(parts, z, temperature)
    b = _hard(parts, z).detach()
    through = b + (y - y.detach())
    elbo = (_log_joint(name, model, through, q, parts) - _log_q_fixed(parts, through)).mean(0)
    return ElboEstimate(elbo, elbo)


# --------------------------------------------------------------------------------------------
# The relaxation as a control variate (unbiased): REBAR and RELAX
# --------------------------------------------------------------------------------------------


class RelaxControlVariate(nn.Module):
    """RELAX's control variate c(z) = eta f(sigma_tau(z)) + r(z), kept by the caller across steps.

    ``log_temperature`` (tau = exp) and ``eta`` are scalars, ``network`` (r, optional) maps the
    noisy logits z, flattened to (..., E), and with ``context`` given, [context, z], to (..., 1).
    :func:`relax` trains all three through the surrogate it returns: put this module's parameters
    in the optimizer with the model's. For R runs as one group, stack R of them with
    :func:`experiments.replicated.stack_modules`: the scalars become (R, 1), broadcasting against
    a batch (R, B), and each run's network a slice of one batched network.
    References:  Grathwohl, Choi, Wu, Roeder & Duvenaud 2018 (RELAX, section 3.3: c = f(sigma_
                 lambda(z)) + r_rho(z)); Tucker et al. 2017 (eta and tau adapted online).
    """

    def __init__(self, network: nn.Module | None = None, temperature: float = 0.5,
                 eta: float = 1.0):
        super().__init__()
        for what, value, positive in (("temperature", temperature, True), ("eta", eta, False)):
            if torch.is_tensor(value) and value.numel() == 1:
                value = value.item()
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value) or (positive and value <= 0)):
                raise ValueError(f"RelaxControlVariate: {what} must be a finite number"
                                 f"{' > 0' if positive else ''}, got {value!r}")
        temperature, eta = float(temperature), float(eta)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))
        self.eta = nn.Parameter(torch.tensor(float(eta)))
        self.network = network

    @classmethod
    def with_network(cls, inputs: int, hidden: int = 137, seed: int = 0, **kwargs):
        """A control variate whose r is one hidden layer of leaky ReLUs (137 units, as in the
        DisARM experiments' RELAX), initialised from ``seed`` without touching torch's global
        stream."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            network = nn.Sequential(nn.Linear(inputs, hidden), nn.LeakyReLU(0.3),
                                    nn.Linear(hidden, 1))
        return cls(network, **kwargs)

    def residual(self, z: torch.Tensor, event_dims: int, context: torch.Tensor | None = None):
        """r(z) of shape z.shape[:-event_dims], 0 without a network."""
        if self.network is None:
            return z.new_zeros(())
        inputs = z.flatten(-event_dims) if event_dims > 1 else z
        if context is not None:
            inputs = torch.cat([context.to(inputs.dtype).expand(
                *inputs.shape[:-1], context.shape[-1]), inputs], -1)
        return self.network(inputs).squeeze(-1)


def rebar(model, q, num_samples: int, *, temperature: float = 0.5, eta: float = 1.0,
          uniform: Callable | None = None) -> ElboEstimate:
    """REBAR: the score function with the relaxed sample's signal as its control variate.

    Approximates:  the gradient of the ELBO (seed eq. 4)
    With:          lambda: (1/K) sum_k [f(b_k) - c(z~_k)] grad log q(b_k) + grad c(z_k) -
                   grad c(z~_k), c(z) = eta f(sigma_tau(z)) with f at relaxed values (module
                   docstring), z = logits + logistic (or Gumbel) noise from u, b = H(z) (argmax),
                   z~ ~ p(z | b) from v (the conditional reparameterization, Tucker et al. 2017,
                   eq. 5 and appendix); the gradients of c with respect to q's logits only, so
                   theta's gradient is (1/K) sum_k grad_theta log p(x, b_k), as the score
                   function's. Draws: u, then v, each (K, *batch, *event).
    Requires:      q with logits (Bernoulli or one-hot categorical); log p(x, z) defined and
                   differentiable at relaxed z. Unbiased for any eta and tau: c(z) and c(z~) have
                   the same mean, and E[c(z~) grad log q(b)] + E[grad c(z~)] = grad E[c(z)].
                   Three evaluations of the model per sample and a backward pass through the
                   two relaxed ones.
    References:    Tucker, Mnih, Maddison, Lawson & Sohl-Dickstein 2017 (REBAR).
    """
    return _relaxed_control("rebar", model, q, num_samples, temperature=temperature, eta=eta,
                            uniform=uniform)


def relax(model, q, num_samples: int, state: RelaxControlVariate | None = None, *,
          context: torch.Tensor | None = None, uniform: Callable | None = None,
          train: bool = True) -> ElboEstimate:
    """RELAX: REBAR's estimator with a learned control variate, trained on the gradient variance.

    Approximates:  the gradient of the ELBO (seed eq. 4)
    With:          as :func:`rebar` with c(z) = eta f(sigma_tau(z)) + r(z) (``state``, a
                   :class:`RelaxControlVariate`); with ``train``, the surrogate also carries,
                   zero in value, the gradient of -sum over batch entries of ||g||^2 with respect
                   to eta, tau and r's weights, g the entry's estimate of d ELBO / d logits
                   (with respect to the logits q was built from): ascending the surrogate lowers
                   the variance E||g||^2 - ||E g||^2, whose second term does not depend on c
                   (Grathwohl et al. 2018, eq. 5, Algorithm 2). That gradient is computed here,
                   by differentiating g (made with create_graph) once more, and attached as a
                   linear term, so the caller's one backward pass steps lambda, theta and the
                   control variate together and none of it reaches lambda or theta. Draws: u,
                   then v, each (K, *batch, *event).
    Requires:      as :func:`rebar`; the caller keeps ``state`` across steps (like an
                   EmaBaseline) and optimises its parameters; without one, each call makes a
                   fresh, untrained one (unbiased, but RELAX's point is the training).
                   ``context`` (*batch, C), e.g. x, is fed to r beside z. Unbiased for every c.
                   The paper's VAE code minimises the variance of the encoder weights' gradient;
                   here it is the logits' (per data point), which needs no knowledge of the
                   encoder.
    References:    Grathwohl, Choi, Wu, Roeder & Duvenaud 2018 (RELAX); Tucker et al. 2017.
    """
    name = "relax"
    if state is None and isinstance(q, Distribution):
        like = q.mean
        state = RelaxControlVariate.with_network(
            q.event_shape.numel() + (0 if context is None else context.shape[-1])).to(
            dtype=like.dtype, device=like.device)
    if state is None:  # q is no distribution: _parts says so
        return _relaxed_control(name, model, q, num_samples, temperature=0.5, eta=1.0,
                                uniform=uniform)
    if not isinstance(state, RelaxControlVariate):
        raise EstimatorError(f"{name}: state must be a RelaxControlVariate, got "
                             f"{type(state).__name__}")
    width = None
    if isinstance(q, Distribution) and state.network is not None:
        width = q.event_shape.numel() + (0 if context is None else context.shape[-1])
        takes = _input_width(state.network)
        if takes is not None and takes != width:
            raise EstimatorError(_width_message(name, q, context, width,
                                                f"takes {takes} inputs, but"))

    def residual(z, dims):
        if torch.compiler.is_compiling():  # no exception handling inside a compiled graph
            return state.residual(z, dims, context)
        try:
            value = state.residual(z, dims, context)
        except RuntimeError as error:
            first = (str(error).strip().splitlines() or [""])[0]
            if re.search(r"dtype|scalar type", first):
                raise EstimatorError(f"{name}: state's network cannot take q's {z.dtype} "
                                     f"values ({first}); convert it with state.to({z.dtype})"
                                     ) from None
            raise EstimatorError(_width_message(name, q, context, width,
                                                f"failed ({first}), and")) from None
        if value.shape != z.shape[:z.dim() - dims]:
            raise EstimatorError(f"{name}: state's network must map (..., {width}) to "
                                 f"(..., 1); it made r(z) of shape {tuple(value.shape)} for "
                                 f"z of shape {tuple(z.shape)}")
        return value

    trained = [p for p in state.parameters() if p.requires_grad] if train else []
    return _relaxed_control(name, model, q, num_samples, temperature=None, eta=state.eta,
                            log_temperature=state.log_temperature, uniform=uniform,
                            residual=residual, trained=trained)


def _input_width(network) -> int | None:
    """The inputs a network takes, where its first layer says (a Linear, alone or first in a
    Sequential); None where it does not."""
    first = network[0] if isinstance(network, nn.Sequential) and len(network) else network
    return first.in_features if isinstance(first, nn.Linear) else None


def _width_message(name, q, context, width, what) -> str:
    inputs = f"q's event {tuple(q.event_shape)} flattened"
    if context is not None:
        inputs += f" and the context's {context.shape[-1]} columns"
    return (f"{name}: state's network {what} its inputs here have width {width} ({inputs}); "
            f"build it for {width} inputs, e.g. RelaxControlVariate.with_network({width})")


def _relaxed_control(name, model, q, num_samples, *, temperature, eta, uniform,
                     log_temperature=None, residual=None, trained=(),
                     conditional=_conditional) -> ElboEstimate:
    parts = _parts(name, model, q, num_samples, (BERNOULLI, CATEGORICAL), needs_logits=True)
    if log_temperature is None:
        _check_number(name, "temperature", temperature, positive=True)
        _check_number(name, "eta", eta, positive=False)
    else:  # RELAX's, trained: a step too far sends them to NaN or inf
        temperature = log_temperature.exp()
        _check_number(name, "state's temperature (exp of state.log_temperature)", temperature,
                      positive=True)
        _check_number(name, "state.eta", eta, positive=False)
    shape = (num_samples, *q.batch_shape, *q.event_shape)
    noise = _draw(name, uniform, shape, parts.logits)
    noise_tilde = _draw(name, uniform, shape, parts.logits)
    logits = parts.logits
    z = _noisy_logits(parts, noise)
    b = _hard(parts, z).detach()
    z_tilde = conditional(parts, b, noise_tilde, z)
    log_q = q.log_prob(b)
    log_joint = _log_joint(name, model, b, q, parts)
    signal = (log_joint - log_q).detach()
    eta = torch.as_tensor(eta, dtype=logits.dtype, device=logits.device)

    def control(noisy):
        y = _relaxed(parts, noisy, temperature)
        value = eta * (_log_joint(name, model, y, q, parts) - _log_q_fixed(parts, y))
        return value if residual is None else value + residual(noisy, parts.event_dims)

    control_z, control_tilde = control(z), control(z_tilde)
    elbo = signal.mean(0)
    term = log_joint.mean(0) + ((signal - control_tilde.detach()) * log_q).mean(0)
    if logits.requires_grad:
        train = bool(trained)
        (path,) = torch.autograd.grad((control_z - control_tilde).mean(0).sum(), logits,
                                      retain_graph=True, create_graph=train)
        term = term + _sum_event(path.detach() * logits, parts)
        if train:
            extra = [1] * parts.event_dims
            weights = (signal - control_tilde).reshape(*signal.shape, *extra)
            estimate = _to_raw_logits(parts, (weights * _score(parts, b)).mean(0) + path)
            grads = torch.autograd.grad(estimate.pow(2).sum(), trained, retain_graph=True,
                                        allow_unused=True)
            linear = sum((g.detach() * p).sum() for g, p in zip(grads, trained) if g is not None)
            if torch.is_tensor(linear):
                term = term - linear / elbo.numel()
    return ElboEstimate(elbo, attach_gradient(elbo, term))


# --------------------------------------------------------------------------------------------
# Antithetic estimators of Bernoulli latents: ARM and DisARM
# --------------------------------------------------------------------------------------------


def _arm_weights(noise, first, second, logits):
    """ARM's (1/2 - u): grad_logits E f(b) = E[(f(b) - f(b~)) (1/2 - u)] (Yin & Zhou 2019, eq. 5
    with b = 1[u < sigma(logits)], b~ = 1[u > sigma(-logits)])."""
    return 0.5 - noise


def _disarm_weights(noise, first, second, logits):
    """DisARM's (1/2) (-1)^b~ 1[b != b~] sigma(|logits|): ARM's weight with u integrated out given
    the pair (Dong, Mnih & Tucker 2020, eq. 6)."""
    sign = 1 - 2 * second
    return 0.5 * sign * (first != second).to(logits.dtype) * torch.sigmoid(logits.abs())


def _antithetic(name, model, q, num_samples, uniform, weights) -> ElboEstimate:
    if isinstance(num_samples, int) and not isinstance(num_samples, bool) and (
            num_samples < 2 or num_samples % 2):
        raise EstimatorError(f"{name}: needs an even num_samples >= 2 (antithetic pairs), got "
                             f"{num_samples}")
    parts = _parts(name, model, q, num_samples, (BERNOULLI,), min_samples=2)
    pairs = num_samples // 2
    logits = parts.logits
    noise = _draw(name, uniform, (pairs, *q.batch_shape, *q.event_shape), logits)
    with torch.no_grad():
        first = (noise < torch.sigmoid(logits)).to(logits.dtype)  # b ~ q
        second = (noise > torch.sigmoid(-logits)).to(logits.dtype)  # b~ = b of 1 - u, ~ q
    both = torch.cat([first, second])
    log_q = q.log_prob(both)
    log_joint = _log_joint(name, model, both, q, parts)
    signal = (log_joint - log_q).detach()
    difference = (signal[:pairs] - signal[pairs:]).unsqueeze(-1)
    gradient = (difference * weights(noise, first, second, logits.detach())).mean(0)
    elbo = signal.mean(0)
    term = log_joint.mean(0) + (gradient * logits).sum(-1)
    return ElboEstimate(elbo, attach_gradient(elbo, term))


def arm(model, q, num_samples: int, *, uniform: Callable | None = None) -> ElboEstimate:
    """ARM: Augment-REINFORCE-Merge, an antithetic pair of samples from one uniform.

    Approximates:  the gradient of the ELBO (seed eq. 4) for Bernoulli latents
    With:          d/d logits_d: (1/P) sum_p [f(b_p) - f(b~_p)] (1/2 - u_pd), P = K / 2 pairs,
                   b = 1[u < sigma(logits)], b~ = 1[u > sigma(-logits)] (both ~ q, antithetic),
                   u ~ U(0, 1)^D, f = log p(x, b) - log q(b); theta: the mean of grad_theta log
                   p(x, b) over all K samples. Draws: u, (K / 2, *batch, D).
    Requires:      q = Independent(Bernoulli(logits), 1); num_samples even (K / 2 pairs); any
                   log p(x, b), at binary b only. Unbiased.
    References:    Yin & Zhou 2019 (ARM), eq. 5.
    """
    return _antithetic("arm", model, q, num_samples, uniform, _arm_weights)


def disarm(model, q, num_samples: int, *, uniform: Callable | None = None) -> ElboEstimate:
    """DisARM: ARM with its augmenting uniform integrated out given the antithetic pair.

    Approximates:  the gradient of the ELBO (seed eq. 4) for Bernoulli latents
    With:          d/d logits_d: (1/P) sum_p (1/2) [f(b_p) - f(b~_p)] (-1)^{b~_pd} 1[b_pd !=
                   b~_pd] sigma(|logits_d|), b, b~ and theta's gradient as in :func:`arm`; zero
                   in the coordinates where the pair agrees. Draws: u, (K / 2, *batch, D).
    Requires:      q = Independent(Bernoulli(logits), 1); num_samples even; any log p(x, b).
                   Unbiased, with variance at most ARM's (a Rao-Blackwellization of it).
    References:    Dong, Mnih & Tucker 2020 (DisARM), eq. 6; Yin & Zhou 2019.
    """
    return _antithetic("disarm", model, q, num_samples, uniform, _disarm_weights)


# --------------------------------------------------------------------------------------------
# A Bernoulli whose noise the caller draws (for the score-function family in groups of runs)
# --------------------------------------------------------------------------------------------


class BernoulliWithNoise(Bernoulli):
    """torch's Bernoulli, whose uniform noise the caller drew: ``sample`` is H(logits + logit u).

    The same b as every estimator of this module makes from the same u (b = 1 iff u > 1 - pi,
    distributed as q), so that the score-function estimators, which draw through ``q.sample``,
    can take a run's own noise too. Densities are torch's. ``noise`` has the shape of the one
    draw it serves, ``sample_shape + batch_shape``; a second draw raises.
    """

    def __init__(self, logits, noise: torch.Tensor, validate_args=None):
        super().__init__(logits=logits, validate_args=validate_args)
        if not torch.is_tensor(noise):
            raise ValueError(f"BernoulliWithNoise: noise must be a tensor, got "
                             f"{type(noise).__name__}")
        self.noise, self._drawn = noise, False

    def sample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        if self.noise.shape != shape:
            raise ValueError(f"BernoulliWithNoise: a draw of shape {tuple(shape)} needs noise of "
                             f"that shape, got {tuple(self.noise.shape)}")
        if self._drawn:
            raise RuntimeError("BernoulliWithNoise: its noise was drawn already")
        self._drawn = True
        with torch.no_grad():
            noise = clamp_probs(self.noise.to(self.logits.dtype))
            return (self.logits + torch.logit(noise) > 0).to(self.logits.dtype)
