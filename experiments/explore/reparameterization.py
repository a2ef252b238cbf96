"""Tutorial 5: the reparameterization trick (seed section 5.2) and when it loses.

The setting of Mohamed et al. (2020, Figures 2-3) and of the cost-functions study: the gradient
of E_{N(x; mu, sigma^2)}[f(x; k)] with respect to mu and sigma, at mu = 1, for three costs, the
quadratic (x - k)^2, the Gaussian bump exp(-k x^2) and the cosine cos(k x). Exact variances come
from the study's quadrature (:func:`experiments.cost_functions.normal_moments`,
:func:`~experiments.cost_functions.weak_derivative_moments`,
:func:`~experiments.cost_functions.exact_variances`): one-dimensional integrals, a fraction of a
second for a whole grid of k. The coupled measure-valued estimator's variance for sigma needs a
double integral (seconds), so here it is left out (NaN) and only its mean's pair is drawn.

The cosine's control precomputes the exact curves for every sigma on its slider once and keeps
them; a move reads them, draws Monte Carlo points at the current k (R = 2000 estimates of each
estimator, K = 2, one vectorised pass each) and redraws.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats

from experiments import cost_functions

from . import register

__all__ = ["ESTIMATORS_SHOWN", "LOC", "exact_curves", "crossover", "measure", "draw_cost_families",
           "draw_cosine"]

# The estimators compared, in the study's order: score function, pathwise, measure-valued.
ESTIMATORS_SHOWN = ("score_function", "pathwise", "measure_valued", "measure_valued_coupled")
LOC = 1.0  # mu, as in the study and the paper's figures
NUM_SAMPLES = cost_functions.NUM_SAMPLES  # K = 2; variances are shown as K x variance
NUM_REPLICATES = 2000  # per Monte Carlo point of the control
K_GRIDS = {"quadratic": np.linspace(-3.0, 3.0, 61), "gaussian": np.geomspace(0.1, 10.0, 61),
           "cosine": np.geomspace(0.3, 12.0, 81)}
COSINE_K = tuple(float(v) for v in np.round(np.geomspace(0.5, 8.0, 13), 3))
COSINE_SCALES = (0.5, 0.7, 1.0, 1.4, 2.0)


def exact_curves(family: str, k, scale: float = 1.0) -> dict:
    """{estimator or "gradient": (len(k), 2)}: K x variance of d/dmu, d/dsigma (and the
    gradient) of E_{N(LOC, scale^2)}[f(x; k)], by the cost-functions study's quadrature.
    ``measure_valued_coupled``'s sigma column is NaN (its double integral is left out)."""
    return {name: value.copy() for name, value in
            _exact_curves(family, tuple(np.asarray(k, dtype=float)), float(scale)).items()}


@lru_cache(maxsize=64)
def _exact_curves(family: str, k: tuple, scale: float) -> dict:
    if family not in cost_functions.COSTS:
        raise ValueError(f"unknown cost family {family!r}; choose from "
                         f"{', '.join(cost_functions.COSTS)}")
    cost, k = cost_functions.COSTS[family], np.asarray(k)
    moments = cost_functions.normal_moments(cost, k, LOC, scale)
    moments.update(cost_functions.weak_derivative_moments(cost, k, LOC, scale, coupled=False))
    moments["MU"] = np.full((k.size, 2), np.nan)  # the coupled scale's double integral: skipped
    return cost_functions.exact_variances(moments)


def crossover(family: str, k, scale: float = 1.0, column: int = 0) -> float:
    """The smallest k of the grid ``k`` beyond which the pathwise variance exceeds the score
    function's (NaN if it never does): where the reparameterization trick starts to lose."""
    k = np.asarray(k, dtype=float)
    curves = exact_curves(family, k, scale)
    loses = curves["pathwise"][:, column] > curves["score_function"][:, column]
    if not loses.any():
        return float("nan")
    first = int(np.argmax(loses))
    if first == 0:
        return float(k[0])
    # Between the last grid point where pathwise wins and the first where it loses, linearly.
    difference = (curves["pathwise"] - curves["score_function"])[:, column]
    a, b = difference[first - 1], difference[first]
    return float(k[first - 1] + (k[first] - k[first - 1]) * a / (a - b))


def measure(name: str, family: str, k, scale: float = 1.0,
            num_replicates: int = NUM_REPLICATES) -> dict:
    """K x variance with its standard error, per k and parameter, of the registry's ``name``
    (the study's :func:`experiments.cost_functions.replicate`): {"loc"/"scale": (var, se)}."""
    config = cost_functions.Config(loc=LOC, scale=scale, num_replicates=num_replicates,
                                   chunk=max(num_replicates, 2))
    grads = cost_functions.replicate(name, cost_functions.COSTS[family], np.atleast_1d(k),
                                     config, num_replicates)
    from estimators.diagnostics import gradient_statistics

    out = {}
    for p, g in grads.items():
        s = gradient_statistics(g)
        out[p] = (NUM_SAMPLES * s.variance.numpy(), NUM_SAMPLES * s.variance_se.numpy())
    return out


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

_LABEL = {"loc": "μ", "scale": "σ"}


def _plain_log(ax, x_log: bool):
    """Log axes with plain-number labels and no minor ticks (fast to draw, easy to read)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_yscale("log")
    if x_log:
        ax.set_xscale("log")
    ax.autoscale_view()
    axes = [(ax.yaxis, ax.get_ylim())] + ([(ax.xaxis, ax.get_xlim())] if x_log else [])
    for axis, (low, high) in axes:
        steps = (1, 2, 5) if high / low > 20 else (1, 1.5, 2, 3, 5, 7)
        if high / low > 1e4:
            steps = (1,)
        ticks = [m * 10.0 ** e for e in range(-8, 8) for m in steps if low <= m * 10.0 ** e <= high]
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_locator(NullLocator())


def _positive(values):
    """Exact zeros (and rounding below them) cannot sit on a log axis: drawn as gaps."""
    values = np.asarray(values, dtype=float)
    return np.where(values > 1e-12 * np.nanmax(np.abs(values)), values, np.nan)


def draw_cost_families(measured: dict, column: int = 0):
    """K x Var of d/dmu (``column`` 0) or d/dsigma (1) against k for each cost family: exact
    lines and measured points (±2 s.e.). ``measured[family][name] = (k, var, se)``."""
    import matplotlib.pyplot as plt

    from experiments.style import estimator_style, legend_handle, rc_context

    parameter = ("loc", "scale")[column]
    with rc_context():
        fig, axes = plt.subplots(1, len(measured), figsize=(8, 3.4), layout="constrained")
        for ax, (family, rows) in zip(np.atleast_1d(axes), measured.items()):
            grid = K_GRIDS[family]
            curves = exact_curves(family, grid)
            for name in ESTIMATORS_SHOWN:
                style = estimator_style(name)
                ax.plot(grid, _positive(curves[name][:, column]), color=style["color"],
                        linestyle=style["linestyle"], linewidth=1.5)
                if name in rows:
                    k, value, se = rows[name]
                    ax.errorbar(k, value, yerr=2 * np.asarray(se), linestyle="none",
                                marker=style["marker"], markersize=4.5, color=style["color"],
                                markerfacecolor="white", elinewidth=0.8)
            _plain_log(ax, cost_functions.COSTS[family].log_k)
            ax.set_xlabel("k")
            ax.set_title(f"f = {cost_functions.COSTS[family].label}", fontsize=9.5)
        np.atleast_1d(axes)[0].set_ylabel(f"K × Var[∂/∂{_LABEL[parameter]} estimate], K = "
                                          f"{NUM_SAMPLES}")
        handles = [legend_handle(name, markerfacecolor="white") for name in ESTIMATORS_SHOWN]
        fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8,
                   frameon=False)
    plt.close(fig)  # a notebook then shows the returned figure once, not again at the cell end
    return fig


@lru_cache(maxsize=1)
def _cosine_curves() -> dict:
    """Every slider scale's exact cosine curves, once: {scale: curves on K_GRIDS["cosine"]}."""
    return {scale: exact_curves("cosine", K_GRIDS["cosine"], scale) for scale in COSINE_SCALES}


def draw_cosine(k: float = 2.0, scale: float = 1.0):
    """The cosine cost cos(k x) over q = N(1, scale^2), and K x variance against k of d/dmu and
    d/dsigma, exact (lines) with measured points (±2 s.e.) at the current k."""
    if scale not in COSINE_SCALES:
        raise ValueError(f"scale={scale!r} is not one of the precomputed {COSINE_SCALES}")
    import matplotlib.pyplot as plt

    from experiments.style import estimator_style, legend_handle, rc_context

    curves, grid = _cosine_curves()[scale], K_GRIDS["cosine"]
    points = {name: measure(name, "cosine", [k], scale) for name in ESTIMATORS_SHOWN}
    with rc_context():
        # A fixed layout: constrained layout costs more than the computation of a move.
        fig, axes = plt.subplots(1, 3, figsize=(8, 3.4), gridspec_kw={"width_ratios": [0.8, 1, 1]})
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.28, top=0.91, wspace=0.42)
        ax = axes[0]
        x = np.linspace(LOC - 4, LOC + 4, 400)
        ax.plot(x, np.cos(k * x), color="black", linewidth=1.2, label=f"f = cos({k:g} x)")
        ax.fill_between(x, stats.norm.pdf(x, LOC, scale) / stats.norm.pdf(0, 0, 0.5),
                        color="0.8", label=f"q = N(1, {scale:g}²), density scaled")
        ax.set_ylim(-1.15, 1.6)
        ax.set_xlabel("x")
        ax.set_title("the cost and q", fontsize=9)
        ax.legend(fontsize=7, frameon=False, loc="upper left")
        for column, (ax, p) in enumerate(zip(axes[1:], ("loc", "scale"))):
            for name in ESTIMATORS_SHOWN:
                style = estimator_style(name)
                if np.all(np.isnan(curves[name][:, column])):
                    continue  # the coupled scale's exact variance is not computed here
                exact = _positive(curves[name][:, column])
                ax.plot(grid, exact, color=style["color"], linestyle=style["linestyle"],
                        linewidth=1.5)
            for name in ESTIMATORS_SHOWN:
                style = estimator_style(name)
                value, se = points[name][p]
                ax.errorbar([k], value, yerr=2 * se, linestyle="none", marker=style["marker"],
                            markersize=6, color=style["color"], markerfacecolor="white",
                            elinewidth=1.0)
            ax.axvline(k, color="0.5", linewidth=0.8, linestyle=":")
            _plain_log(ax, True)
            ax.set_xlabel("k, frequency of the cosine")
            ax.set_ylabel(f"K × Var[∂/∂{_LABEL[p]}], K = {NUM_SAMPLES}")
            where = crossover("cosine", grid, scale, column)
            ax.set_title(f"∂/∂{_LABEL[p]}; pathwise loses for k > {where:.2g}", fontsize=9)
        handles = [legend_handle(name, markerfacecolor="white") for name in ESTIMATORS_SHOWN]
        fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    return fig


COSINE = register("cosine-cost", draw_cosine,
                  "the cosine's frequency k and the scale of q",
                  start={"k": 2.0, "scale": 1.0}, k=list(COSINE_K), scale=list(COSINE_SCALES))
