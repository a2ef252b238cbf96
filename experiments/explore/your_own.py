"""Tutorial 10: your own model and your own estimator.

The exact numbers behind the page: the ELBO of a probit regression under a diagonal Gaussian q
by Gauss-Hermite quadrature (each linear predictor a + b x_n is Gaussian under q, so the ELBO is
a sum of one-dimensional expectations), the best Gaussian q by a deterministic optimiser on that
exact ELBO, and a posterior on a grid for any two-dimensional log_joint. And the control behind
the page's slider: the power of ``estimators.testing``'s check against the number of replicates
R, exact under normal estimates (Student's noncentral t) beside the rejection rate measured by
resampling real gradient estimates.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy import integrate, optimize, stats

from estimators import ESTIMATORS
from estimators.diagnostics import replicate_gradients
from estimators.testing import POWER, REFERENCE_PROBLEMS, minimum_replicates, threshold

from . import register

__all__ = ["gauss_hermite", "probit_elbo", "best_gaussian", "grid_posterior",
           "highest_density_levels",
           "rejection_probability", "detectable_bias", "measured_rejection", "draw_fit",
           "draw_power", "POWER_CONTROL"]

F64 = torch.float64


def gauss_hermite(count: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights with sum_j w_j f(g_j) ~ E f(e), e ~ N(0, 1) (numpy's hermegauss)."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(count)
    return torch.tensor(nodes, dtype=F64), torch.tensor(weights / math.sqrt(2 * math.pi),
                                                         dtype=F64)


def probit_elbo(loc, log_scale, covariate, distress, prior_scale: float,
                nodes: int = 64) -> torch.Tensor:
    """The exact ELBO of the probit regression distress_n ~ Bernoulli(Phi(a + b covariate_n)),
    (a, b) ~ N(0, prior_scale^2 I), under q = N(loc, diag exp(log_scale)^2).

    Vectorised over the leading dimensions of ``loc`` and ``log_scale`` (..., 2) and
    differentiable: autograd of it is the exact gradient. Under q the predictor
    a + b x_n is N(m_n, s_n^2) with m_n = loc_a + loc_b x_n and s_n^2 = scale_a^2 +
    scale_b^2 x_n^2, so E_q log Phi(+-(a + b x_n)) is one Gauss-Hermite sum per data point; the
    prior's expectation and q's entropy are closed forms.
    """
    covariate, distress = (torch.as_tensor(v, dtype=F64) for v in (covariate, distress))
    points, weights = gauss_hermite(nodes)
    scale = log_scale.exp()
    mean = loc[..., :1] + loc[..., 1:] * covariate
    spread = torch.sqrt(scale[..., :1] ** 2 + (scale[..., 1:] * covariate) ** 2)
    sign = 2 * distress - 1
    predictor = sign.unsqueeze(-1) * (mean.unsqueeze(-1) + spread.unsqueeze(-1) * points)
    expected = (torch.special.log_ndtr(predictor) * weights).sum((-1, -2))
    prior = (-0.5 * math.log(2 * math.pi * prior_scale ** 2)
             - (loc ** 2 + scale ** 2) / (2 * prior_scale ** 2)).sum(-1)
    entropy = (0.5 * math.log(2 * math.pi * math.e) + log_scale).sum(-1)
    return expected + prior + entropy


def best_gaussian(covariate, distress, prior_scale: float) -> dict:
    """The diagonal Gaussian q of largest exact ELBO (BFGS on :func:`probit_elbo`, gradient by
    autograd): {"loc", "scale", "elbo"}."""
    def negative(x):
        x = torch.tensor(x, dtype=F64, requires_grad=True)
        value = probit_elbo(x[:2], x[2:], covariate, distress, prior_scale)
        grad, = torch.autograd.grad(-value, x)
        return -float(value.detach()), grad.numpy()

    found = optimize.minimize(negative, np.zeros(4), jac=True, method="BFGS",
                              options={"gtol": 1e-10})
    if not found.success:
        raise RuntimeError(f"best_gaussian: BFGS did not converge ({found.message})")
    return {"loc": found.x[:2], "scale": np.exp(found.x[2:]), "elbo": -found.fun}


def grid_posterior(log_joint, lower, upper, points: int = 301) -> dict:
    """log p(x) = log of the integral of p(x, z) over a box in two dimensions (the trapezoidal
    rule on ``points`` x ``points`` nodes, one call of ``log_joint`` on a (points, points, 2)
    grid), and the posterior's mean, standard deviations and density on the grid.

    The box must hold the posterior's mass: the rule is then exact to many digits, since the
    integrand is smooth and negligible at the edges (checked: the density at the edge, relative
    to its peak, is returned as ``edge``)."""
    axes = [torch.linspace(lo, hi, points, dtype=F64) for lo, hi in zip(lower, upper)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1)
    with torch.no_grad():
        values = log_joint(grid)
    if tuple(values.shape) != (points, points):
        raise ValueError(f"log_joint returned shape {tuple(values.shape)} for a grid of shape "
                         f"{tuple(grid.shape)}; it must be vectorised over the leading dimensions")
    peak = values.max()
    density = (values - peak).exp().numpy()
    a, b = (axis.numpy() for axis in axes)

    def integral(f):
        return integrate.trapezoid(integrate.trapezoid(f, b, axis=1), a)

    mass = integral(density)
    za, zb = np.meshgrid(a, b, indexing="ij")
    mean = np.array([integral(density * za), integral(density * zb)]) / mass
    second = np.array([integral(density * za ** 2), integral(density * zb ** 2)]) / mass
    edge = max(density[0].max(), density[-1].max(), density[:, 0].max(), density[:, -1].max())
    return {"log_evidence": float(peak) + math.log(mass), "mean": mean,
            "sd": np.sqrt(second - mean ** 2), "axes": (a, b), "density": density / mass,
            "edge": float(edge)}


# --------------------------------------------------------------------------------------------
# Figures of the fit
# --------------------------------------------------------------------------------------------


def highest_density_levels(density: np.ndarray, masses) -> np.ndarray:
    """The density levels whose superlevel sets hold ``masses`` of a density on a regular grid
    (normalised to sum to one over the grid's cells, as :func:`grid_posterior`'s is up to the
    constant cell area)."""
    values = np.sort(density.ravel())[::-1]
    cumulative = np.cumsum(values) / values.sum()
    return np.array([values[np.searchsorted(cumulative, m)] for m in masses])


# A Gaussian's 1- and 2-sd ellipses in two dimensions hold 1 - exp(-k^2 / 2) of its mass.
_ELLIPSE_MASS = (1 - math.exp(-0.5), 1 - math.exp(-2.0))


def draw_fit(steps, traces: dict, best: dict, log_evidence: float, posterior: dict,
             fits: dict):
    """(a) the exact gap log p(y) - ELBO = KL(q || posterior) of each run's q along stochastic
    gradient ascent, per estimator, on a log scale;
    (b) each run's fitted q (its 1-sd ellipse) on the exact posterior's highest-density regions
    of 39 % and 86 % (the mass of a Gaussian's 1- and 2-sd ellipses), beside the best Gaussian's
    ellipses. ``traces[name]`` is (checkpoints, runs); ``fits[name]`` = (loc, scale) of the runs,
    (runs, 2) each."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    from experiments.style import color, rc_context

    with rc_context():
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.6),
                                          gridspec_kw={"width_ratios": [1.25, 1]})
        fig.subplots_adjust(left=0.09, right=0.98, bottom=0.14, top=0.92, wspace=0.25)
        for name, trace in traces.items():
            gap = log_evidence - np.asarray(trace)  # KL(q || posterior), seed eq. (3)
            for run in range(gap.shape[1]):
                left.plot(steps, gap[:, run], color=color(name), alpha=0.5, linewidth=0.9,
                          label=name if run == 0 else None)
        floor = log_evidence - best["elbo"]
        left.axhline(floor, color="black", linestyle="--", linewidth=1.2,
                     label=f"best Gaussian q: {floor:.3f}")
        left.set_yscale("log")
        left.set_ylim(floor / 2, 400)  # the legend above the curves
        left.set_xlabel("step of stochastic gradient ascent")
        left.set_ylabel("log p(y) − ELBO = KL(q ‖ posterior) (nats)")
        left.set_title("(a) each run's q, scored exactly", loc="left")
        left.legend(loc="upper right", fontsize=8)

        a, b = posterior["axes"]
        density = posterior["density"]
        levels = np.sort(highest_density_levels(density, _ELLIPSE_MASS))
        right.contour(a, b, density.T, levels=levels, colors="black", linewidths=1.4)
        for width in (1, 2):
            right.add_patch(Ellipse(best["loc"], 2 * width * best["scale"][0],
                                    2 * width * best["scale"][1], fill=False, color="black",
                                    linestyle="--", linewidth=1.0))
        handles = [Line2D([], [], color="black", linewidth=1.4,
                          label="posterior: 39 %, 86 % regions"),
                   Line2D([], [], color="black", linestyle="--", linewidth=1.0,
                          label="best Gaussian q: 1, 2 sd")]
        for name, (loc, scale) in fits.items():
            for run_loc, run_scale in zip(np.asarray(loc), np.asarray(scale)):
                right.add_patch(Ellipse(run_loc, 2 * run_scale[0], 2 * run_scale[1], fill=False,
                                        color=color(name), linewidth=0.9, alpha=0.8))
            handles.append(Line2D([], [], color=color(name), linewidth=0.9,
                                  label=f"each run's q by {name}: 1 sd"))
        right.set_xlim(posterior["mean"][0] - 1.5, posterior["mean"][0] + 1.5)
        right.set_ylim(posterior["mean"][1] - 2.2, posterior["mean"][1] + 2.9)  # legend room
        right.set_xlabel("intercept a (probit at 70 °F)")
        right.set_ylabel("slope b (per 10 °F)")
        right.set_title("(b) the fitted q's on the posterior", loc="left")
        # Opaque: a wide q's ellipse may pass behind it.
        right.legend(handles=handles, loc="upper right", fontsize=7.5, framealpha=0.95)
    return fig


# --------------------------------------------------------------------------------------------
# The check's power against R: the control
# --------------------------------------------------------------------------------------------

# The pool of real estimates behind the measured points: score_function's gradient of one
# coordinate on the reference logistic regression, skewed as score-function gradients are.
POOL_PROBLEM, POOL_ESTIMATOR, POOL_COORDINATE = "logistic_regression", "score_function", 0
POOL_SIZE = 20_000
FALSE_POSITIVE_RATE = 1e-3
REPLICATES = [50, 100, 200, 500, 1000, 2000, 4000, 10000]
_BIASES = np.geomspace(0.003, 3.0, 200)  # in units of one estimate's standard deviation
# The measured points sit around the detectable bias, where the curve turns.
_MEASURED_FRACTIONS = np.array([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
_GROUPS = 200


def _coordinates() -> int:
    return REFERENCE_PROBLEMS[POOL_PROBLEM].num_coordinates


def rejection_probability(bias, num_replicates: int, num_coordinates: int | None = None,
                          false_positive_rate: float = FALSE_POSITIVE_RATE) -> np.ndarray:
    """P(the check rejects a coordinate whose mean is off by ``bias`` standard deviations of one
    estimate), for normally distributed estimates.

    The statistic is then T = (Z + bias sqrt(R)) / S, Z ~ N(0, 1) and S^2 = V / (R - 1),
    V ~ chi-square(R - 1) independent of Z (Student's noncentral t), rejected when |T| > c. So
    P = E_S[Phi(-c S + bias sqrt(R)) + Phi(-c S - bias sqrt(R))], one integral over
    y = log S^2, whose density is proportional to exp(nu/2 (y - e^y)), taken by the trapezoidal
    rule over +-15 of its standard deviations (geometric convergence for a smooth integrand that
    vanishes at the ends; scipy's ``nct`` returns NaN at many of these noncentralities)."""
    count = _coordinates() if num_coordinates is None else num_coordinates
    cutoff = threshold(count, false_positive_rate, num_replicates)
    shift = np.asarray(bias, dtype=float)[..., None] * math.sqrt(num_replicates)
    half = (num_replicates - 1) / 2
    width = 15 * math.sqrt(1 / half)
    log_variance = np.linspace(-width, width, 801)
    weights = np.exp(half * (log_variance - np.expm1(log_variance)))
    weights /= weights.sum()
    spread = np.exp(log_variance / 2)
    reject = (stats.norm.cdf(-cutoff * spread + shift) + stats.norm.cdf(-cutoff * spread - shift))
    return reject @ weights


def detectable_bias(num_replicates, num_coordinates: int | None = None,
                    false_positive_rate: float = FALSE_POSITIVE_RATE) -> np.ndarray:
    """The check's detectable bias in standard deviations of one estimate: (c + t_0.9)/sqrt(R),
    what its report states (times s.e. = sd/sqrt(R)), for each R."""
    count = _coordinates() if num_coordinates is None else num_coordinates
    return np.array([(threshold(count, false_positive_rate, r) + stats.t.ppf(POWER, r - 1))
                     / math.sqrt(r) for r in np.atleast_1d(num_replicates)])


@lru_cache(maxsize=1)
def _pool() -> np.ndarray:
    """POOL_SIZE real estimates of one coordinate, centred on their mean and scaled to unit
    standard deviation: only the shape of their distribution is kept, so that the only bias in
    the measured points is the one injected. Drawn once, at a fixed seed."""
    problem = REFERENCE_PROBLEMS[POOL_PROBLEM]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        grads = replicate_gradients(ESTIMATORS[POOL_ESTIMATOR], problem.build, problem.lam,
                                    problem.theta, num_replicates=POOL_SIZE, num_samples=1)
    values = grads.lambda_["loc"][:, POOL_COORDINATE].detach().numpy().astype(float)
    return (values - values.mean()) / values.std()


def measured_rejection(num_replicates: int, biases, groups: int = _GROUPS,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The fraction of ``groups`` checks that reject, each on R estimates resampled from the pool
    with a bias added, and its binomial standard error, for each bias."""
    pool = _pool()
    rng = np.random.default_rng(seed)
    sample = pool[rng.integers(0, len(pool), size=(groups, num_replicates))]
    mean, se = sample.mean(1), sample.std(1, ddof=1) / math.sqrt(num_replicates)
    cutoff = threshold(_coordinates(), FALSE_POSITIVE_RATE, num_replicates)
    biases = np.asarray(biases, dtype=float)
    rejected = np.abs(mean[None, :] + biases[:, None]) > cutoff * se[None, :]
    fraction = rejected.mean(1)
    return fraction, np.sqrt(np.maximum(fraction * (1 - fraction), 1.0 / groups) / groups)


def draw_power(num_replicates: int = 4000):
    """(a) the probability that the check rejects, against the bias in sd of one estimate, at
    R: exact for normal estimates, and measured on resampled score-function estimates (+-2 s.e.);
    (b) the detectable bias against R."""
    import matplotlib.pyplot as plt

    from experiments.style import color, plain_log_ticks, rc_context

    count = _coordinates()
    found = detectable_bias(num_replicates)[0]
    with rc_context():
        # Fixed margins: a layout engine would measure every label again on each move.
        fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3.4),
                                          gridspec_kw={"width_ratios": [1.3, 1]})
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.9, wspace=0.28)
        left.plot(_BIASES, rejection_probability(_BIASES, num_replicates), color="black",
                  linewidth=2, label="exact, normal estimates")
        biases = found * _MEASURED_FRACTIONS
        fraction, se = measured_rejection(num_replicates, biases)
        left.errorbar(biases, fraction, yerr=2 * se, fmt="o", markersize=4,
                      color=color(POOL_ESTIMATOR),
                      label=f"measured, {POOL_ESTIMATOR} ({_GROUPS} checks)")
        left.axhline(POWER, color="grey", linestyle=":", linewidth=1)
        left.text(_BIASES[0], POWER + 0.02, f"{POWER:.0%}", color="grey", fontsize=8)
        left.axvline(found, color="black", linestyle="--", linewidth=1,
                     label=f"detectable bias at R = {num_replicates}: {found:.3g} sd")
        left.set_xscale("log")
        left.set_ylim(-0.03, 1.03)
        left.set_xlabel("bias of the mean gradient (sd of one estimate)")
        left.set_ylabel("probability the check rejects")
        left.set_title(f"(a) power at R = {num_replicates}, α = {FALSE_POSITIVE_RATE:g} "
                       f"over {count} coordinates", loc="left")
        left.legend(loc="center left", fontsize=7.5)

        replicates = np.geomspace(minimum_replicates(count, FALSE_POSITIVE_RATE), 100_000, 60)
        right.plot(replicates, detectable_bias(replicates.round().astype(int)), color="black",
                   linewidth=2)
        right.plot([num_replicates], [found], marker="o", color=color(POOL_ESTIMATOR),
                   markersize=7)
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel("replicates R")
        right.set_ylabel("detectable bias (sd of one estimate)")
        right.set_title("(b) four times R halves it", loc="left")
        for axis in (left, right):
            axis.minorticks_off()  # a log axis's minor ticks cost a redraw more than the rest
        plain_log_ticks(right, "y")
    return fig


POWER_CONTROL = register("detectable-bias", draw_power,
                         "the number of replicates R of estimators.testing's check",
                         start={"num_replicates": 4000}, num_replicates=REPLICATES)
