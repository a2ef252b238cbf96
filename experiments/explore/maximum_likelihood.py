"""Tutorial 1: maximum likelihood is KL minimisation (seed section 1).

The true p is a two-component Gaussian mixture; the model family is the Gaussians N(mu, sigma^2).
For a Gaussian model the cross-entropy E_p[-log N(x; mu, sigma)] has a closed form in the first
two moments of p, so the exact KL(p || N(mu, sigma)) = E_p[log p] - E_p[log N] needs only one
quadrature, of the entropy of p, done once. Everything a slider moves is then vectorised.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import integrate, stats

from . import register

__all__ = ["TRUE_P", "moments", "entropy", "kl_to_gaussian", "average_log_ratio", "excess_constant", "ml_fit",
           "draw_likelihood_curves"]

# p = 0.3 N(-2, 0.6^2) + 0.7 N(1, 1): skewed and bimodal, so no Gaussian matches it exactly.
TRUE_P = {"weights": (0.3, 0.7), "locs": (-2.0, 1.0), "scales": (0.6, 1.0)}


def log_p(x: np.ndarray) -> np.ndarray:
    """log p(x) of the true mixture."""
    parts = [math.log(w) + stats.norm.logpdf(x, m, s)
             for w, m, s in zip(TRUE_P["weights"], TRUE_P["locs"], TRUE_P["scales"])]
    return np.logaddexp.reduce(parts, axis=0)


def sample_p(n: int, rng: np.random.Generator) -> np.ndarray:
    """n independent draws from p."""
    component = rng.choice(len(TRUE_P["weights"]), size=n, p=TRUE_P["weights"])
    return rng.normal(np.take(TRUE_P["locs"], component), np.take(TRUE_P["scales"], component))


def moments() -> tuple[float, float]:
    """E_p[x] and Var_p[x] of the mixture, in closed form."""
    w, m, s = (np.asarray(TRUE_P[k]) for k in ("weights", "locs", "scales"))
    mean = float(w @ m)
    return mean, float(w @ (s ** 2 + m ** 2) - mean ** 2)


def entropy() -> float:
    """H(p) = -E_p[log p(x)], by adaptive quadrature (scipy.integrate.quad), once per p."""
    return _entropy(tuple(tuple(TRUE_P[k]) for k in ("weights", "locs", "scales")))


@lru_cache(maxsize=8)
def _entropy(key) -> float:  # keyed by p itself, so a reader who edits TRUE_P gets the new value
    value, _ = integrate.quad(lambda x: -math.exp(log_p(np.array(x))) * log_p(np.array(x)),
                              -np.inf, np.inf)
    return value


def kl_to_gaussian(mu, sigma) -> np.ndarray:
    """KL(p || N(mu, sigma^2)) exactly, for arrays of mu and sigma (broadcast).

    E_p[log N(x; mu, sigma)] = -log(sigma sqrt(2 pi)) - (Var_p + (E_p - mu)^2) / (2 sigma^2).
    """
    mean, var = moments()
    mu, sigma = np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float)
    cross = np.log(sigma * math.sqrt(2 * math.pi)) + (var + (mean - mu) ** 2) / (2 * sigma ** 2)
    return cross - entropy()


def average_log_ratio(x: np.ndarray, mu, sigma) -> np.ndarray:
    """(1/N) sum_i log[N(x_i; mu, sigma) / p(x_i)] for arrays of mu and sigma (broadcast).

    The Gaussian part depends on the data only through their first two sample moments, so a
    whole grid of (mu, sigma) costs no more than one point.
    """
    mu, sigma = np.asarray(mu, dtype=float), np.asarray(sigma, dtype=float)
    first, second = x.mean(), (x ** 2).mean()
    gaussian = (-np.log(sigma * math.sqrt(2 * math.pi))
                - (second - 2 * mu * first + mu ** 2) / (2 * sigma ** 2))
    return gaussian - log_p(x).mean()


def excess_constant() -> float:
    """The limit of N * (E[KL(p || fit_N)] - min KL) for the Gaussian fit: tr(J^-1 K) / 2.

    J is the Hessian of E_p[-log N(x; mu, s2)] at the best (mu*, s2*) and K the variance of the
    score there (Takeuchi 1976; White 1982). For the Gaussian family in (mu, s2) this is
    (1 + (kurtosis - 1) / 2) / 2, with the kurtosis E_p[(x - mu*)^4] / s2*^2 of p by quadrature:
    1 when p is Gaussian (kurtosis 3), less for a flatter, bimodal p.
    """
    mean, var = moments()
    fourth, _ = integrate.quad(lambda x: (x - mean) ** 4 * math.exp(log_p(np.array(x))),
                               -np.inf, np.inf)
    return (1 + (fourth / var ** 2 - 1) / 2) / 2


def ml_fit(x: np.ndarray) -> tuple[float, float]:
    """The Gaussian maximum-likelihood estimate: the sample mean and the (1/N) standard deviation."""
    return float(x.mean()), float(x.std())


_GRID = np.linspace(-2.5, 2.5, 401)


def draw_likelihood_curves(n: int = 30, seed: int = 0):
    """The exact -KL(p || N(mu, sigma*)) against mu, and the average log ratio of n draws."""
    import matplotlib.pyplot as plt

    mean, var = moments()
    sigma = math.sqrt(var)
    x = sample_p(n, np.random.default_rng(seed))
    fig, ax = plt.subplots(figsize=(7.5, 4.2), constrained_layout=True)
    ax.plot(_GRID, -kl_to_gaussian(_GRID, sigma), color="black", linewidth=2.5,
            label="exact: −KL(p ‖ N(μ, σ*²))")
    ax.plot(_GRID, average_log_ratio(x, _GRID, sigma), color="#1f77b4",
            label=f"data: (1/N) Σ log N(x_i; μ, σ*²) / p(x_i), N = {n}")
    mu_hat, _ = ml_fit(x)
    ax.axvline(mean, color="black", linestyle=":", label=f"KL minimiser μ* = E_p[x] = {mean:.2f}")
    ax.axvline(mu_hat, color="#1f77b4", linestyle="--", label=f"ML estimate μ̂ = {mu_hat:.2f}")
    ax.set_xlabel("μ (σ held at σ* = sd of p)")
    ax.set_ylabel("nats per data point")
    ax.set_ylim(-2.0, 0.3)
    ax.legend(loc="lower center", fontsize=8)
    ax.set_title("Maximum likelihood maximises an estimate of −KL(p ‖ p̂)", fontsize=10)
    return fig


LIKELIHOOD = register("maximum-likelihood", draw_likelihood_curves,
                      "the sample size N behind the data curve",
                      start={"n": 30}, n=[3, 10, 30, 100, 300, 1000, 3000, 10000],
                      seed=list(range(10)))
