"""The measure-valued gradient of a diagonal Gaussian q (Mohamed et al. 2020, section 6).

The derivative of N(z; mu, sigma^2) with respect to a parameter is a signed measure, written as
a constant times the difference of two probability densities (its weak derivative):

* mean:  d/dmu N = 1 / (sigma sqrt(2 pi)) [W+ - W-], W+- the densities of mu +- sigma w,
  w ~ Weibull(scale sqrt 2, concentration 2) (the Rayleigh distribution);
* scale: d/dsigma N = 1 / sigma [M - N], M the density of mu + sigma m, m ~ the double-sided
  Maxwell distribution (density m^2 phi(m): a chi with 3 degrees of freedom times a random
  sign), and N the Gaussian itself.

So d/dmu_d E_q[f] = E[f(z with z_d = mu_d + sigma_d w)] - E[f(z with z_d = mu_d - sigma_d w')],
over sigma_d sqrt(2 pi), the other coordinates of z drawn from q: two evaluations of f per
coordinate and parameter. Coupling draws the pair from one variate: w' = w for the mean, and for
the scale the Gaussian point u m, u ~ Uniform(0, 1), which is N(0, 1) distributed (the integral
of m phi(m) over m > |x| is phi(x)); the difference of the pair then has less variance.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Bernoulli, Chi2, Independent, Normal, Uniform, Weibull

from .base import ElboEstimate, EstimatorError, attach_gradient, check_inputs, evaluate_model

__all__ = ["measure_valued", "measure_valued_coupled", "standard_weak_derivative_pairs",
           "double_sided_maxwell"]

# The weak derivatives' constants, times sigma: 1 / sqrt(2 pi) for the mean, 1 for the scale.
MEAN_CONSTANT = 1.0 / math.sqrt(2.0 * math.pi)
SCALE_CONSTANT = 1.0


def double_sided_maxwell(shape, dtype=None, device=None) -> torch.Tensor:
    """Draws of density m^2 exp(-m^2 / 2) / sqrt(2 pi) on the real line: +-sqrt(chi^2_3)."""
    three = torch.tensor(3.0, dtype=dtype, device=device)
    radius = Chi2(three).sample(shape).sqrt()
    sign = 2 * Bernoulli(torch.tensor(0.5, dtype=dtype, device=device)).sample(shape) - 1
    return sign * radius


def standard_weak_derivative_pairs(shape, dtype=None, device=None, *, coupled: bool = False):
    """(4, *shape): the standardised points e of mu + sigma e for (mean +, mean -, scale +, scale -).

    Drawn in that order (Weibull, Weibull unless coupled, double-sided Maxwell, then a uniform
    factor if coupled, else a standard Normal). For a dtype narrower than float32 they are drawn
    in float32 and rounded: torch has no half-precision Gamma sampler on the CPU (the Maxwell's
    chi-square), and float32 and float64 draws are unchanged by it.
    """
    narrow = dtype is not None and dtype.is_floating_point and torch.finfo(dtype).bits < 32
    if narrow:
        return standard_weak_derivative_pairs(shape, torch.float32, device,
                                              coupled=coupled).to(dtype)
    options = {"dtype": dtype, "device": device}
    rayleigh = Weibull(torch.tensor(math.sqrt(2.0), **options), torch.tensor(2.0, **options))
    mean_plus = rayleigh.sample(shape)
    mean_minus = -(mean_plus if coupled else rayleigh.sample(shape))
    scale_plus = double_sided_maxwell(shape, **options)
    if coupled:
        scale_minus = Uniform(torch.tensor(0.0, **options), torch.tensor(1.0, **options)).sample(
            shape) * scale_plus
    else:
        scale_minus = Normal(torch.tensor(0.0, **options), torch.tensor(1.0, **options)).sample(shape)
    return torch.stack([mean_plus, mean_minus, scale_plus, scale_minus])


def _diagonal_gaussian(name: str, q):
    base = getattr(q, "base_dist", None)
    if not (isinstance(q, Independent) and q.reinterpreted_batch_ndims == 1
            and isinstance(base, Normal)):
        raise EstimatorError(
            f"{name}: q must be a diagonal Gaussian, Independent(Normal(loc, scale), 1), got "
            f"{type(q).__name__}{'' if base is None else f'({type(base).__name__})'}; its weak "
            "derivatives are the Gaussian's. Use a score-function estimator for other families"
        )
    return base.loc, base.scale


def _draws(q, num_samples: int, coupled: bool):
    """q's samples (K, *batch, D), then the standardised pairs (4, K, *batch, D), in that order."""
    with torch.no_grad():
        z = q.sample((num_samples,))
        return z, standard_weak_derivative_pairs(z.shape, z.dtype, z.device, coupled=coupled)


def keep_draws_eager() -> None:
    """Run the draws outside any compiled graph from now on (``replicate_gradients(compile=True)``
    calls this before it compiles a pass).

    TorchInductor may reorder independent random kernels, and the draws must come in the order
    above for a compiled pass to draw what an eager one does. ``torch.compiler.disable`` imports
    torch._dynamo, which takes seconds, so it is applied when a pass is first compiled rather
    than when this module is imported: every importer of the library would pay for it otherwise.
    """
    global _draws
    if not getattr(_draws, "eager_only", False):
        _draws = torch.compiler.disable(_draws)
        _draws.eager_only = True


def _measure_valued(name, model, q, num_samples, coupled) -> ElboEstimate:
    check_inputs(name, model, q, num_samples)
    loc, scale = _diagonal_gaussian(name, q)
    z, pairs = _draws(q, num_samples, coupled)
    log_joint = evaluate_model(name, model, z, q)
    elbo = (log_joint - q.log_prob(z)).mean(0)

    dim = z.shape[-1]
    with torch.no_grad():
        moved = loc + scale * pairs  # (4, K, *batch, D): coordinate d's new value
        # Copy d of z has its coordinate d moved: (4, D, K, *batch, D), one model call for all.
        eye = torch.eye(dim, dtype=torch.bool, device=z.device).reshape(dim, *[1] * (z.dim() - 1), dim)
        points = torch.where(eye, moved.unsqueeze(1), z).flatten(0, 2)
        moved_log_joint = evaluate_model(name, model, points, q)
        # f = log p - log q with q's value at the current lambda: its gradient is the ELBO's,
        # because E_q[grad_lambda log q] = 0 (seed section 5.1).
        signal = (moved_log_joint - q.log_prob(points)).reshape(4, dim, *z.shape[:-1])
        signal = signal.mean(2).movedim(1, -1)  # (4, *batch, D): mean over the K samples
        grad_loc = MEAN_CONSTANT * (signal[0] - signal[1]) / scale
        grad_scale = SCALE_CONSTANT * (signal[2] - signal[3]) / scale
    # theta: mean_k grad log p(x, z_k) at the samples of q; lambda through (loc, scale).
    term = log_joint.mean(0) + (grad_loc * loc).sum(-1) + (grad_scale * scale).sum(-1)
    return ElboEstimate(elbo, attach_gradient(elbo, term))


def measure_valued(model, q, num_samples: int) -> ElboEstimate:
    """The measure-valued gradient of the ELBO for a diagonal Gaussian q.

    Approximates:  the gradient of E_q[log p(x,z) - log q(z)]   (seed eq. 4)
    With:          d/dmu_d: mean_k [f(z_k^{d+}) - f(z_k^{d-})] / (sigma_d sqrt(2 pi)),
                   z^{d+-} = z_k with z_d = mu_d +- sigma_d w, w ~ Weibull(sqrt 2, 2), independent;
                   d/dsigma_d: mean_k [f(z_k with z_d = mu_d + sigma_d m) - f(z_k with z_d =
                   mu_d + sigma_d n)] / sigma_d, m double-sided Maxwell, n ~ N(0, 1);
                   theta: mean_k grad_theta log p(x, z_k); f = log p - log q, z_k ~ q
    Requires:      q = Independent(Normal(loc, scale), 1); any f (log p need not be
                   differentiable in z, nor q reparameterized): 4D extra evaluations of log p per
                   sample, a pair for each coordinate's mean and one for its scale. Unbiased.
    References:    Mohamed, Rosca, Figurnov & Mnih 2020, section 6 (the weak derivatives of the
                   Gaussian) and Figures 2-3.
    """
    return _measure_valued("measure_valued", model, q, num_samples, coupled=False)


def measure_valued_coupled(model, q, num_samples: int) -> ElboEstimate:
    """:func:`measure_valued` with each pair drawn from one variate (coupling).

    Approximates:  the gradient of the ELBO   (seed eq. 4)
    With:          as :func:`measure_valued`, with w' = w for the mean's pair and n = u m,
                   u ~ Uniform(0, 1), for the scale's (u m is N(0, 1) distributed)
    Requires:      q = Independent(Normal(loc, scale), 1); any f. Unbiased: each point of a pair
                   keeps its distribution, only their joint law changes.
    References:    Mohamed, Rosca, Figurnov & Mnih 2020, sections 6 and 7 (coupling), Figures 2-3.
    """
    return _measure_valued("measure_valued_coupled", model, q, num_samples, coupled=True)
