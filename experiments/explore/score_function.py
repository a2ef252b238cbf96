"""Tutorial 3: the score-function estimator (seed section 5.1) and its two forms.

The model is the score-forms study's: z ~ N(0, 1), x | z ~ N(z, 1) with x = 0.8, so the posterior
is N(0.4, 1/2); q = N(mu, sigma^2). The exact single-sample variance of the score-function
estimator with a constant baseline b is

    Var = E[f^2 s^2] - 2 b E[f s^2] + b^2 E[s^2] - g^2,   f = log p(x, z) - log q(z),

s = d/dlambda log q(z), g = E[f s] (the study's formula): b = 0 is the seed's form
(``score_function``), b = 1 the form autograd writes (``score_function_autodiff``); a constant c
added to log p(x, z) changes nothing but b, to b - c. The moments
come from :func:`experiments.quadrature.score_function_moments`, one ``quad_vec`` for a whole
grid of (mu, sigma), computed once and kept; a slider move then only reads the grid, draws
2 x 13 fresh Monte Carlo points (R = 2000 single-sample estimates each, one vectorised pass per
form) and redraws.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from scipy import stats
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS
from estimators.diagnostics import gradient_statistics, replicate_gradients

from experiments import score_forms
from experiments.quadrature import score_function_moments

from . import register

__all__ = ["FORMS", "OFFSETS", "SCALES", "model", "posterior", "q_at", "moment_grid",
           "constant_baseline_variance", "exact_at", "measure", "draw_variance_curves"]

FORMS = tuple(score_forms.FORMS)  # ("score_function", "score_function_autodiff")
BASELINE_OF = dict(score_forms.FORMS)  # each form's constant baseline: 0 and 1
DTYPE = torch.float64
SHIFTS = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0)  # constants c added to log p(x, z)
# The knobs, in posterior sds: mu = posterior mean + offset * sd, sigma = scale * sd.
OFFSETS = np.round(np.arange(-3.0, 3.01, 0.5), 10)
SCALES = (0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.2, 1.4, 1.7, 2.0)
CURVE_OFFSETS = np.round(np.linspace(-3.0, 3.0, 61), 10)  # contains every knob offset
NUM_REPLICATES = 2000  # per Monte Carlo point in the figure: 13 points x 2 forms answer in time


@lru_cache(maxsize=1)
def model():
    """The conjugate model of the score-forms study (x = 0.8), float64."""
    return score_forms.conjugate_model(score_forms.Config())


def posterior() -> tuple[float, float]:
    """(mean, sd) of p(z | x)."""
    return score_forms.posterior(score_forms.Config())


def q_at(offset, scale) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of q from the knobs: offset and scale in posterior standard deviations."""
    mean, sd = posterior()
    return mean + sd * np.asarray(offset, float), sd * np.asarray(scale, float)


@lru_cache(maxsize=1)
def moment_grid() -> dict:
    """The score-function moments on SCALES x CURVE_OFFSETS: {name: (scales, offsets, 2)}.

    One adaptive quadrature for all 610 points (the cost is the integrand's evaluations, not the
    number of points); the last axis is (d/dmu, d/dsigma).
    """
    offsets, scales = np.meshgrid(CURVE_OFFSETS, np.asarray(SCALES), indexing="xy")
    loc, scale = q_at(offsets.ravel(), scales.ravel())
    moments = score_function_moments(model().log_joint, loc, scale)
    shape = (len(SCALES), len(CURVE_OFFSETS), 2)
    return {key: np.asarray(value).reshape(shape) for key, value in moments.items()}


def constant_baseline_variance(moments: dict, baseline) -> np.ndarray:
    """The single-sample variance of (f - b) s for a constant b: the score-forms study's formula."""
    return (moments["fs2"] - 2 * baseline * moments["f_s2"] + baseline ** 2 * moments["s2"]
            - moments["g"] ** 2)


def _indices(offset, scale) -> tuple[int, int]:
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r} is not on the grid {SCALES}; choose one of them")
    where = np.flatnonzero(np.isclose(CURVE_OFFSETS, offset))
    if where.size != 1:
        raise ValueError(f"offset={offset!r} is not on the grid (-3 to 3 in steps of 0.1)")
    return SCALES.index(scale), int(where[0])


def exact_at(offset, scale, shift: float = 0.0) -> dict:
    """Exact values at one grid point, for log p(x, z) + ``shift``: the gradient g (2,), each
    form's variance (2,), and the optimal constant baseline b* = E[f s^2] / E[s^2] (2,).

    A shift c of log p is a baseline of -c (f + c - b = f - (b - c)): one grid serves every c.
    """
    i, j = _indices(offset, scale)
    moments = {key: value[i, j] for key, value in moment_grid().items()}
    out = {"gradient": moments["g"], "optimal_baseline": moments["f_s2"] / moments["s2"] + shift}
    for name in FORMS:
        out[name] = constant_baseline_variance(moments, BASELINE_OF[name] - shift)
    return out


def measure(name: str, offsets, scale: float, shift: float = 0.0,
            num_replicates: int = NUM_REPLICATES, seed: int = 0) -> dict:
    """R single-sample estimates of the registry's ``name`` at each offset, on log p + ``shift``:
    {"loc"/"scale": ParameterStatistics} (mean, variance, their standard errors, per offset)."""
    loc, sigma = q_at(offsets, scale)
    start = {"loc": torch.tensor(np.atleast_1d(loc), dtype=DTYPE).reshape(-1, 1)}
    start["scale"] = torch.full_like(start["loc"], float(sigma))

    target = model() if shift == 0 else score_forms.ShiftedModel(model(), shift)

    def build(lam, theta):
        return target, Independent(Normal(lam["loc"], lam["scale"]), 1)

    torch.manual_seed(seed)
    grads = replicate_gradients(ESTIMATORS[name], build, start, num_replicates=num_replicates,
                                num_samples=1)
    return {p: gradient_statistics(grads.lambda_[p].squeeze(-1)) for p in ("loc", "scale")}


def _log_axis(ax):
    """A log y axis with plain-number labels at 1-2-5 steps and no minor ticks (fast to draw)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_locator(NullLocator())


_LABEL = {"loc": "μ", "scale": "σ"}


def draw_variance_curves(scale: float = 1.0, offset: float = 0.0, shift: float = 0.0,
                         seed: int = 0):
    """Densities of q and the posterior; the exact single-sample variance of both forms against
    q's offset at this scale (lines), Monte Carlo points (±2 s.e.), the current q marked; the
    model's log p(x, z) shifted by the constant ``shift``."""
    import matplotlib.pyplot as plt

    from experiments.style import estimator_style, rc_context

    i, j = _indices(offset, scale)
    grid = moment_grid()
    moments = {key: value[i] for key, value in grid.items()}
    mean, sd = posterior()
    mu, sigma = q_at(offset, scale)
    with rc_context():
        # A fixed layout and plain tick labels: constrained layout and mathtext log labels
        # cost more than the whole computation of a move.
        fig, axes = plt.subplots(1, 3, figsize=(8, 3.3), gridspec_kw={"width_ratios": [0.8, 1, 1]})
        fig.subplots_adjust(left=0.07, right=0.99, bottom=0.15, top=0.83, wspace=0.42)
        z = np.linspace(mean - 6 * sd, mean + 6 * sd, 301)
        ax = axes[0]
        ax.fill_between(z, stats.norm.pdf(z, mean, sd), color="0.8", label="posterior")
        ax.plot(z, stats.norm.pdf(z, mu, sigma), color="black", label="q")
        ax.set_ylim(0, 1.4 * stats.norm.pdf(0, 0, min(sd, sigma)))  # room for the legend
        ax.set_xlabel("z")
        ax.set_ylabel("density")
        ax.set_title(f"q = N({mu:.2f}, {sigma:.2f}²)", fontsize=9)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
        points = {name: measure(name, OFFSETS, scale, shift, seed=seed) for name in FORMS}
        for k, p in enumerate(("loc", "scale")):
            ax = axes[1 + k]
            for name in FORMS:
                curve = constant_baseline_variance(moments, BASELINE_OF[name] - shift)[:, k]
                style = estimator_style(name)
                ax.plot(CURVE_OFFSETS, curve, color=style["color"], linestyle=style["linestyle"],
                        marker=style["marker"], markevery=[j], markersize=9, linewidth=1.6,
                        label=name)
                row = points[name][p]
                ax.errorbar(OFFSETS, row.variance, yerr=2 * row.variance_se, linestyle="none",
                            marker=style["marker"], markersize=4, color=style["color"],
                            markerfacecolor="white", elinewidth=0.8)
            ax.axvline(offset, color="0.5", linewidth=0.8, linestyle=":")
            _log_axis(ax)
            ax.set_xlabel("offset of μ (posterior sds)")
            ax.set_ylabel(f"Var[∂/∂{_LABEL[p]} estimate], K = 1")
            ax.set_title(f"∂/∂{_LABEL[p]}: exact g = {moments['g'][j, k]:+.3f}", fontsize=9)
        axes[1].legend(fontsize=7, frameon=False, loc="upper center")
        shifted = f", log p + {shift:g}" if shift else ""
        fig.suptitle(f"σ = {scale:g} × posterior sd{shifted}.  Lines: exact (quadrature); points: "
                     f"R = {NUM_REPLICATES} estimates, ±2 s.e.; large marks: the current q",
                     fontsize=9)
    return fig


VARIANCE = register("score-function-variance", draw_variance_curves,
                    "the scale and location of q, in posterior standard deviations",
                    start={"scale": 1.0, "offset": 0.0, "shift": 0.0},
                    scale=list(SCALES), offset=[float(v) for v in OFFSETS],
                    shift=list(SHIFTS), seed=list(range(5)))
