"""Tutorial 8: discrete latents, on REBAR's toy E[(b - t)^2], b ~ Bernoulli(sigmoid(theta)).

The toy and the exact variances of the unbiased estimators come from the discrete study
(:mod:`experiments.discrete`: :class:`~experiments.discrete.ToyObjective`, a "model" whose ELBO is
E_q[(b - t)^2], and :func:`~experiments.discrete.quadrature_moments`, Gauss-Legendre quadrature
over the uniforms each estimator draws). This module adds what the tutorial's slider needs: the
exact mean and variance of the two relaxations (``gumbel_softmax``, ``straight_through``) as
functions of the temperature tau, by the same kind of quadrature, every tau in one call of the
estimator.

For one Bernoulli coordinate everything is an integral over one uniform u: the relaxations draw
z = theta + logit(u) (logistic noise), relax b = 1[z > 0] to y = sigmoid(z / tau), and their
single-sample gradient is a smooth function of u except near z = 0, where it changes over a
width of about tau (and jumps, for straight-through, whose value is taken at b). The rule is
therefore split at u where z = 0, +-tau, +-3 tau, +-10 tau and +-30 tau, and where the noise
logit(u) is 0, +-1, +-3, +-10 and +-30.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy import special, stats
from torch.distributions import Bernoulli, Independent

from estimators import ESTIMATORS
from estimators.diagnostics import replicate_gradients
from experiments import discrete as study
from experiments.common import torch_threads

from . import register

__all__ = ["TARGET", "NUM_SAMPLES", "objective", "exact_gradient", "unbiased_moments",
           "relaxed_moments", "measure", "relaxed_cdf", "draw_temperature", "TEMPERATURE"]

TARGET = 0.45  # t of E[(b - t)^2]: b = 1 beats b = 0 by (1 - t)^2 - t^2 = 1 - 2t = 0.1
NUM_SAMPLES = 2  # K per estimate, every estimator (arm and disarm: one antithetic pair)
DTYPE = torch.float64
RELAXED = ("gumbel_softmax", "straight_through")


def _target(target):
    """``TARGET`` where ``target`` is None, read at call time, so that a reader who sets
    ``dx.TARGET = 0.499`` moves every function here."""
    return TARGET if target is None else float(target)


def objective(theta, target: float | None = None) -> np.ndarray:
    """E[(b - t)^2] = sigmoid(theta) (1 - t)^2 + (1 - sigmoid(theta)) t^2."""
    target = _target(target)
    p = special.expit(np.asarray(theta, dtype=float))
    return p * (1 - target) ** 2 + (1 - p) * target ** 2


def exact_gradient(theta, target: float | None = None) -> np.ndarray:
    """d/d theta E[(b - t)^2] = sigmoid'(theta) (1 - 2t)."""
    target = _target(target)
    p = special.expit(np.asarray(theta, dtype=float))
    return p * (1 - p) * (1 - 2 * target)


@lru_cache(maxsize=64)
def _unbiased(name, thetas, target, num_samples, nodes):
    return np.array([study.quadrature_moments(name, t, target, num_samples, nodes)
                     for t in thetas])


def unbiased_moments(name: str, thetas, target: float | None = None, nodes: int = 40
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Exact (mean, variance) of one estimate of K = 2 samples (arm, disarm: one pair) at each
    theta, by the discrete study's quadrature over the estimator's own uniforms
    (score_function, score_function_loo, arm, disarm, rebar)."""
    thetas = tuple(float(t) for t in np.atleast_1d(thetas))
    moments = _unbiased(name, thetas, _target(target), NUM_SAMPLES, int(nodes))
    return moments[:, 0], moments[:, 1]


_SPLITS = np.array([-30.0, -10.0, -3.0, -1.0, 0.0, 1.0, 3.0, 10.0, 30.0])


def _nodes(theta: float, temperature: float, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre points and weights on (0, 1) in u, split where z = theta + logit(u) is 0
    and a few temperatures either side of it (where the gradient changes), and a few units of
    the logistic noise either side of theta (where its density does)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.unique(np.concatenate([[0.0, 1.0], special.expit(_SPLITS * temperature - theta),
                                      special.expit(_SPLITS)]))
    lower, upper = edges[:-1, None], edges[1:, None]
    points = lower + (upper - lower) * (x + 1) / 2
    return points.ravel(), (w * (upper - lower) / 2).ravel()


def relaxed_moments(name: str, theta: float, temperatures, target: float | None = None,
                    num_samples: int = NUM_SAMPLES, nodes: int = 32
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Exact (mean, variance) of one K-sample estimate of the relaxation ``name`` at each
    temperature, by quadrature over its uniform: the registry's estimator is called once, with
    every (temperature, node) pair as a batch entry."""
    if name not in RELAXED:
        raise ValueError(f"relaxed_moments: name must be one of {', '.join(RELAXED)}, got {name!r}")
    temperatures = np.atleast_1d(np.asarray(temperatures, dtype=float))
    if np.any(temperatures <= 0):
        raise ValueError(f"relaxed_moments: temperatures must be > 0, got {temperatures}")
    rules = [_nodes(float(theta), tau, nodes) for tau in temperatures]
    sizes = [len(p) for p, _ in rules]
    points = torch.from_numpy(np.concatenate([p for p, _ in rules]))
    tau = torch.from_numpy(np.repeat(temperatures, sizes))
    logits = torch.full((points.numel(), 1), float(theta), dtype=DTYPE, requires_grad=True)
    model = study.ToyObjective(torch.tensor(_target(target), dtype=DTYPE), logits, study.BERNOULLI)
    q = Independent(Bernoulli(logits=logits), 1)
    with torch_threads(1):
        estimate = ESTIMATORS[name](model, q, 1, temperature=tau,
                                    uniform=lambda shape: points.reshape(shape))
        (grad,) = torch.autograd.grad(estimate.surrogate.sum(), logits)
    values = np.split(grad[:, 0].numpy(), np.cumsum(sizes)[:-1])
    weights = [w for _, w in rules]
    mean = np.array([w @ v for w, v in zip(weights, values)])
    second = np.array([w @ v ** 2 for w, v in zip(weights, values)])
    # A K-sample estimate is the mean of K independent single-sample ones.
    return mean, (second - mean ** 2) / num_samples


def measure(name: str, theta: float, num_replicates: int, seed: int = 0,
            target: float | None = None, num_samples: int = NUM_SAMPLES, **options) -> np.ndarray:
    """``num_replicates`` independent estimates of d/d theta from the registry's estimator, one
    vectorised pass under ``seed`` (torch's global stream is left as it was)."""
    target = _target(target)

    def build(lam, _):
        logits = lam["logits"]
        model = study.ToyObjective(torch.tensor(target, dtype=DTYPE), logits, study.BERNOULLI)
        return model, Independent(Bernoulli(logits=logits), 1)

    with torch.random.fork_rng(devices=[]), torch_threads(1):
        torch.manual_seed(seed)
        grads = replicate_gradients(ESTIMATORS[name], build,
                                    {"logits": torch.tensor([float(theta)], dtype=DTYPE)},
                                    num_replicates=num_replicates, num_samples=num_samples,
                                    **options)
    return grads.lambda_["logits"][:, 0].numpy()


def relaxed_cdf(y, theta: float, temperature: float) -> np.ndarray:
    """P(sigmoid((theta + L) / tau) <= y), L logistic: the relaxed sample's distribution function,
    sigma(tau logit(y) - theta)."""
    return stats.logistic.cdf(temperature * special.logit(np.asarray(y, dtype=float)), loc=theta)


_TEMPERATURES = np.logspace(math.log10(0.02), math.log10(10.0), 41)
_SLIDER_REPLICATES = 4000


@lru_cache(maxsize=64)
def _curves(theta: float, target: float) -> dict:
    """The relaxations' exact mean and variance on the grid of temperatures, and the unbiased
    estimators' exact variances, at one theta: everything of the figure that the temperature does
    not move."""
    # 16 nodes a piece: means within 1e-7 and variances within 0.03% of the 32-node default,
    # far below what a plot can show, at half the cost of a move of theta.
    curves = {name: relaxed_moments(name, theta, _TEMPERATURES, target, nodes=16)
              for name in RELAXED}
    for name in ("score_function_loo", "disarm"):
        curves[name] = unbiased_moments(name, [theta], target, nodes=24)
    return curves


def draw_temperature(temperature: float = 0.5, theta: float = -2.0, seed: int = 0):
    """(a) the relaxed sample's distribution against the Bernoulli's; (b) the relaxations' mean
    gradient and (c) their variance against the temperature, exact, with Monte Carlo at tau."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullLocator

    from experiments.style import estimator_style

    if float(theta) in _THETAS:  # the slider's values: all filled by the first view
        for value in _THETAS:
            _curves(value, TARGET)
    curves = _curves(float(theta), TARGET)
    exact = float(exact_gradient(theta))
    # A fixed layout, no minor ticks and plain labels on the log axes: matplotlib's 10^k labels
    # are typeset as mathtext, which doubles the time of a redraw.
    fig, axes = plt.subplots(1, 3, figsize=(8.0, 3.9))
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.30, top=0.86, wspace=0.42)

    ax = axes[0]
    y = np.linspace(0.0005, 0.9995, 400)
    p = special.expit(theta)
    ax.step([0, 0, 1, 1], [0, 1 - p, 1 - p, 1], where="post", color="black", linewidth=1.5,
            label="b ~ Bernoulli")
    ax.plot(y, relaxed_cdf(y, theta, temperature), color=estimator_style("gumbel_softmax")["color"],
            linewidth=1.8, label=f"y = σ((θ + L)/τ)")
    ax.axvline(TARGET, color="0.6", linestyle=":", linewidth=1)
    ax.set_xlabel("value of b or of its relaxation y")
    ax.set_ylabel("P(value ≤ ·)")
    ax.set_title(f"(a) the sample, τ = {temperature:g}", fontsize=10)

    estimates = {name: measure(name, theta, _SLIDER_REPLICATES, seed, temperature=temperature)
                 for name in RELAXED}
    for ax, key in ((axes[1], 0), (axes[2], 1)):
        for j, name in enumerate(RELAXED):
            style = estimator_style(name)
            ax.plot(_TEMPERATURES, curves[name][key], color=style["color"],
                    linestyle=style["linestyle"], linewidth=1.5, label=f"{name}, exact")
            values = estimates[name]
            if key == 0:
                centre = values.mean()
                half = 2 * values.std(ddof=1) / math.sqrt(values.size)
            else:
                deviations = (values - values.mean()) ** 2
                centre = deviations.mean() * values.size / (values.size - 1)
                half = 2 * deviations.std() / math.sqrt(values.size)
            ax.errorbar([temperature * 1.06 ** (2 * j - 1)], [centre], yerr=[half],
                        marker=style["marker"], color=style["color"], markersize=4, capsize=2,
                        linestyle="none")
        ax.axvline(temperature, color="0.6", linewidth=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("temperature τ")
    ax = axes[1]
    # The exact curves set the scale; a Monte Carlo error bar at a low tau may reach beyond it.
    low = min(curves[name][0].min() for name in RELAXED)
    high = max(curves[name][0].max() for name in RELAXED)
    low, high = min(low, exact, 0.0), max(high, exact)
    ax.set_ylim(low - 0.08 * (high - low), high + 0.08 * (high - low))
    ax.axhline(exact, color="black", linewidth=1.2, label=f"exact ∂/∂θ = {exact:.4f}")
    ax.axhline(0.0, color="0.6", linewidth=0.8)
    ax.set_ylabel("mean of one estimate")
    ax.set_title("(b) the bias", fontsize=10)
    ax = axes[2]
    for name in ("score_function_loo", "disarm"):
        variance = curves[name][1][0]
        style = estimator_style(name)
        if variance > 1e-30:
            ax.axhline(variance, color=style["color"], linestyle=style["linestyle"], linewidth=1,
                       label=f"{name} (unbiased)")
        else:  # disarm's is exactly 0 at theta = 0, a line a log axis cannot draw
            ax.plot([], [], color=style["color"], linestyle=style["linestyle"], linewidth=1,
                    label=f"{name}: exactly 0 here")
    ax.set_yscale("log")
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_ylabel(f"variance (K = {NUM_SAMPLES})")
    ax.set_title("(c) the variance", fontsize=10)
    # One legend for the three panels, under them, where no curve can run into it.
    found = {}
    for panel in axes:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            found.setdefault(label, handle)
    fig.legend(found.values(), found.keys(), loc="lower center", ncol=3, fontsize=7.5,
               frameon=False)
    fig.suptitle(f"E[(b − {TARGET})²], b ~ Bernoulli(σ(θ)), θ = {theta:g}; lines exact, "
                 f"points: {_SLIDER_REPLICATES} estimates at τ, ± 2 s.e.", fontsize=9.5)
    return fig


_THETAS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
TEMPERATURE = register("discrete-temperature", draw_temperature,
                       "the temperature of the relaxations, and the logit theta",
                       start={"temperature": 0.5, "theta": -2.0},
                       temperature=[0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 5.0],
                       theta=list(_THETAS), seed=list(range(5)))
