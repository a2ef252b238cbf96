"""score-forms: the seed's score-function estimator against the form autograd writes.

Seed section 5.1 derives the score-function gradient of the ELBO as E_q[grad_lambda log q(z)
f(z)], f = log p(x, z) - log q(z): the term E_q[grad_lambda log q] of the product rule "disappears"
because it is zero. Differentiating log p - log q through a detached sample (what autograd gives,
:func:`estimators.score_function_autodiff`) keeps it, as -grad_lambda log q(z_k) per sample: the
estimate (f - 1) grad log q, the seed's with a constant baseline b = 1. Both are unbiased; their
variances differ, by

    Var(b) = E[f^2 s^2] - 2 b E[f s^2] + b^2 E[s^2] - g^2,   s = grad_lambda log q, g = E[f s],

so b = 1 has the smaller variance exactly when the optimal constant E[f s^2] / E[s^2] is above
1/2. The study measures both on the conjugate model z ~ N(0, 1), x | z ~ N(z, 1) (posterior
N(x/2, 1/2)), one sample per estimate, with q = N(mu, sigma^2):

* (a, b) the variance of d/dmu and d/dsigma against mu's distance from the posterior mean, for
  sigma = the posterior's (the line passes through the posterior, where f = log p(x) for every z)
  and for a narrower sigma;
* (c) their ratio against a constant c added to log p(x, z) (an unnormalised model: the
  likelihood's constants), at one q: the ordering of the two forms depends on c, since the
  autodiff form is the seed's with a baseline of 1.

Exact curves are one-dimensional integrals (:func:`experiments.quadrature.score_function_moments`,
``scipy.integrate.quad_vec``); points are R independent single-sample estimates of the registry's
``score_function`` and ``score_function_autodiff`` from
:func:`estimators.diagnostics.replicate_gradients`, with standard errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.distributions import Independent, Normal

from estimators import ESTIMATORS
from estimators.diagnostics import gradient_statistics, replicate_gradients
from estimators.targets import ConjugateGaussian

from .common import StudyConfig, progress, save_figure, study_device
from .quadrature import score_function_moments

NAME = "score-forms"
SUMMARY = ("variance of the seed's score function (sec. 5.1) against the autodiff form, exact and "
           "measured, as q moves away from the posterior")
DTYPE = torch.float64
FORMS = {"score_function": 0.0, "score_function_autodiff": 1.0}  # name -> its constant baseline
PARAMETERS = ("loc", "scale")  # mu and sigma
NUM_SAMPLES = 1


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every field can be changed with --set FIELD=VALUE (tuples as comma-separated lists)."""

    x: float = 0.8  # the observation of z ~ N(0, 1), x | z ~ N(z, 1)
    narrow_scale: float = 0.6  # the second line's sigma (the posterior's is sqrt(1/2) = 0.707)
    offset_range: tuple = (-3.0, 3.0)  # mu - posterior mean, in posterior standard deviations
    num_points: int = 9  # offsets with Monte Carlo points, per line
    num_curve_points: int = 121  # offsets of the exact curves
    shift_loc: float = 0.2  # the q of panel (c): N(shift_loc, narrow_scale^2)
    shift_range: tuple = (-4.0, 4.0)  # c added to log p(x, z) in panel (c)
    num_shift_points: int = 5  # values of c with Monte Carlo points
    num_replicates: int = 100000  # R: independent single-sample estimates per point
    chunk: int = 50000  # replicates per vectorised pass

    # CPU only (a 1-D model, scipy quadrature): --device cuda is refused before any work
    DEVICES = ("cpu",)

    @classmethod
    def quick(cls) -> "Config":
        return cls(quick=True, num_replicates=20000, num_points=5, num_curve_points=41)

    def __post_init__(self):
        problems = []
        if not self.narrow_scale > 0:
            problems.append(f"narrow_scale must be > 0, got {self.narrow_scale}")
        for name in ("offset_range", "shift_range"):
            low_high = getattr(self, name)
            if len(low_high) != 2 or not low_high[0] < low_high[1]:
                problems.append(f"{name} must be two increasing numbers, got {low_high}")
        if self.num_replicates < 2:
            problems.append(f"num_replicates must be >= 2, got {self.num_replicates}")
        if min(self.num_points, self.num_shift_points) < 1 or self.num_curve_points < 2:
            problems.append("num_points and num_shift_points must be >= 1, num_curve_points >= 2")
        if self.chunk < 2:
            problems.append(f"chunk must be >= 2, got {self.chunk}")
        if problems:
            raise SystemExit("error: score-forms: " + "; ".join(problems))


class ShiftedModel:
    """log p(x, z) + c: the same posterior, an evidence shifted by c (constants of a likelihood)."""

    def __init__(self, model, shift):
        self.model, self.shift = model, shift

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.log_joint(z) + self.shift


def conjugate_model(config: Config) -> ConjugateGaussian:
    return ConjugateGaussian(torch.tensor([config.x], dtype=DTYPE), torch.zeros(1, dtype=DTYPE))


def posterior(config: Config) -> tuple[float, float]:
    """(mean, standard deviation) of p(z | x): N(x / 2, 1 / 2)."""
    q = conjugate_model(config).posterior()
    return q.base_dist.loc.item(), q.base_dist.scale.item()


def exact_variances(log_joint, loc, scale, shifts=(0.0,)) -> dict:
    """{form: (P, 2) single-sample variance of (d/dmu, d/dsigma)}, plus the gradient, by quadrature.

    With several ``shifts`` c (log p + c), P = len(loc) x len(shifts), shift-major: f + c with
    baseline b is f with baseline b - c, so one quadrature serves every c.
    """
    moments = score_function_moments(log_joint, loc, scale)
    g = moments["g"]
    shifts = np.asarray(shifts, float).reshape(-1, 1, 1)
    out = {"gradient": np.tile(g, (len(shifts), 1))}
    for name, baseline in FORMS.items():
        b = baseline - shifts
        variance = moments["fs2"] - 2 * b * moments["f_s2"] + b ** 2 * moments["s2"] - g ** 2
        out[name] = variance.reshape(-1, 2)
    return out


def measure(name: str, model, loc: np.ndarray, scale: float, config: Config,
            exact_gradient: np.ndarray, bar=None) -> dict:
    """Variance and mean, with standard errors, of R single-sample estimates at each (loc, scale)."""
    loc = np.asarray(loc, dtype=float)
    start = {"loc": torch.tensor(loc, dtype=DTYPE).reshape(-1, 1),
             "scale": torch.full((loc.size, 1), float(scale), dtype=DTYPE)}

    def build(lam, theta):
        return model, Independent(Normal(lam["loc"], lam["scale"]), 1)

    grads = replicate_gradients(ESTIMATORS[name], build, start, num_replicates=config.num_replicates,
                                num_samples=NUM_SAMPLES, chunk=config.chunk,
                                on_chunk=None if bar is None else bar.update)
    row = {}
    for i, p in enumerate(PARAMETERS):
        stats = gradient_statistics(grads.lambda_[p].squeeze(-1), torch.as_tensor(exact_gradient[:, i]))
        row[p] = {"variance": stats.variance, "variance_se": stats.variance_se,
                  "mean": stats.mean, "mean_se": stats.mean_se, "bias_z": stats.z}
    return row


def _grid(low_high, count):
    return np.linspace(low_high[0], low_high[1], count)


def run(config: Config, paths) -> dict:
    study_device(config, NAME)  # refuses, in one line, any device but the CPU
    model = conjugate_model(config)
    mean, sd = posterior(config)
    lines = {"posterior": sd, "narrow": config.narrow_scale}
    total = len(FORMS) * config.num_replicates * (len(lines) + 1)  # the shifts' bar moves once
    out = {"x": config.x, "posterior_loc": mean, "posterior_scale": sd,
           "num_replicates": config.num_replicates, "lines": {}}
    with progress(total=total, desc=NAME, unit="replicate") as bar:
        for line, scale in lines.items():
            curve = _grid(config.offset_range, config.num_curve_points)
            points = _grid(config.offset_range, config.num_points)
            exact_curve = exact_variances(model.log_joint, mean + sd * curve, scale)
            exact_points = exact_variances(model.log_joint, mean + sd * points, scale)
            out["lines"][line] = {
                "scale": scale, "offset_curve": curve, "offset_points": points,
                "exact_curve": exact_curve, "exact_points": exact_points,
                "measured": {name: measure(name, model, mean + sd * points, scale, config,
                                           exact_points["gradient"], bar) for name in FORMS},
            }
        # Panel (c): shifts of log p at one q, one model per shift.
        curve = _grid(config.shift_range, config.num_curve_points)
        points = _grid(config.shift_range, config.num_shift_points)

        def exact_at(shifts):
            return exact_variances(model.log_joint, config.shift_loc, config.narrow_scale, shifts)

        exact_points = exact_at(points)
        measured = {name: {p: {} for p in PARAMETERS} for name in FORMS}
        for name in FORMS:
            per_shift = [measure(name, ShiftedModel(model, c), np.array([config.shift_loc]),
                                 config.narrow_scale, config, exact_points["gradient"][i:i + 1])
                         for i, c in enumerate(points)]
            bar.update(config.num_replicates)
            for p in PARAMETERS:
                for key in per_shift[0][p]:
                    measured[name][p][key] = torch.cat([row[p][key] for row in per_shift])
        out["shift"] = {"loc": config.shift_loc, "scale": config.narrow_scale,
                        "shift_curve": curve, "shift_points": points,
                        "exact_curve": exact_at(curve), "exact_points": exact_points,
                        "measured": measured}
    return out


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

_PARAM_LABEL = {"loc": "μ", "scale": "σ"}
_LINE_STYLE = {"posterior": "-", "narrow": "--"}


def plot(results: dict, results_path, paths) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .style import estimator_style, plain_log_ticks, rc_context

    data = results["data"]
    with rc_context():
        fig, axes = plt.subplots(1, 3, figsize=(10.4, 4.1), layout="constrained")
        for ax, (i, p) in zip(axes[:2], enumerate(PARAMETERS)):
            for line, part in data["lines"].items():
                for name in FORMS:
                    style = estimator_style(name)
                    ax.plot(part["offset_curve"], np.asarray(part["exact_curve"][name])[:, i],
                            color=style["color"], linestyle=_LINE_STYLE[line], linewidth=1.4)
                    row = part["measured"][name][p]
                    ax.errorbar(part["offset_points"], row["variance"],
                                yerr=2 * np.asarray(row["variance_se"]), linestyle="none",
                                marker=style["marker"], markersize=4.5, color=style["color"],
                                markerfacecolor="white", capsize=2, elinewidth=0.9)
            ax.axvline(0.0, color="0.6", linewidth=0.8)
            ax.set_yscale("log")
            ax.set_xlabel("(μ − posterior mean) / posterior s.d.")
            ax.set_ylabel(f"Var[∂/∂{_PARAM_LABEL[p]} estimate], one sample")
            ax.set_title(f"({'ab'[i]}) gradient with respect to {_PARAM_LABEL[p]}")
        # (c) the ratio against a shift of log p
        ax = axes[2]
        part = data["shift"]
        for i, p in enumerate(PARAMETERS):
            ratio = (np.asarray(part["exact_curve"]["score_function_autodiff"])[:, i]
                     / np.asarray(part["exact_curve"]["score_function"])[:, i])
            ax.plot(part["shift_curve"], ratio, color="black",
                    linestyle="-" if p == "loc" else "--", linewidth=1.4,
                    label=f"∂/∂{_PARAM_LABEL[p]}, exact")
            seed = part["measured"]["score_function"][p]
            autodiff = part["measured"]["score_function_autodiff"][p]
            a, b = np.asarray(autodiff["variance"]), np.asarray(seed["variance"])
            se = (a / b) * np.hypot(np.asarray(autodiff["variance_se"]) / a,
                                    np.asarray(seed["variance_se"]) / b)
            ax.errorbar(part["shift_points"], a / b, yerr=2 * se, linestyle="none",
                        marker="o" if p == "loc" else "s", color="black", markerfacecolor="white",
                        markersize=4.5, capsize=2, label=f"∂/∂{_PARAM_LABEL[p]}, measured ±2 s.e.")
        ax.axhline(1.0, color="0.6", linewidth=0.8)
        ax.set_yscale("log")
        plain_log_ticks(ax)  # 0.2 ... 5, not 2×10⁻¹ ... 6×10⁰
        ax.set_xlabel("c added to log p(x, z)")
        ax.set_ylabel("variance ratio, one sample:\nscore_function_autodiff / score_function")
        ax.set_title(f"(c) ratio at q = N({part['loc']:g}, {part['scale']:g}²)")
        ax.legend(fontsize=7.5, frameon=False)
        handles = [Line2D([], [], color=estimator_style(n)["color"],
                          marker=estimator_style(n)["marker"], markerfacecolor="white",
                          linestyle="none", label=n) for n in FORMS]
        handles += [Line2D([], [], color="0.3", linestyle=_LINE_STYLE["posterior"],
                           label=f"σ = posterior s.d. ({data['posterior_scale']:.3g}): through "
                                 "the posterior at 0"),
                    Line2D([], [], color="0.3", linestyle=_LINE_STYLE["narrow"],
                           label=f"σ = {data['lines']['narrow']['scale']:g}")]
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
        fig.suptitle(f"z ~ N(0, 1), x | z ~ N(z, 1), x = {data['x']:g}; q = N(μ, σ²), K = 1\n"
                     f"lines: exact (quadrature); points: R = {data['num_replicates']:,} "
                     "estimates, ±2 s.e.; colour and marker: the estimator, line style: σ",
                     fontsize=10)
        return save_figure(fig, paths, NAME, results_path, "experiments/score_forms.py")


# --------------------------------------------------------------------------------------------
# Key numbers
# --------------------------------------------------------------------------------------------


def agreement(row: dict, exact: np.ndarray) -> np.ndarray:
    """z of the measured variances against the exact ones."""
    return (np.asarray(row["variance"]) - exact) / np.asarray(row["variance_se"])


def summary(results: dict) -> str:
    data = results["data"]
    lines = [f"score-forms ({results['metadata']['wall_seconds']:.0f} s; K = 1; posterior "
             f"N({data['posterior_loc']:.3g}, {data['posterior_scale']:.3g}²); variance of one "
             "estimate: measured ± s.e. [exact]; max |z| over all points)"]
    worst = 0.0
    for line, part in data["lines"].items():
        offsets = np.asarray(part["offset_points"])
        picks = [0, len(offsets) // 2, len(offsets) - 1]
        lines.append(f"sigma = {part['scale']:.3g}, offsets {', '.join(f'{offsets[i]:+.2g}' for i in picks)}")
        for i, p in enumerate(PARAMETERS):
            for name in FORMS:
                row = part["measured"][name][p]
                exact = np.asarray(part["exact_points"][name])[:, i]
                z = np.abs(agreement(row, exact)).max()
                worst = max(worst, z)
                cells = "  ".join(f"{row['variance'][j]:8.4g} ± {row['variance_se'][j]:<7.2g}"
                                  f"[{exact[j]:.4g}]" for j in picks)
                lines.append(f"  d/d{_PARAM_LABEL[p]} {name:24s} {cells}  max|z| {z:.1f}")
    part = data["shift"]
    lines.append(f"q = N({part['loc']:g}, {part['scale']:g}^2), log p + c; variance ratio "
                 "autodiff / seed, exact at c = " + ", ".join(f"{c:g}" for c in part["shift_points"]))
    for i, p in enumerate(PARAMETERS):
        ratio = (np.asarray(part["exact_points"]["score_function_autodiff"])[:, i]
                 / np.asarray(part["exact_points"]["score_function"])[:, i])
        lines.append(f"  d/d{_PARAM_LABEL[p]} " + "  ".join(f"{r:.3g}" for r in ratio))
        for name in FORMS:
            z = np.abs(agreement(part["measured"][name][p],
                                 np.asarray(part["exact_points"][name])[:, i])).max()
            worst = max(worst, z)
    lines.append(f"largest |z| of measured against exact variances: {worst:.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Print the key numbers of saved results: ``python -m experiments.MODULE [RESULTS]``."""
    from .common import summary_main

    return summary_main(NAME, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())
