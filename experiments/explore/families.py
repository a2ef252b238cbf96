"""Tutorial 6: the reparameterizable families of seed section 6.

The chi-square control: q = s * chi2_k (:class:`estimators.ChiSquare`, a sum of k squared
standard normals), the target p = Gamma(3, 1), the ELBO E_q[log p(z) - log q(z)] = -KL(q || p).
For each number of degrees of freedom k the scale is the best one, s = 3 / k (where the ELBO's
gradient in log s is zero), and the figure compares the variances of the two single-sample
estimators of that gradient:

- ``pathwise`` (seed 5.2): z = s c, c ~ chi2_k; its gradient in log s is 3 - s c, whose
  variance is 2 k s^2 in closed form;
- ``score_function`` (seed 5.1): [log p(s c) - log q(s c)] (c - k) / 2; its variance is a
  sum of moments E[c^n (log c)^p] of the chi-square, each in closed form (digamma, trigamma);
  the tests check it against scipy's quadrature.

At k = 6 the family holds the target exactly (0.5 * chi2_6 = Gamma(3, 1)): the score function's
signal log p - log q is then constant and its variance zero, while the pathwise estimator's is
not. Whatever does not depend on the slider (both exact curves) is computed once.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy import special
from torch.distributions import Gamma, Independent

from estimators import ESTIMATORS, ChiSquare
from estimators.diagnostics import diagnose

from . import register

__all__ = ["TARGET", "DEGREES", "best_log_scale", "chi_square_q", "GammaTarget",
           "exact_gradient", "exact_elbo", "exact_variances", "measured_variances",
           "draw_chi_square", "draw_family_samples",
           "CHI_SQUARE"]

TARGET = {"concentration": 3.0, "rate": 1.0}  # p = Gamma(3, 1), mean 3
DEGREES = [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 30, 40]
ESTIMATOR_NAMES = ("pathwise", "score_function")
DTYPE = torch.float64


class GammaTarget:
    """log p(z) = Gamma(concentration, rate).log_prob(z), summed over the event dimension:
    the ``model`` of an estimator, with no data (its "x" is fixed and absorbed)."""

    def __init__(self, concentration: float | None = None, rate: float | None = None):
        # TARGET read at call time, so that a reader who edits it gets the new target
        concentration = TARGET["concentration"] if concentration is None else concentration
        rate = TARGET["rate"] if rate is None else rate
        self.distribution = Gamma(torch.tensor(concentration, dtype=DTYPE),
                                  torch.tensor(rate, dtype=DTYPE))

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.distribution.log_prob(z).sum(-1)


def best_log_scale(df: int) -> float:
    """log s* = log(alpha / (beta k)): the ELBO's best scale of s * chi2_k against Gamma(alpha,
    beta) (its gradient alpha - beta s k in log s vanishes there)."""
    return math.log(TARGET["concentration"] / (TARGET["rate"] * df))


def chi_square_q(df: int, log_scale: torch.Tensor) -> Independent:
    """q = exp(log_scale) * chi2_df, event shape (1,); log_scale of shape (..., 1)."""
    return Independent(ChiSquare(df, log_scale.exp()), 1)


def exact_gradient(df: int, log_scale: float) -> float:
    """d ELBO / d log s = alpha - beta s k, from E_q[log z] = log s + digamma(k/2) + log 2 and
    E_q[z] = k s (the entropy's log s and the target's (alpha - 1) log z give alpha)."""
    return TARGET["concentration"] - TARGET["rate"] * math.exp(log_scale) * df


def exact_elbo(df: int, log_scale: float) -> float:
    """E_q[log p(z)] + H(q) in closed form, from E_q[log z] = log s + digamma(k/2) + log 2,
    E_q[z] = k s and the entropy of :class:`estimators.ChiSquare`; it is -KL(q || p)."""
    alpha, beta = TARGET["concentration"], TARGET["rate"]
    scale = math.exp(log_scale)
    expected_log = log_scale + float(torch.special.digamma(torch.tensor(df / 2.0))) + math.log(2)
    cross = (alpha * math.log(beta) - math.lgamma(alpha) + (alpha - 1) * expected_log
             - beta * df * scale)
    entropy = float(ChiSquare(df, torch.tensor(scale, dtype=DTYPE)).entropy())
    return cross + entropy


def _moment(df, power: int, log_power: int):
    """E[c^power (log c)^log_power] for c ~ chi2_df (log_power 0, 1 or 2), arrays of df.

    c = 2 g with g ~ Gamma(df / 2, 1), so E[c^n] = 2^n Gamma(df/2 + n) / Gamma(df/2), and under
    the tilted law c^n chi2(c) / E[c^n] (a Gamma(df/2 + n) law, doubled) log c has mean
    digamma(df/2 + n) + log 2 and variance trigamma(df/2 + n).
    """
    half = np.asarray(df, dtype=float) / 2
    raw = np.exp(power * math.log(2) + special.gammaln(half + power) - special.gammaln(half))
    mean_log = special.digamma(half + power) + math.log(2)
    if log_power == 0:
        return raw
    if log_power == 1:
        return raw * mean_log
    return raw * (mean_log ** 2 + special.polygamma(1, half + power))


def exact_variances(df, log_scale) -> dict:
    """The variance of each estimator's single-sample gradient in log s, in closed form, for
    arrays of df and log_scale: ``{"pathwise", "score_function", "score_function_mean"}``.

    pathwise: 3 - beta s c, variance 2 k beta^2 s^2. score_function: with z = s c,
    log p(z) - log q(z) = A log c + B c + C (A = alpha - k/2, B = 1/2 - beta s,
    C = alpha log beta - lgamma(alpha) + alpha log s + (k/2) log 2 + lgamma(k/2)) times
    the score d log q / d log s = (c - k) / 2; its first two moments are sums of the moments
    E[c^n (log c)^p] of :func:`_moment`. Its mean is alpha - beta s k, :func:`exact_gradient`.
    """
    df = np.asarray(df, dtype=float)
    log_scale = np.asarray(log_scale, dtype=float)
    alpha, beta = TARGET["concentration"], TARGET["rate"]
    scale = np.exp(log_scale)
    a_, b_ = alpha - df / 2, 0.5 - beta * scale
    c_ = (alpha * math.log(beta) - math.lgamma(alpha) + alpha * log_scale + df / 2 * math.log(2)
          + special.gammaln(df / 2))
    # signal = a_ log c + b_ c + c_, a polynomial in (c, log c): {(power, log_power): coefficient}
    signal = {(0, 1): a_, (1, 0): b_, (0, 0): c_}
    score = {(1, 0): 0.5, (0, 0): -df / 2}

    def product(left, right):
        out = {}
        for (p1, l1), v1 in left.items():
            for (p2, l2), v2 in right.items():
                key = (p1 + p2, l1 + l2)
                out[key] = out.get(key, 0.0) + v1 * v2
        return out

    def expectation(terms):
        return sum(value * _moment(df, power, logs) for (power, logs), value in terms.items())

    gradient = product(signal, score)
    first = expectation(gradient)
    second = expectation(product(gradient, gradient))
    variance = second - first ** 2
    # Where q = p the two moments cancel exactly in theory and to ~1e-31 in floats: call it 0.
    variance = np.where(variance > 1e-12 * np.maximum(second, 1.0), variance, 0.0)
    return {"pathwise": 2 * df * (beta * scale) ** 2,
            "score_function": variance,
            "score_function_mean": first}


@lru_cache(maxsize=4)
def _exact_curves(degrees: tuple, target: tuple) -> dict:
    """Both exact variances at every integer df up to the last of ``degrees``, each at its best
    scale; keyed by the target (concentration, rate) too, which the formulas read."""
    degrees = np.arange(1, max(degrees) + 1, dtype=float)
    values = exact_variances(degrees, np.log(TARGET["concentration"]
                                             / (TARGET["rate"] * degrees)))
    return {name: values[name] for name in ESTIMATOR_NAMES}


def measured_variances(df: int, log_scale: float, num_replicates: int, seed: int = 0) -> dict:
    """``num_replicates`` single-sample gradients in log s from each estimator, by
    :func:`estimators.diagnostics.diagnose` (one vectorised pass each): ``{name: statistics}``."""
    model = GammaTarget()

    def build(lam, theta):
        return model, chi_square_q(df, lam["log_scale"])

    start = {"log_scale": torch.tensor([log_scale], dtype=DTYPE)}
    exact = {"log_scale": torch.tensor([exact_gradient(df, log_scale)], dtype=DTYPE)}
    out = {}
    for name in ESTIMATOR_NAMES:
        torch.manual_seed(seed)
        out[name] = diagnose(ESTIMATORS[name], build, start, num_replicates=num_replicates,
                             num_samples=1, exact_lambda=exact)["lambda"]["log_scale"]
    return out


MC_REPLICATES = 2000


def draw_family_samples(panels):
    """Histograms of samples against exact densities, one panel each: ``panels`` is a list of
    ``(title, samples (N,), density(z) -> tensor)``, or for a 2-D family ``(title, samples
    (N, 2), log_density(z) -> tensor)``, drawn as a scatter under the density's contours."""
    import matplotlib.pyplot as plt

    columns = 2
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(8.0, 3.0 * rows), constrained_layout=True,
                             squeeze=False)
    for ax, (title, samples, density) in zip(axes.flat, panels):
        samples = samples.detach()
        if samples.dim() == 1:
            low, high = np.quantile(samples.numpy(), [0.001, 0.995])
            ax.hist(samples.numpy(), bins=60, range=(low, high), density=True, color="0.75",
                    label=f"{len(samples)} rsample draws")
            grid = torch.linspace(float(low), float(high), 400, dtype=samples.dtype)
            ax.plot(grid, density(grid).detach(), color="black", linewidth=1.8,
                    label="exact density")
            ax.set_xlabel("z")
            ax.set_ylabel("density")
            ax.legend(fontsize=7.5)
        else:
            ax.scatter(samples[:1500, 0], samples[:1500, 1], s=2, color="0.6",
                       label="1500 rsample draws")
            x0, x1 = np.quantile(samples[:, 0].numpy(), [0.001, 0.999])
            y0, y1 = np.quantile(samples[:, 1].numpy(), [0.001, 0.999])
            gx, gy = torch.meshgrid(torch.linspace(float(x0), float(x1), 120, dtype=samples.dtype),
                                    torch.linspace(float(y0), float(y1), 120, dtype=samples.dtype),
                                    indexing="ij")
            values = density(torch.stack([gx, gy], -1)).detach().exp()
            ax.contour(gx, gy, values, levels=5, colors="black", linewidths=1)
            ax.set_xlabel("z₁")
            ax.set_ylabel("z₂")
            ax.legend(fontsize=7.5, loc="upper left")
        ax.set_title(title, fontsize=9.5)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return fig


def draw_chi_square(df: int = 2):
    """Left: q = s* chi2_df against the target Gamma(3, 1). Right: the exact variance of each
    estimator's gradient in log s against df (at each df's best scale), measured at this df."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    from experiments.style import color

    log_scale = best_log_scale(df)
    q = ChiSquare(df, torch.tensor(math.exp(log_scale), dtype=DTYPE))
    target = GammaTarget().distribution
    curves = _exact_curves(tuple(DEGREES), (TARGET["concentration"], TARGET["rate"]))
    measured = measured_variances(df, log_scale, MC_REPLICATES)

    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.7),
                                      gridspec_kw={"width_ratios": [1, 1.25]})
    fig.subplots_adjust(left=0.085, right=0.985, bottom=0.13, top=0.9, wspace=0.25)
    z = torch.linspace(0.01, 12, 400, dtype=DTYPE)
    q_density = q.log_prob(z).exp()
    left.fill_between(z, target.log_prob(z).exp(), color="0.8",
                      label=f"target p = Gamma({TARGET['concentration']:g}, {TARGET['rate']:g})")
    left.plot(z, q_density, color="#08519c", linewidth=2,
              label=f"q = {math.exp(log_scale):.3g} · χ²({df})")
    left.set_ylim(0, min(1.2, 1.1 * max(float(q_density.max()), 0.25)))
    left.set_xlabel("z")
    left.set_ylabel("density")
    left.set_title(f"KL(q ‖ p) = −ELBO = {-exact_elbo(df, log_scale):.4f} nats", fontsize=10)
    left.legend(loc="upper right", fontsize=8)

    every = np.arange(1, len(curves["pathwise"]) + 1)
    for name in ESTIMATOR_NAMES:
        # Zero (to rounding) has no place on a log axis: the curve breaks there.
        values = np.where(curves[name] > 0, curves[name], np.nan)
        right.plot(every, values, color=color(name), linewidth=1.5, label=f"{name}, exact")
        stat = measured[name]
        variance, error = float(stat.variance[0]), 2 * float(stat.variance_se[0])
        if variance > 1e-12:
            right.errorbar([df], [variance], yerr=[[min(error, 0.99 * variance)], [error]],
                           color=color(name), marker="o", capsize=3, linestyle="none",
                           label=f"{name}, {MC_REPLICATES} estimates ±2 s.e.")
        else:
            right.annotate(f"{name}: all {MC_REPLICATES}\nestimates are 0 (q = p)", (df, 0.085),
                           ha="center", va="center", fontsize=7.5, color=color(name))
    right.axvline(df, color="0.6", linewidth=1, linestyle=":")
    match = 2 * TARGET["concentration"]  # s chi2_k is Gamma(k / 2, 1 / (2 s)): q = p at k = 2 alpha
    if df != match and match == int(match) and match <= DEGREES[-1]:
        right.annotate(f"score_function: 0 at k = {match:g},\nwhere q = p", (match, 7e-2),
                       ha="center", fontsize=7.5, color=color("score_function"))
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_ylim(5e-2, 3e2)
    right.set_xticks([1, 2, 3, 6, 10, 20, 40], ["1", "2", "3", "6", "10", "20", "40"])
    # Minor ticks of log axes cost more to lay out than everything else drawn here.
    right.xaxis.set_minor_locator(NullLocator())
    right.yaxis.set_minor_locator(NullLocator())
    ratio = TARGET["concentration"] / TARGET["rate"]
    right.set_xlabel(f"degrees of freedom k (scale s* = {ratio:g} / k)")
    right.set_ylabel("variance of d ELBO / d log s")
    right.set_title("one-sample gradient at the best scale: its mean is 0", fontsize=10)
    right.legend(loc="upper left", fontsize=7.5)
    return fig


CHI_SQUARE = register("chi-square", draw_chi_square,
                      "the degrees of freedom of q = s* chi2_k against a Gamma(3, 1) target",
                      start={"df": 2}, df=DEGREES)
