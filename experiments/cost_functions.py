"""cost-functions: gradient variance against the shape of the cost (Mohamed et al. 2020, Figs. 2-3).

The variance of Monte Carlo estimates of the gradient of E_{N(x; mu, sigma^2)}[f(x; k)] with
respect to mu and to sigma, at mu = sigma = 1, for three families of cost:

* f = (x - k)^2, k in [-3, 3]: the score-function variance grows with the size of f, the pathwise
  one does not (it is 4 sigma^2 with respect to mu, for every k);
* f = exp(-k x^2), k log-spaced in [0.1, 10];
* f = cos(k x), k log-spaced in [0.5, 5]: the pathwise variance grows as k^2, so for fast
  oscillations the score function wins.

Exact curves are 1-D integrals against the Normal density (``scipy.integrate.quad_vec``), with
x = mu + sigma e, e ~ N(0, 1), the score s_mu = e / sigma, s_sigma = (e^2 - 1) / sigma and the path
derivatives dx/dmu = 1, dx/dsigma = e. With A = E[f^2 s^2], B = E[f^2], C = E[s^2],
F = E[f s^2], G = E[f] and g = E[f s] the exact gradient (for one parameter):

* ``score_function``, K samples:            K Var = A - g^2;
* ``pathwise``, K samples:                  K Var = E[(f' dx/dparam)^2] - g^2;
* ``score_function_optimal``, K = 2: its baseline for sample k is the other sample's f (with two
  samples the trace-optimal ratio sum_{j != k} f_j |s_j|^2 / sum_{j != k} |s_j|^2 has one term, so
  |s_j|^2 cancels); the estimate is (f_1 - f_2)(s_1 - s_2) / 2 and K Var = A + B C - 2 F G, exactly;
* the per-parameter optimal constant baseline b* = F / C of the paper's figure, known exactly
  (not estimated, so not an estimator of the registry): K Var = A - F^2 / C - g^2; drawn dashed;
* ``measure_valued`` (Mohamed et al. 2020, section 6): d/dmu is c [f(mu + sigma w) -
  f(mu - sigma w')], c = 1 / (sigma sqrt(2 pi)), w, w' independent Weibull(sqrt 2, 2) (the
  Rayleigh law, density w exp(-w^2 / 2)); d/dsigma is [f(mu + sigma m) - f(mu + sigma n)] / sigma,
  m double-sided Maxwell (density m^2 phi(m)), n ~ N(0, 1). With R1, R2 (L1, L2) the first two
  moments of f(mu + sigma w) (of f(mu - sigma w)) and M1, M2 those of f(mu + sigma m):
  K Var = c^2 (R2 - R1^2 + L2 - L1^2) for mu and (M2 - M1^2 + B - G^2) / sigma^2 for sigma;
* ``measure_valued_coupled``: w' = w and n = u m, u ~ Uniform(0, 1). With RL = E[f(mu + sigma w)
  f(mu - sigma w)] and MU = E[f(mu + sigma m) f(mu + sigma u m)], a double integral (over m,
  and over u inside it): K Var = c^2 (R2 + L2 - 2 RL) - g^2 for mu and
  (M2 + B - 2 MU) / sigma^2 - g^2 for sigma (u m is N(0, 1), so E[f(mu + sigma u m)^2] = B).

The Rayleigh and Maxwell moments are integrals in e against sqrt(2 pi) e phi(e) (e > 0) and
e^2 phi(e); MU is a double integral over (m, u), by adaptive cubature.

Every variance is shown as K x variance with K = 2 samples: for ``score_function`` and
``pathwise`` that is the single-sample variance of the paper's figures.

The Monte Carlo points come from the library's own estimators and diagnostics
(:func:`estimators.diagnostics.replicate_gradients`: R independent estimates in one pass). The
estimators estimate the gradient of an ELBO, E_q[log p(x, z) - log q(z)]; the cost is handed to
them as the model ``log p(x, z) = f(z) + log q(z)``, so that log p - log q = f for every z and
each estimator reduces exactly to its textbook form. For the reparameterization estimators the q
inside the model has q's own (attached) parameters: the ELBO *is* E_q[f] as a function of
(mu, sigma), and the path derivative of log p - log q is f'(z) dz/dlambda. For the score-function
and measure-valued estimators, which differentiate q's density at fixed z and take theta's
gradient from log p at fixed z, the q inside the model is held at the current parameters, as a
model's log p(x, z) does not depend on lambda: the ELBO is then E_q[f] - KL(q || q_now), whose
gradient at q = q_now is that of E_q[f], and the score function is f(z) grad log q(z).
(Holding q fixed in the model for the pathwise estimator would leave the entropy's gradient in
its estimate, with its own noise; attaching it for the score function would add grad log q(z),
a baseline of -1. tests/test_cost_functions.py checks single-sample estimates against the
textbook formulas.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
from scipy import integrate
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS
from estimators.diagnostics import gradient_statistics, replicate_gradients

from .common import StudyConfig, progress, save_figure, study_device

NAME = "cost-functions"
SUMMARY = ("variance of score-function, pathwise and measure-valued gradients of "
           "E_N(mu,sigma^2)[f] for three cost families (Mohamed et al. 2020, Figs. 2-3)")
DTYPE = torch.float64

# K: two samples, because score_function_optimal needs one sample to set the other's baseline,
# and K = 2 is the sample size at which its variance is known exactly (see the module docstring).
NUM_SAMPLES = 2
ESTIMATOR_NAMES = ("score_function", "score_function_optimal", "pathwise", "measure_valued",
                   "measure_valued_coupled")
PARAMETERS = ("loc", "scale")  # mu and sigma
IDEAL = "per-parameter b*"  # key of the exact curve with the paper's per-parameter baseline


class Cost(NamedTuple):
    """A family of costs f(x; k): value and x-derivative, written for numpy and torch alike."""

    label: str  # as printed in the figures
    value: Callable  # (x, k, lib) -> f(x; k), lib = numpy or torch
    derivative: Callable  # (x, k, lib) -> df/dx
    log_k: bool  # k log-spaced (and drawn on a log axis)


COSTS = {
    "quadratic": Cost("(x − k)²", lambda x, k, lib: (x - k) ** 2,
                      lambda x, k, lib: 2 * (x - k), log_k=False),
    "gaussian": Cost("exp(−k x²)", lambda x, k, lib: lib.exp(-k * x ** 2),
                     lambda x, k, lib: -2 * k * x * lib.exp(-k * x ** 2), log_k=True),
    "cosine": Cost("cos(k x)", lambda x, k, lib: lib.cos(k * x),
                   lambda x, k, lib: -k * lib.sin(k * x), log_k=True),
}


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every field can be changed with --set FIELD=VALUE (tuples as comma-separated lists)."""

    loc: float = 1.0  # mu of the Normal the expectation is taken under
    scale: float = 1.0  # sigma of that Normal
    num_replicates: int = 100000  # R: independent gradient estimates behind each point
    num_points: int = 13  # k values with Monte Carlo points, per cost family
    num_curve_points: int = 121  # k values of the exact curves, per cost family
    quadratic_range: tuple = (-3.0, 3.0)  # k of (x - k)^2, linearly spaced
    gaussian_range: tuple = (0.1, 10.0)  # k of exp(-k x^2), log-spaced
    cosine_range: tuple = (0.5, 5.0)  # k of cos(k x), log-spaced
    chunk: int = 25000  # replicates per vectorised pass (bounds the memory)

    # CPU only (scalar costs, scipy quadrature): --device cuda is refused before any work
    DEVICES = ("cpu",)

    @classmethod
    def quick(cls) -> "Config":
        return cls(quick=True, num_replicates=20000, num_points=7, num_curve_points=41)

    def __post_init__(self):
        problems = []
        if not self.scale > 0:
            problems.append(f"scale must be > 0, got {self.scale}")
        if self.num_replicates < 2:
            problems.append(f"num_replicates must be >= 2, got {self.num_replicates}")
        if self.num_points < 1 or self.num_curve_points < 2:
            problems.append("num_points must be >= 1 and num_curve_points >= 2")
        if self.chunk < 2:
            problems.append(f"chunk must be >= 2, got {self.chunk}")
        for name in ("quadratic_range", "gaussian_range", "cosine_range"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or not low_high[0] < low_high[1]:
                problems.append(f"{name} must be two increasing numbers, got {low_high}")
            elif name != "quadratic_range" and low_high[0] <= 0:
                problems.append(f"{name} is log-spaced: it must be positive, got {low_high}")
        if problems:
            raise SystemExit("error: cost-functions: " + "; ".join(problems))

    def k_range(self, family: str) -> tuple:
        return getattr(self, f"{family}_range")


def k_grid(config: Config, family: str, count: int) -> np.ndarray:
    low, high = config.k_range(family)
    if COSTS[family].log_k:
        return np.geomspace(low, high, count)
    return np.linspace(low, high, count)


# --------------------------------------------------------------------------------------------
# Exact variances by quadrature
# --------------------------------------------------------------------------------------------

_MOMENTS = ("G", "B", "g", "A", "C", "F", "P")
_WEAK_MOMENTS = ("R1", "R2", "L1", "L2", "RL", "M1", "M2", "MU")


def normal_moments(cost: Cost, k: np.ndarray, loc: float, scale: float, *,
                   measure_valued: bool = False) -> dict:
    """E over x ~ N(loc, scale^2) of the products the variances need, for every k and parameter.

    Returns {moment: array of shape (len(k), 2)}, the last axis (mu, sigma); G = E[f] and
    B = E[f^2] are repeated on it. Integrated in e = (x - loc) / scale against the standard
    Normal density, on [-14, 14] (the density's mass beyond is below 1e-44). With
    ``measure_valued``, also the moments of :func:`weak_derivative_moments` (the double
    integral of the coupled scale's makes this several times slower).
    """
    k = np.asarray(k, dtype=float)
    peak = -loc / scale  # where the bump of exp(-k x^2) sits, in e

    def integrand(e):
        x = loc + scale * e
        f = cost.value(x, k, np)
        fprime = cost.derivative(x, k, np)
        score = np.array([e / scale, (e * e - 1) / scale])  # d/dmu, d/dsigma of log N(x; mu, sigma)
        path = np.array([1.0, e])  # dx/dmu, dx/dsigma
        f, fprime = f[:, None], fprime[:, None]
        values = {
            "G": np.broadcast_to(f, (k.size, 2)),
            "B": np.broadcast_to(f * f, (k.size, 2)),
            "g": f * score,
            "A": (f * score) ** 2,
            "C": np.broadcast_to(score ** 2, (k.size, 2)),
            "F": f * score ** 2,
            "P": (fprime * path) ** 2,
        }
        density = math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)
        return np.stack([values[m] for m in _MOMENTS]) * density

    points = [p for p in (peak, 0.0) if -14 < p < 14]
    total, _ = integrate.quad_vec(integrand, -14.0, 14.0, epsabs=1e-13, epsrel=1e-12,
                                  points=points, limit=2000)
    moments = dict(zip(_MOMENTS, total))
    if measure_valued:
        moments.update(weak_derivative_moments(cost, k, loc, scale))
    moments["sigma"] = np.full((k.size, 2), float(scale))
    return moments


def weak_derivative_moments(cost: Cost, k: np.ndarray, loc: float, scale: float, *,
                            coupled: bool = True) -> dict:
    """The moments of the measure-valued estimators (module docstring), each of shape (len(k), 2).

    Folded onto e > 0: the Rayleigh point mu + sigma w has density sqrt(2 pi) e phi(e) at
    w = e, and the double-sided Maxwell's, e^2 phi(e), is symmetric, so its two halves are
    mu +- sigma e. MU, the coupled scale's, is a double integral over (m, u) in
    [-14, 14] x [0, 1], done by adaptive cubature (``scipy.integrate.cubature``);
    ``coupled=False`` leaves it out.
    """
    k = np.asarray(k, dtype=float)
    peak = abs(loc / scale)  # where the bump of exp(-k x^2) sits, on the folded axis

    def integrand(e):
        right, left = cost.value(loc + scale * e, k, np), cost.value(loc - scale * e, k, np)
        rayleigh = e * math.exp(-0.5 * e * e)  # sqrt(2 pi) e phi(e): the Weibull(sqrt 2, 2) density
        maxwell = e * e * math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)  # e^2 phi(e)
        return np.stack([right * rayleigh, right ** 2 * rayleigh, left * rayleigh,
                         left ** 2 * rayleigh, right * left * rayleigh, (right + left) * maxwell,
                         (right ** 2 + left ** 2) * maxwell])

    points = [peak] if 0 < peak < 14 else None
    total, _ = integrate.quad_vec(integrand, 0.0, 14.0, epsabs=1e-13, epsrel=1e-12,
                                  points=points, limit=2000)
    moments = dict(zip(_WEAK_MOMENTS[:-1], total))
    if coupled:
        moments["MU"] = coupled_scale_moment(cost, k, loc, scale)
    return {m: np.repeat(v[:, None], 2, axis=1) for m, v in moments.items()}


def coupled_scale_moment(cost: Cost, k: np.ndarray, loc: float, scale: float) -> np.ndarray:
    """MU = E[f(mu + sigma m) f(mu + sigma u m)], m double-sided Maxwell, u ~ U(0, 1), per k."""

    def integrand(points):  # (N, 2) points (m, u) -> (N, len(k))
        m, u = points[:, :1], points[:, 1:]
        density = m * m * np.exp(-0.5 * m * m) / math.sqrt(2 * math.pi)
        return density * cost.value(loc + scale * m, k, np) * cost.value(loc + scale * u * m, k, np)

    result = integrate.cubature(integrand, [-14.0, 0.0], [14.0, 1.0], atol=1e-12, rtol=1e-11,
                                max_subdivisions=100_000)
    if result.status != "converged":
        raise RuntimeError(f"cost-functions: the coupled scale's double integral did not converge "
                           f"(error {np.max(result.error):.1e})")
    return np.asarray(result.estimate)


def exact_variances(moments: dict) -> dict:
    """K x variance of each estimator (K = NUM_SAMPLES = 2), shape (len(k), 2), and the gradient.

    With the moments of :func:`weak_derivative_moments`, also the measure-valued variances (the
    mean's pair in column 0, the scale's in column 1) and ``weak_gradient``, their mean, which
    must equal ``gradient``. ``cost_rms`` is sqrt E[f^2], the scale of the costs.
    """
    m = moments
    grad = m["g"]
    plain = {
        "gradient": grad,
        "cost_rms": np.sqrt(m["B"]),
        "score_function": m["A"] - grad ** 2,
        "score_function_optimal": m["A"] + m["B"] * m["C"] - 2 * m["F"] * m["G"],
        "pathwise": m["P"] - grad ** 2,
        IDEAL: m["A"] - m["F"] ** 2 / m["C"] - grad ** 2,
    }
    if "R1" not in m:
        return plain
    sigma = m["sigma"]
    # The weak derivatives' constants: 1 / (sigma sqrt(2 pi)) for mu, 1 / sigma for sigma.
    constant = np.stack([1 / (sigma[:, 0] * math.sqrt(2 * math.pi)), 1 / sigma[:, 1]], -1)
    spread = np.stack([m["R2"][:, 0] - m["R1"][:, 0] ** 2 + m["L2"][:, 0] - m["L1"][:, 0] ** 2,
                       m["M2"][:, 1] - m["M1"][:, 1] ** 2 + m["B"][:, 1] - m["G"][:, 1] ** 2], -1)
    plain["weak_gradient"] = constant * np.stack([m["R1"][:, 0] - m["L1"][:, 0],
                                                  m["M1"][:, 1] - m["G"][:, 1]], -1)
    plain["measure_valued"] = constant ** 2 * spread
    if "MU" in m:
        coupled = np.stack([m["R2"][:, 0] + m["L2"][:, 0] - 2 * m["RL"][:, 0],
                            m["M2"][:, 1] + m["B"][:, 1] - 2 * m["MU"][:, 1]], -1)
        plain["measure_valued_coupled"] = constant ** 2 * coupled - grad ** 2
    return plain


# --------------------------------------------------------------------------------------------
# Monte Carlo: the library's estimators on the cost handed over as a model
# --------------------------------------------------------------------------------------------


class ExpectedCost:
    """The model log p(x, z) = f(z) + log q(z): log p - log q = f, the gradient of its ELBO is E_q[f]'s.

    ``k`` has shape (P, 1) and broadcasts against samples (K, R, P, 1); ``q`` is the distribution
    the estimator is called with, or a copy of it held at its current parameters (see the module
    docstring for which estimator gets which).
    """

    def __init__(self, cost: Cost, k: torch.Tensor, q):
        self.cost, self.k, self.q = cost, k, q

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.cost.value(z, self.k, torch).sum(-1) + self.q.log_prob(z)


def normal_q(loc: torch.Tensor, scale: torch.Tensor):
    return Independent(Normal(loc, scale), 1)


def replicate(name: str, cost: Cost, k: np.ndarray, config: Config, num_replicates: int,
              on_chunk=None) -> dict[str, torch.Tensor]:
    """``num_replicates`` gradient estimates of E_q[f] by estimator ``name``: {param: (R, P)}.

    Drawn ``config.chunk`` at a time; ``on_chunk(size)`` is called after each pass.
    """
    k_tensor = torch.as_tensor(k, dtype=DTYPE).unsqueeze(-1)
    start = {"loc": torch.full_like(k_tensor, config.loc),
             "scale": torch.full_like(k_tensor, config.scale)}

    reparameterized = ESTIMATORS[name].needs_rsample

    def build(lam, theta):
        q = normal_q(lam["loc"], lam["scale"])
        # see the module docstring: the model's log q moves with lambda only along the path
        inside = q if reparameterized else normal_q(lam["loc"].detach(), lam["scale"].detach())
        return ExpectedCost(cost, k_tensor, inside), q

    grads = replicate_gradients(ESTIMATORS[name], build, start, num_replicates=num_replicates,
                                num_samples=NUM_SAMPLES, chunk=config.chunk, on_chunk=on_chunk)
    return {p: grads.lambda_[p].squeeze(-1) for p in PARAMETERS}


def measure(name: str, cost: Cost, k: np.ndarray, config: Config, exact_gradient: np.ndarray,
            bar=None, cost_scale: np.ndarray | None = None) -> dict:
    """Mean and K x variance, with standard errors, of R estimates per k and parameter.

    ``cost_scale`` (sqrt E[f^2] per k, ``exact_variances``' "cost_rms") floors the standard error
    of the bias z at 1e-10 cost_scale / sigma: a gradient that is zero in exact arithmetic
    (``measure_valued_coupled``'s for mu at k = mu on the quadratic) is measured as rounding of
    the costs it takes differences of, not as noise with a standard error of its own.
    """
    grads = replicate(name, cost, k, config, config.num_replicates,
                      on_chunk=None if bar is None else bar.update)
    row = {}
    for i, p in enumerate(PARAMETERS):
        stats = gradient_statistics(grads[p], torch.as_tensor(exact_gradient[:, i]))
        z = stats.z
        if cost_scale is not None:
            floor = torch.as_tensor(1e-10 * (1 + np.asarray(cost_scale)[:, i]) / config.scale)
            z = stats.bias / torch.maximum(stats.mean_se, floor)
        row[p] = {
            "mean": stats.mean, "mean_se": stats.mean_se, "bias_z": z,
            "variance": NUM_SAMPLES * stats.variance,
            "variance_se": NUM_SAMPLES * stats.variance_se,
        }
    return row


def run(config: Config, paths) -> dict:
    study_device(config, NAME)  # refuses, in one line, any device but the CPU
    families = {}
    total = len(COSTS) * len(ESTIMATOR_NAMES) * config.num_replicates
    with progress(total=total, desc=NAME, unit="replicate") as bar:
        for family, cost in COSTS.items():
            k_curve = k_grid(config, family, config.num_curve_points)
            k_points = k_grid(config, family, config.num_points)
            curve = exact_variances(normal_moments(cost, k_curve, config.loc, config.scale,
                                                   measure_valued=True))
            at_points = exact_variances(normal_moments(cost, k_points, config.loc, config.scale,
                                                       measure_valued=True))
            measured = {name: measure(name, cost, k_points, config, at_points["gradient"], bar,
                                      at_points["cost_rms"])
                        for name in ESTIMATOR_NAMES}
            x = np.linspace(config.loc - 4 * config.scale, config.loc + 4 * config.scale, 241)
            shown_k = k_grid(config, family, 3)
            families[family] = {
                "label": cost.label,
                "log_k": cost.log_k,
                "k_curve": k_curve,
                "exact_curve": {key: {p: value[:, i] for i, p in enumerate(PARAMETERS)}
                                for key, value in curve.items()},
                "k_points": k_points,
                "exact_points": {key: {p: value[:, i] for i, p in enumerate(PARAMETERS)}
                                 for key, value in at_points.items()},
                "measured": measured,
                "illustration": {"x": x, "k": shown_k,
                                 "f": [cost.value(x, kk, np) for kk in shown_k]},
            }
    return {"num_samples": NUM_SAMPLES, "loc": config.loc, "scale": config.scale,
            "num_replicates": config.num_replicates, "families": families}


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

_PARAM_LABEL = {"loc": "μ", "scale": "σ"}


def plot(results: dict, results_path, paths) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter

    from .style import estimator_style, legend_handle, rc_context

    data = results["data"]
    mu, sigma, num_samples = data["loc"], data["scale"], data["num_samples"]
    written = []
    for family, part in data["families"].items():
        with rc_context():
            fig, axes = plt.subplots(1, 3, figsize=(10.4, 4.1), layout="constrained",
                                     gridspec_kw={"width_ratios": [0.8, 1, 1]})
            # (a) the cost for three k, over the density it is averaged under
            ax = axes[0]
            ill = part["illustration"]
            x = np.asarray(ill["x"])
            shades = ["0.75", "0.45", "0.0"]
            for kk, f, shade in zip(ill["k"], ill["f"], shades):
                ax.plot(x, f, color=shade, linewidth=1.6, label=f"k = {kk:.3g}")
            density_ax = ax.twinx()
            density = np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
            density_ax.fill_between(x, density, color="tab:blue", alpha=0.12, linewidth=0)
            density_ax.set_ylim(0, density.max() * 3)
            density_ax.set_yticks([])
            density_ax.grid(False)
            ax.set_zorder(density_ax.get_zorder() + 1)
            ax.patch.set_visible(False)
            ax.set_xlabel("x")
            ax.set_ylabel(f"f(x; k) = {part['label']}")
            ax.set_title(f"(a) the cost; shaded: N(x; {mu:g}, {sigma ** 2:g})")
            ax.legend(loc="upper center", frameon=False, ncol=3, fontsize=7.5,
                      handlelength=1.2, columnspacing=0.8)
            ax.set_ylim(top=ax.get_ylim()[1] * 1.15)

            # (b, c) K x variance against k
            k_curve, k_points = np.asarray(part["k_curve"]), np.asarray(part["k_points"])
            for ax, p, letter in zip(axes[1:], PARAMETERS, "bc"):
                for name in ESTIMATOR_NAMES:
                    style = estimator_style(name)
                    exact = np.asarray(part["exact_curve"][name][p])
                    ax.plot(k_curve, exact, color=style["color"], linestyle=style["linestyle"],
                            linewidth=1.4)
                    row = part["measured"][name][p]
                    ax.errorbar(k_points, row["variance"], yerr=2 * np.asarray(row["variance_se"]),
                                linestyle="none", marker=style["marker"], markersize=4.5,
                                color=style["color"], markerfacecolor="white", capsize=2,
                                elinewidth=0.9)
                ax.plot(k_curve, part["exact_curve"][IDEAL][p], color="0.35",
                        linestyle=(0, (4, 2)), linewidth=1.1)
                ax.set_yscale("log")
                # Down to 1e-5 of the largest curve: a variance that is exactly zero at one k
                # (measure_valued_coupled in mu at k = mu, quadratic) dips off the bottom.
                curves = np.concatenate([np.asarray(part["exact_curve"][n][p])
                                         for n in (*ESTIMATOR_NAMES, IDEAL)])
                shown = curves[curves > 1e-5 * curves.max()]
                ax.set_ylim(0.5 * shown.min(), 2 * curves.max())
                if part["log_k"]:
                    ax.set_xscale("log")
                    low, high = k_curve[0], k_curve[-1]
                    ticks = [m * 10.0 ** e for e in range(-3, 4) for m in (1, 2, 5)
                             if low * 0.999 <= m * 10.0 ** e <= high * 1.001]
                    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
                    ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xlabel("k (cost parameter, dimensionless)")
                ax.set_ylabel(f"K × Var[∂/∂{_PARAM_LABEL[p]} estimate], K = {num_samples}")
                ax.set_title(f"({letter}) gradient with respect to {_PARAM_LABEL[p]}")
            handles = [legend_handle(n, markerfacecolor="white") for n in ESTIMATOR_NAMES]
            handles.append(Line2D([], [], color="0.35", linestyle=(0, (4, 2)), linewidth=1.1,
                                  label="ideal: exact per-parameter baseline b*"))
            fig.legend(handles=handles, loc="outside lower center", ncol=3, frameon=False)
            fig.suptitle(f"Variance of gradient estimators of E[{part['label']}] under "
                         f"N(μ = {mu:g}, σ = {sigma:g})\nlines: exact (quadrature); points: "
                         f"Monte Carlo, R = {data['num_replicates']:,} estimates, ±2 s.e.",
                         fontsize=10)
            written += save_figure(fig, paths, f"{NAME}-{family}", results_path,
                                   "experiments/cost_functions.py")
    return written


# --------------------------------------------------------------------------------------------
# Key numbers
# --------------------------------------------------------------------------------------------


def agreement(part: dict, name: str, parameter: str, factor: float = 1.0) -> np.ndarray:
    """z = (measured - factor x exact) / s.e. of the measured K x variance, per k point.

    A variance that is zero in exact arithmetic (``measure_valued_coupled``'s for mu at k = mu
    on the quadratic: f(mu + sigma w) = f(mu - sigma w)) is measured as rounding noise with a
    standard error to match: the s.e. is floored at 1e-10 of the largest exact variance there.
    """
    row = part["measured"][name][parameter]
    exact = factor * np.asarray(part["exact_points"][name][parameter])
    largest = np.max([np.abs(part["exact_points"][n][parameter]) for n in ESTIMATOR_NAMES], 0)
    se = np.maximum(np.asarray(row["variance_se"]), 1e-10 * (1 + largest))
    return (np.asarray(row["variance"]) - exact) / se


def summary(results: dict) -> str:
    """The key numbers of saved results, as plain text."""
    data = results["data"]
    lines = [f"cost-functions ({results['metadata']['wall_seconds']:.0f} s; K = "
             f"{data['num_samples']}, R = {data['num_replicates']} replicates per point; "
             "K x variance at the smallest, middle and largest k: measured ± s.e. [exact]; "
             "max |z| of measured against exact over all k)"]
    for family, part in data["families"].items():
        k = np.asarray(part["k_points"])
        picks = [0, len(k) // 2, len(k) - 1]
        lines.append(f"{part['label']}  (k = {', '.join(f'{k[i]:.3g}' for i in picks)})")
        for p in PARAMETERS:
            for name in ESTIMATOR_NAMES:
                row = part["measured"][name][p]
                exact = part["exact_points"][name][p]
                cells = "  ".join(f"{row['variance'][i]:9.4g} ± {row['variance_se'][i]:<8.2g}"
                                  f"[{exact[i]:.4g}]" for i in picks)
                z = np.abs(agreement(part, name, p)).max()
                lines.append(f"  d/d{_PARAM_LABEL[p]} {name:24s} {cells}  max|z| {z:.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Print the key numbers of saved results: ``python -m experiments.MODULE [RESULTS]``."""
    from .common import summary_main

    return summary_main(NAME, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())
