"""Tutorial 7: multi-sample bounds (IWAE, DReG, VIMCO) on a model whose log p(x) is known.

The model is the conjugate Gaussian of :class:`estimators.targets.ConjugateGaussian` in one
dimension: z ~ N(theta, 1), x | z ~ N(z, 1), one observation x = 1.5; q = N(loc, exp(log_scale)^2).
Its log p(x), ELBO and posterior are closed forms. The K-sample bound

    L_K = E log (1/K) sum_k w_k,   w_k = p(x, z_k) / q(z_k),   z_k ~ q independent,

is computed exactly, for every K at once, from one function of a scalar (Frullani's integral
log s = int_0^inf (e^-t - e^-ts) dt / t, and the Laplace transform of a sum of independent
terms being the product of theirs):

    L_K = log c + int_0^inf [exp(-K u) - phi(u)^K] du / u,          phi(u) = E_q exp(-u w / c),
    grad L_K = K int_0^inf phi(u)^(K-1) E_q[exp(-u w / c) (w / c) grad log w] du,

with c any constant (here exp(ELBO), so that w / c is of order one). phi and the expectation in
the gradient are one-dimensional Gaussian integrals over the noise e of z = loc + scale e (the
reparameterized form, seed section 5.2); both are tabulated once on a grid of u, after which every
K costs one sum. :func:`experiments.quadrature.iwae_bound` computes the same bound by
K-dimensional cubature for K <= 3; the tests check the two against each other.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
from scipy import integrate, stats
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS
from estimators.diagnostics import replicate_gradients
from estimators.targets import ConjugateGaussian
from experiments.common import torch_threads

from . import register

__all__ = ["X", "PRIOR_LOC", "Q_LOC", "Q_LOG_SCALE", "COORDINATES", "model", "build",
           "exact_elbo", "log_evidence", "chi_square", "Bound", "exact_bound", "replicate",
           "draw_gradient_histograms", "GRADIENTS"]

X = 1.5  # the one observation
PRIOR_LOC = 0.0  # theta: the prior's mean, the model's parameter
Q_LOC = 0.0  # q = N(Q_LOC, exp(Q_LOG_SCALE)^2): here the prior itself, an encoder that ignores x
Q_LOG_SCALE = 0.0
COORDINATES = ("loc", "log_scale", "prior_loc")  # the gradient's coordinates, in this order
DTYPE = torch.float64


def model(prior_loc: float | None = None) -> ConjugateGaussian:
    prior_loc = PRIOR_LOC if prior_loc is None else prior_loc
    return ConjugateGaussian(torch.tensor([X], dtype=DTYPE), torch.tensor([prior_loc], dtype=DTYPE))


def build(lam: dict, theta: dict):
    """(model, q) for :func:`estimators.diagnostics.replicate_gradients`: lambda = (loc,
    log_scale), theta = prior_loc, each with a leading replicate dimension."""
    return (ConjugateGaussian(torch.tensor([X], dtype=DTYPE), theta["prior_loc"]),
            Independent(Normal(lam["loc"], lam["log_scale"].exp()), 1))


def _leaves(loc, log_scale, prior_loc):
    return [torch.tensor([float(v)], dtype=DTYPE, requires_grad=True)
            for v in (loc, log_scale, prior_loc)]


def _current(loc, log_scale, prior_loc):
    """The module's settings where an argument is None, read at call time, so that a reader who
    sets ``ms.Q_LOC = ...`` moves every function here."""
    return (Q_LOC if loc is None else loc, Q_LOG_SCALE if log_scale is None else log_scale,
            PRIOR_LOC if prior_loc is None else prior_loc)


def exact_elbo(loc=None, log_scale=None, prior_loc=None) -> tuple[float, np.ndarray]:
    """The ELBO (seed eq. 4) in closed form and its gradient in (loc, log_scale, prior_loc)."""
    m, s, t = _leaves(*_current(loc, log_scale, prior_loc))
    value = ConjugateGaussian(torch.tensor([X], dtype=DTYPE), t).exact_elbo(m, s.exp())
    grads = torch.autograd.grad(value.sum(), [m, s, t])
    return value.item(), torch.cat(grads).numpy()


def log_evidence(prior_loc=None) -> tuple[float, np.ndarray]:
    """log p(x) in closed form and its gradient (zero in q's parameters, which it does not use)."""
    prior_loc = PRIOR_LOC if prior_loc is None else prior_loc
    t = torch.tensor([float(prior_loc)], dtype=DTYPE, requires_grad=True)
    value = ConjugateGaussian(torch.tensor([X], dtype=DTYPE), t).log_evidence()
    (grad,) = torch.autograd.grad(value.sum(), t)
    return value.item(), np.array([0.0, 0.0, grad.item()])


def chi_square(loc=None, log_scale=None, prior_loc=None) -> float:
    """chi^2(p(z|x) || q) = Var_q[w / p(x)], by adaptive quadrature: log p(x) - L_K ~ chi^2 / (2K).

    Infinite when q's variance is at most half the posterior's: p(z|x)^2 / q(z) then does not
    decay in the tails.
    """
    loc, log_scale, prior_loc = _current(loc, log_scale, prior_loc)
    posterior = model(prior_loc).posterior()
    m, s = posterior.base_dist.loc.item(), posterior.base_dist.scale.item()
    q_scale = math.exp(log_scale)
    if 2 * q_scale ** 2 <= s ** 2:
        return math.inf

    def integrand(z):
        return math.exp(2 * stats.norm.logpdf(z, m, s) - stats.norm.logpdf(z, loc, q_scale))

    value, _ = integrate.quad(integrand, -np.inf, np.inf)
    return value - 1.0


class Bound(NamedTuple):
    """L_K for each K of ``num_samples`` (shape (n,)) and its gradient (n, 3) in COORDINATES."""

    num_samples: np.ndarray
    value: np.ndarray
    gradient: np.ndarray


# The noise grid: e in [-12, 12] holds all but 1e-32 of N(0, 1); the trapezoid rule on a smooth,
# fast-decaying integrand converges geometrically in the spacing. The grid in s = log u runs
# from where every u w / c < e^-35 (the integrand is then ~ u) to where every exp(-u w / c) <
# e^-148 (it is zero), so truncation costs nothing; exp(-u w / c) varies on a scale of one in s.
_NOISE = np.arange(-12.0, 12.0 + 1e-9, 0.05)
_LOG_U_STEP = 0.2


def _log_weights(loc, log_scale, prior_loc):
    """log w at every noise node and its gradient in (loc, log_scale, prior_loc), (N,), (N, 3)."""
    count = _NOISE.size
    m, s, t = (torch.full((count,), float(v), dtype=DTYPE, requires_grad=True)
               for v in (loc, log_scale, prior_loc))
    z = (m + s.exp() * torch.from_numpy(_NOISE)).unsqueeze(-1)
    joint = ConjugateGaussian(torch.tensor([X], dtype=DTYPE), t.unsqueeze(-1)).log_joint(z)
    log_w = joint - Independent(Normal(m.unsqueeze(-1), s.exp().unsqueeze(-1)), 1).log_prob(z)
    grads = torch.autograd.grad(log_w.sum(), [m, s, t])
    return log_w.detach().numpy(), torch.stack(grads, -1).numpy()


@lru_cache(maxsize=32)
def _tables(loc, log_scale, prior_loc):
    """phi(u) and u E[exp(-u v) v grad log w] on the grid of s = log u, v = w / c, and log c."""
    log_w, grad = _log_weights(loc, log_scale, prior_loc)
    density = stats.norm.pdf(_NOISE)
    log_c = integrate.trapezoid(density * log_w, _NOISE)  # the ELBO on the same grid
    log_v = log_w - log_c
    log_u = np.arange(-log_v.max() - 35.0, -log_v.min() + 5.0 + 1e-9, _LOG_U_STEP)
    uv = np.exp(log_u[:, None] + log_v[None, :])  # (S, N)
    kernel = np.exp(-uv) * density
    phi = integrate.trapezoid(kernel, _NOISE, axis=1)
    psi = integrate.trapezoid((kernel * uv)[..., None] * grad[None], _NOISE, axis=1)  # (S, 3)
    return log_u, phi, psi, log_c, grad, density


def exact_bound(num_samples, loc=None, log_scale=None, prior_loc=None) -> Bound:
    """The K-sample bound L_K and its gradient, exactly (to ~1e-10), for every K given.

    One table of phi(u) serves every K (module docstring); K = 1 is the ELBO, and the rule checks
    itself there: if the identity's L_1 misses the ELBO on the same noise grid by more than 1e-8,
    q is too far from the posterior for the grids and it raises instead of returning a wrong curve.
    """
    ks = np.atleast_1d(np.asarray(num_samples, dtype=float))
    if ks.ndim != 1 or np.any(ks < 1) or np.any(ks != np.round(ks)):
        raise ValueError(f"exact_bound: num_samples must be integers >= 1, got {num_samples!r}")
    loc, log_scale, prior_loc = _current(loc, log_scale, prior_loc)
    log_u, phi, psi, log_c, grad, density = _tables(float(loc), float(log_scale), float(prior_loc))
    log_phi = np.log(np.maximum(phi, np.finfo(float).tiny))
    every = np.concatenate([[1.0], ks])[:, None]
    inner = np.exp(-every * np.exp(log_u)[None]) - np.exp(every * log_phi[None])
    value = log_c + integrate.trapezoid(inner, log_u, axis=1)
    gradient = every * integrate.trapezoid(
        np.exp((every - 1) * log_phi[None])[..., None] * psi[None], log_u, axis=1)
    elbo_gradient = integrate.trapezoid(density[:, None] * grad, _NOISE, axis=0)
    miss = max(abs(value[0] - log_c), np.abs(gradient[0] - elbo_gradient).max())
    if miss > 1e-8:
        raise RuntimeError(f"exact_bound: the quadrature misses the ELBO by {miss:.1e} at K = 1; "
                           "q is too far from the posterior for its grids")
    return Bound(ks.astype(int), value[1:], gradient[1:])


def replicate(name: str, num_samples: int, num_replicates: int, seed: int = 0,
              loc=None, log_scale=None, prior_loc=None) -> np.ndarray:
    """``num_replicates`` independent gradient estimates (R, 3) of a registry estimator, drawn
    in one vectorised pass, under ``seed`` (torch's global stream is left as it was)."""
    loc, log_scale, prior_loc = _current(loc, log_scale, prior_loc)
    params = {"loc": torch.tensor([float(loc)], dtype=DTYPE),
              "log_scale": torch.tensor([float(log_scale)], dtype=DTYPE)}
    # One thread: small tensors gain nothing from a pool, which on a busy CPU waits 20x longer.
    with torch.random.fork_rng(devices=[]), torch_threads(1):
        torch.manual_seed(seed)
        grads = replicate_gradients(ESTIMATORS[name], build, params,
                                    {"prior_loc": torch.tensor([float(prior_loc)], dtype=DTYPE)},
                                    num_replicates=num_replicates, num_samples=num_samples)
    return torch.cat([grads.lambda_["loc"], grads.lambda_["log_scale"],
                      grads.theta["prior_loc"]], -1).numpy()


_CURVE_K = np.unique(np.round(np.logspace(0, 3, 61)).astype(int))
_SLIDER_REPLICATES = 1000


def draw_gradient_histograms(num_samples: int = 8, seed: int = 0):
    """(a) the exact L_k against k, K marked; (b) the iwae and dreg estimates of d/d loc at K."""
    import matplotlib.pyplot as plt

    from experiments.style import color

    curve = exact_bound(_CURVE_K)
    here = exact_bound([num_samples])
    evidence, _ = log_evidence()
    elbo, elbo_gradient = exact_elbo()
    from matplotlib.ticker import FormatStrFormatter, NullLocator

    # A fixed layout, no minor ticks and plain tick labels on the log axes (matplotlib's default
    # 10^k labels are typeset as mathtext): each halves the time of a redraw.
    fig, axes = plt.subplots(1, 2, figsize=(8.0, 3.6))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.14, top=0.91, wspace=0.25)
    ax = axes[0]
    ax.plot(curve.num_samples, curve.value, color="black", label="exact L_k")
    ax.axhline(evidence, color="0.4", linestyle="--", label=f"log p(x) = {evidence:.3f}")
    ax.axhline(elbo, color="0.4", linestyle=":", label=f"ELBO = {elbo:.3f}")
    ax.plot([num_samples], here.value, "o", color="black", markersize=7)
    ax.annotate(f"K = {num_samples}\nL_K = {here.value[0]:.3f}",
                (num_samples, here.value[0]), textcoords="offset points",
                xytext=(8, -28) if here.value[0] > (elbo + evidence) / 2 else (8, 6),
                fontsize=8)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("samples k (log scale)")
    ax.set_ylabel("nats")
    ax.set_title("(a) the k-sample bound, exact", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")

    ax = axes[1]
    estimates = {name: replicate(name, num_samples, _SLIDER_REPLICATES, seed)[:, 0]
                 for name in ("iwae", "dreg")}
    for name, values in estimates.items():
        # Each estimator binned over its own range: iwae's spread is up to 100 times dreg's.
        low, high = np.percentile(values, [0.5, 99.5])
        bins = np.linspace(low, high + 1e-12, 41)
        right_way = np.mean(np.sign(values) == np.sign(here.gradient[0, 0]))
        filled = name == "iwae"
        ax.hist(values, bins=bins, density=True, histtype="stepfilled" if filled else "step",
                alpha=0.35 if filled else 1.0, linewidth=1.8, color=color(name),
                label=f"{name}: mean {values.mean():.3f}, sd {values.std(ddof=1):.3f},\n"
                      f"    sign right in {100 * right_way:.0f}%")
    ax.axvline(here.gradient[0, 0], color="black", linewidth=1.2,
               label=f"exact ∂L_K/∂loc = {here.gradient[0, 0]:.4f}")
    shown = ax.get_xlim()
    ax.axvline(elbo_gradient[0], color="black", linestyle="--", linewidth=1.0,
               label=f"exact ∂ELBO/∂loc = {elbo_gradient[0]:.2f}" + (
                   "" if shown[0] <= elbo_gradient[0] <= shown[1] else " (off the axis)"))
    ax.set_xlim(shown)
    ax.axvline(0.0, color="0.5", linewidth=0.8)
    ax.set_yscale("log")
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * (high / low) ** 0.6)  # head room for the legend
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("one estimate of ∂/∂loc (0.5-99.5% of each shown)")
    ax.set_ylabel("density (log scale)")
    ax.set_title(f"(b) {_SLIDER_REPLICATES} estimates of each at K = {num_samples}", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper left")
    return fig


GRADIENTS = register("multi-sample-gradients", draw_gradient_histograms,
                     "the number of samples K of the bound and of its estimators",
                     start={"num_samples": 8}, num_samples=[1, 2, 4, 8, 16, 32, 64, 128],
                     seed=list(range(5)))
