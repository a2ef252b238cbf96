"""Tutorial 4: baselines (control variates) of the score-function estimator, with exact variances.

The model is tutorial 3's (the score-forms study's): z ~ N(0, 1), x | z ~ N(z, 1), x = 0.8;
q = N(mu, sigma^2). With f = log p(x, z) - log q(z), s = d/dlambda log q(z) per parameter and

    G = E[f], B = E[f^2], g = E[f s], A = E[f^2 s^2], C = E[s^2], F = E[f s^2],

the exact variance of a K-sample estimate (1/K) sum_k (f_k - b_k) s_k is, per parameter,

* a constant b (no baseline: b = 0; a moving average at a fixed q settles at b = G):
  (A - 2 b F + b^2 C - g^2) / K;
* leave-one-out, b_k = mean_{j != k} f_j (Kool et al. 2019):
  (A - g^2) / K + (B C + g^2 + (K - 2) C G^2) / (K (K - 1)) - 2 F G / K,
  which tends to the constant b = G as K grows (the derivation is in the tutorial).

``score_function_optimal`` uses one b for every parameter (the trace-optimal
b* = sum_p F_p / sum_p C_p), estimated from the other samples; at K = 2 it is leave-one-out.
g, A, F, C come from :func:`experiments.quadrature.score_function_moments`; G is the ELBO in
closed form and B one more ``quad_vec``. Everything here is a number or an array: the tutorial
measures the registry's estimators beside them.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy import integrate

from experiments.quadrature import score_function_moments

from . import score_function as tutorial3

__all__ = ["signal_moments", "shifted", "constant_variance", "loo_variance", "trace_optimal_baseline",
           "exact_variances", "amortised_model", "exact_amortised_elbo"]


def signal_moments(offset: float, scale: float) -> dict:
    """G, B (scalars) and g, A, C, F (arrays over (d/dmu, d/dsigma)) at tutorial 3's knob point
    (offset, scale): q = N(posterior mean + offset sd, (scale sd)^2)."""
    return dict(_signal_moments(float(offset), float(scale)))


@lru_cache(maxsize=32)
def _signal_moments(offset: float, scale: float) -> tuple:
    mu, sigma = (float(v) for v in tutorial3.q_at(offset, scale))
    model = tutorial3.model()
    moments = score_function_moments(model.log_joint, mu, sigma)
    loc = torch.tensor([mu], dtype=torch.float64)
    elbo = model.exact_elbo(loc, torch.tensor([sigma], dtype=torch.float64)).item()

    def squared_signal(e):
        z = torch.tensor([[mu + sigma * e]], dtype=torch.float64)
        log_q = -0.5 * e * e - math.log(sigma) - 0.5 * math.log(2 * math.pi)
        f = model.log_joint(z).item() - log_q
        return f * f * math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)

    second, _ = integrate.quad(squared_signal, -np.inf, np.inf, epsabs=1e-11, epsrel=1e-11)
    return (("G", elbo), ("B", second), ("g", moments["g"][0]), ("A", moments["fs2"][0]),
            ("C", moments["s2"][0]), ("F", moments["f_s2"][0]))


def shifted(moments: dict, shift: float) -> dict:
    """The moments of log p(x, z) + ``shift``: f becomes f + c; the scores and g do not move."""
    m, c = moments, shift
    return {"G": m["G"] + c, "B": m["B"] + 2 * c * m["G"] + c * c, "g": m["g"],
            "A": m["A"] + 2 * c * m["F"] + c * c * m["C"], "C": m["C"], "F": m["F"] + c * m["C"]}


def constant_variance(moments: dict, baseline, num_samples) -> np.ndarray:
    """Per-parameter variance of the K-sample estimate with a constant baseline b (broadcast)."""
    m = moments
    return (m["A"] - 2 * baseline * m["F"] + baseline ** 2 * m["C"] - m["g"] ** 2) / num_samples


def loo_variance(moments: dict, num_samples) -> np.ndarray:
    """Per-parameter variance of ``score_function_loo`` with K = ``num_samples`` >= 2."""
    m, k = moments, np.asarray(num_samples, dtype=float)
    if np.any(k < 2):
        raise ValueError(f"leave-one-out needs num_samples >= 2, got {num_samples}")
    return ((m["A"] - m["g"] ** 2) / k
            + (m["B"] * m["C"] + m["g"] ** 2 + (k - 2) * m["C"] * m["G"] ** 2) / (k * (k - 1))
            - 2 * m["F"] * m["G"] / k)


def trace_optimal_baseline(moments: dict) -> float:
    """b* = sum_p E[f s_p^2] / sum_p E[s_p^2]: the one constant that minimises the total variance."""
    return float(np.sum(moments["F"]) / np.sum(moments["C"]))


def exact_variances(moments: dict, num_samples) -> dict:
    """K x total variance (summed over mu and sigma) against K, for each exact curve.

    Keys: the registry names whose variance is known (``score_function``, ``score_function_loo``),
    and the two constants the adaptive baselines approach: "b = ELBO" (where a moving average
    settles) and "b = b*" (the trace-optimal constant).
    """
    k = np.atleast_1d(np.asarray(num_samples, dtype=float))[:, None]
    best = trace_optimal_baseline(moments)
    curves = {
        "score_function": constant_variance(moments, 0.0, k),
        "score_function_loo": loo_variance(moments, k),
        "b = ELBO": constant_variance(moments, moments["G"], k),
        "b = b*": constant_variance(moments, best, k),
    }
    return {name: (k[:, 0] * value.sum(-1)) for name, value in curves.items()}


# --------------------------------------------------------------------------------------------
# NVIL: an amortised q over many x, and a baseline b(x) of the input
# --------------------------------------------------------------------------------------------


def amortised_model(x: torch.Tensor):
    """The conjugate model for a minibatch ``x`` of shape (B,): z_i ~ N(0, 1), x_i | z_i ~ N(z_i, 1)."""
    from estimators.targets import ConjugateGaussian

    return ConjugateGaussian(x.reshape(-1, 1), torch.zeros(1, dtype=x.dtype))


def exact_amortised_elbo(x: torch.Tensor, weight, bias, log_scale) -> torch.Tensor:
    """ELBO(x_i) of the linear encoder q(z | x) = N(weight x + bias, exp(log_scale)^2), shape (B,).

    Differentiable in the encoder's parameters (the exact gradient) and a quadratic in x: the
    input-dependent baseline NVIL would learn, if it learned perfectly.
    """
    loc = (weight * x + bias).unsqueeze(-1)
    scale = torch.exp(log_scale).expand_as(loc)
    return amortised_model(x).exact_elbo(loc, scale)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

MEASURED = ("score_function", "score_function_ema", "score_function_loo", "score_function_optimal")
# The exact curves: the two estimators whose variance is known, in their own styles, and the two
# constants the adaptive baselines approach, in black and grey (they are not estimators).
_REFERENCES = {"b = ELBO": {"color": "black", "linestyle": "--"},
               "b = b*": {"color": "0.45", "linestyle": "-."}}


def _log_axes(ax, ks):
    """Log-log axes labelled with plain numbers: K at its values, y by the house helper."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.autoscale_view()
    low, high = ax.get_ylim()
    steps = (1, 2, 5) if high / low > 10 else (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 7, 8)
    ticks = [m * 10.0 ** e for e in range(-3, 7) for m in steps if low <= m * 10.0 ** e <= high]
    for axis, where in ((ax.xaxis, ks), (ax.yaxis, ticks)):
        axis.set_major_locator(FixedLocator(where))
        axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        axis.set_minor_locator(NullLocator())


def draw_variance_against_k(measured: dict, offset: float, scale: float):
    """K x total variance against K: exact curves and measured points (±2 s.e.), one panel per
    shift c of log p. ``measured[c][name] = (K array, K x total variance, its s.e.)``."""
    import matplotlib.pyplot as plt

    from experiments.style import estimator_style, legend_handle, rc_context

    base = signal_moments(offset, scale)
    with rc_context():
        fig, axes = plt.subplots(1, len(measured), figsize=(8, 3.7), squeeze=False,
                                 layout="constrained")
        for ax, (shift, rows) in zip(axes[0], measured.items()):
            ks = np.asarray(next(iter(rows.values()))[0], dtype=float)
            grid = np.geomspace(ks.min(), ks.max(), 50)
            curves = exact_variances(shifted(base, shift), grid)
            for key, values in curves.items():
                style = (_REFERENCES[key] if key in _REFERENCES else
                         {k: v for k, v in estimator_style(key).items() if k != "marker"})
                ax.plot(grid, values, linewidth=1.5, **style)
            for i, (name, (k, value, se)) in enumerate(rows.items()):
                style = estimator_style(name)
                ax.errorbar(np.asarray(k) * (1 + 0.05 * (i - 1.5)), value,
                            yerr=2 * np.asarray(se), linestyle="none", marker=style["marker"],
                            markersize=5, color=style["color"], markerfacecolor="white",
                            elinewidth=0.9)
            _log_axes(ax, ks)
            ax.set_xlabel("K, samples per estimate")
            ax.set_ylabel("K × total variance of ∇(μ, σ)")
            moved = shifted(base, shift)
            ax.set_title(f"log p(x, z){f' − {-shift:g}' if shift else ''}: ELBO = {moved['G']:.2f},"
                         f" b* = {trace_optimal_baseline(moved):.2f}", fontsize=9)
        handles = [legend_handle(name, f"{name}: measured ±2 s.e."
                                 + (", exact line" if name in curves else ""),
                                 markerfacecolor="white",
                                 linestyle=estimator_style(name)["linestyle"] if name in curves
                                 else "none")
                   for name in rows]
        from matplotlib.lines import Line2D

        handles += [Line2D([], [], linewidth=1.5, label=f"exact, constant {key}", **style)
                    for key, style in _REFERENCES.items()]
        fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=7.5,
                   frameon=False)
    plt.close(fig)  # a notebook then shows the returned figure once, not again at the cell end
    return fig


def draw_learned_baseline(x, signal, grid, learned, ema_value, exact_elbo):
    """The learning signal f of one sample per data point (``x``, ``signal``) against x, with
    the exact ELBO(x) and the learned b(x) on ``grid``, and the moving average ``ema_value``
    (one number), all in nats."""
    import matplotlib.pyplot as plt

    from experiments.style import color, rc_context

    with rc_context():
        fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
        ax.plot(x, signal, linestyle="none", marker=".", markersize=4, color="0.6",
                label="f = log p(x, z) − log q(z | x), one z per x")
        ax.plot(grid, exact_elbo, color="black", linewidth=2.2, label="exact ELBO(x) = E_q[f]")
        ax.plot(grid, learned, color=color("score_function+nvil"), linestyle="--", linewidth=1.8,
                label="NVIL's learned b(x) (score_function+nvil)")
        ax.axhline(ema_value, color=color("score_function_ema"), linestyle=":", linewidth=1.8,
                   label="moving average, one constant (score_function_ema)")
        ax.set_xlabel("data point x")
        ax.set_ylabel("nats")
        ax.set_title("The level of the learning signal depends on x", fontsize=9)
        ax.legend(fontsize=7.5, frameon=False, loc="lower center")
    plt.close(fig)  # a notebook then shows the returned figure once, not again at the cell end
    return fig
