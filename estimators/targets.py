"""Toy models whose ELBO, or whose gradient, is known exactly: the ground truth of every check.

Each model has ``log_joint(z)``, vectorised over the leading dimensions of ``z`` (shape
(..., D)), and parameters (theta) that broadcast against those dimensions. Exact ELBOs are
written in closed form in torch, so autograd of them gives exact gradients with respect to both
q's parameters (lambda) and the model's (theta).
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

__all__ = [
    "ConjugateGaussian",
    "PolynomialTarget",
    "CosineTarget",
    "GaussianMixtureTarget",
    "WithStandardPrior",
    "gaussian_entropy",
]


def gaussian_entropy(scale: torch.Tensor) -> torch.Tensor:
    """Entropy of N(loc, diag(scale^2)), summed over the last dimension."""
    return (0.5 * math.log(2 * math.pi * math.e) + scale.log()).sum(-1)


class ConjugateGaussian:
    """z ~ N(prior_loc, prior_scale^2 I), x | z ~ N(z, noise_scale^2 I): a posterior in closed form.

    theta is ``prior_loc``. With this model log p(x) = ELBO + KL(q || p(z|x)) (seed eq. 3) can be
    checked to numerical precision, and q = the posterior makes the STL gradient exactly zero.
    """

    def __init__(self, x, prior_loc, prior_scale=1.0, noise_scale=1.0):
        self.x = torch.as_tensor(x)
        self.prior_loc = torch.as_tensor(prior_loc, dtype=self.x.dtype)
        self.prior_scale = torch.as_tensor(prior_scale, dtype=self.x.dtype)
        self.noise_scale = torch.as_tensor(noise_scale, dtype=self.x.dtype)

    @property
    def prior(self):
        return Independent(Normal(self.prior_loc, self.prior_scale), 1)

    def log_likelihood(self, z):
        return Normal(z, self.noise_scale).log_prob(self.x).sum(-1)

    def log_joint(self, z):
        return self.prior.log_prob(z) + self.log_likelihood(z)

    def posterior(self):
        precision = self.prior_scale.pow(-2) + self.noise_scale.pow(-2)
        loc = (self.prior_loc * self.prior_scale.pow(-2) + self.x * self.noise_scale.pow(-2)) / precision
        return Independent(Normal(loc, precision.rsqrt().expand_as(loc)), 1)

    def log_evidence(self):
        marginal_scale = (self.prior_scale.pow(2) + self.noise_scale.pow(2)).sqrt()
        return Normal(self.prior_loc, marginal_scale).log_prob(self.x).sum(-1)

    def exact_elbo(self, loc, scale):
        """The ELBO of q = N(loc, diag(scale^2)) in closed form (seed eq. 4)."""
        prior = (Normal(self.prior_loc, self.prior_scale).log_prob(loc)
                 - scale.pow(2) / (2 * self.prior_scale.pow(2))).sum(-1)
        likelihood = (Normal(loc, self.noise_scale).log_prob(self.x)
                      - scale.pow(2) / (2 * self.noise_scale.pow(2))).sum(-1)
        return prior + likelihood + gaussian_entropy(scale)


def _normal_moments(loc, scale, degree):
    """E[z^p] for z ~ N(loc, scale^2), p = 0..degree (degree <= 4), stacked on the last axis."""
    if degree > 4:
        raise ValueError(f"closed-form moments are written up to degree 4, got {degree}")
    m, v = loc, scale.pow(2)
    moments = [torch.ones_like(m), m, m.pow(2) + v, m.pow(3) + 3 * m * v,
               m.pow(4) + 6 * m.pow(2) * v + 3 * v.pow(2)]
    return torch.stack(moments[: degree + 1], -1)


class PolynomialTarget:
    """log p(x, z) = sum_d sum_p coefficients[p] z_d^p, a polynomial of degree <= 4.

    theta is ``coefficients`` (last dimension: the powers 0..degree). Unnormalised: only its
    gradients matter, and E_q of a polynomial is exact under a Gaussian q.
    """

    def __init__(self, coefficients):
        self.coefficients = torch.as_tensor(coefficients)
        self.degree = self.coefficients.shape[-1] - 1

    def log_joint(self, z):
        powers = torch.arange(self.degree + 1, dtype=z.dtype, device=z.device)
        terms = z.unsqueeze(-1).pow(powers) * self.coefficients.unsqueeze(-2)
        return terms.sum((-1, -2))

    def exact_elbo(self, loc, scale):
        moments = _normal_moments(loc, scale, self.degree)
        return (moments * self.coefficients.unsqueeze(-2)).sum((-1, -2)) + gaussian_entropy(scale)


class CosineTarget:
    """log p(x, z) = sum_d amplitude cos(frequency z_d); E_q cos(w z) = cos(w m) exp(-w^2 s^2 / 2).

    theta is ``amplitude``. A bounded, oscillating integrand: the case where the score function
    estimator of Mohamed et al. 2020 (their Figure 2) beats the pathwise one at high frequency.
    """

    def __init__(self, amplitude, frequency):
        self.amplitude = torch.as_tensor(amplitude)
        self.frequency = torch.as_tensor(frequency, dtype=self.amplitude.dtype)

    def log_joint(self, z):
        return (self.amplitude.unsqueeze(-1) * torch.cos(self.frequency * z)).sum(-1)

    def exact_elbo(self, loc, scale):
        w = self.frequency
        expected = torch.cos(w * loc) * torch.exp(-0.5 * w.pow(2) * scale.pow(2))
        return (self.amplitude.unsqueeze(-1) * expected).sum(-1) + gaussian_entropy(scale)


class GaussianMixtureTarget:
    """The seed's section 2 model as an unnormalised target: log sum_k pi_k N(z; mu_k, diag s_k^2).

    theta is (``logits``, ``locs``, ``scales``) with shapes (..., K), (..., K, D), (..., K, D).
    The density is torch's MixtureSameFamily; exact ELBO gradients come from quadrature.
    """

    def __init__(self, logits, locs, scales):
        self.logits = torch.as_tensor(logits)
        self.locs = torch.as_tensor(locs, dtype=self.logits.dtype)
        self.scales = torch.as_tensor(scales, dtype=self.logits.dtype)

    @property
    def distribution(self):
        return MixtureSameFamily(Categorical(logits=self.logits),
                                 Independent(Normal(self.locs, self.scales), 1))

    def log_joint(self, z):
        return self.distribution.log_prob(z)

    @classmethod
    def ring(cls, num_components=8, radius=3.0, scale=0.5, dtype=torch.float64):
        """Equal-weight components on a circle in 2-D: the classic 'eight Gaussians'."""
        angles = torch.arange(num_components, dtype=dtype) * (2 * math.pi / num_components)
        locs = radius * torch.stack([angles.cos(), angles.sin()], -1)
        return cls(torch.zeros(num_components, dtype=dtype), locs,
                   torch.full_like(locs, scale))


class WithStandardPrior:
    """A target written as prior times likelihood, for the estimators of seed eq. (6).

    p(z) = N(z; 0, I) * [p(z) / N(z; 0, I)]: the prior is the seed's section 6 standard one and
    the "likelihood" is the rest, so log_joint is unchanged and E_q[log_likelihood] - KL(q || prior)
    is the same ELBO; pathwise_analytic_kl integrates the Gaussian part in closed form.
    ``exact_elbo`` is the target's, where it has one.
    """

    def __init__(self, target, dim: int, dtype: torch.dtype | None = None):
        self.target = target
        self.prior = Independent(Normal(torch.zeros(dim, dtype=dtype),
                                        torch.ones(dim, dtype=dtype)), 1)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.target.log_joint(z)

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        return self.target.log_joint(z) - self.prior.log_prob(z)

    def exact_elbo(self, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.target.exact_elbo(loc, scale)
