"""Tutorial 2: latent variables, the ELBO and its gap (seed sections 2 and 3).

Three models whose log p(x) is known exactly, so that log p(x) = ELBO(q) + KL(q || p(z|x))
(seed eqs. 2-3) can be checked term by term:

- the discrete mixture of seed section 2, p(x) = sum_k pi_k N(x; mu_k, sigma_k^2), with the
  component k as the latent: every expectation is a finite sum;
- the conjugate Gaussian model z ~ N(0, 1), x | z ~ N(z, s^2)
  (:class:`estimators.targets.ConjugateGaussian`): ELBO, posterior and evidence in closed form;
- a Gaussian likelihood under the *mixture* prior of tutorial 1, :class:`MixturePrior`:
  evidence and posterior in closed form (a mixture again), but the ELBO of a Gaussian q and its
  KL to the posterior are not, so both come from quadrature, each of its own integrand:
  adaptive (:func:`scipy.integrate.quad_vec`) for the checks, the trapezoid rule on a fine grid
  for whole curves at once (the two agree to 1e-9, tested). No Gaussian q reaches the bimodal
  posterior, so the gap stays above zero.

The slider's curves (ELBO against the mean of q, at the scale of q the slider sets) are
computed once for every scale the slider offers and kept (:func:`_mixture_table`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from scipy import integrate
from torch.distributions import (Categorical, Independent, MixtureSameFamily, Normal,
                                 kl_divergence)

from estimators import ESTIMATORS
from estimators.targets import ConjugateGaussian

from . import register

__all__ = ["CONJUGATE", "MIXTURE", "SECTION_TWO", "conjugate_model", "MixturePrior",
           "mixture_model", "discrete_elbo", "discrete_log_evidence", "discrete_posterior",
           "gaussian_q", "exact_elbo", "kl_to_posterior", "monte_carlo_elbo", "best_gaussian",
           "draw_discrete", "draw_elbo_gap", "ELBO_GAP"]

DTYPE = torch.float64

# z ~ N(0, 1), x | z ~ N(z, 0.5^2), x = 1.5: posterior N(1.2, 0.447^2).
CONJUGATE = {"observation": 1.5, "noise_scale": 0.5}
# x | z ~ N(z, 1), under tutorial 1's mixture as the prior of z.
MIXTURE = {"weights": (0.3, 0.7), "locs": (-2.0, 1.0), "scales": (0.6, 1.0),
           "noise_scale": 1.0, "observation": -1.0}
# Seed section 2: a mixture of Gaussians for x itself, the component k the latent variable.
SECTION_TWO = {"weights": (0.3, 0.7), "locs": (-2.0, 1.0), "scales": (0.6, 1.0),
               "observation": -1.0}


def conjugate_model() -> ConjugateGaussian:
    """The conjugate Gaussian model of :data:`CONJUGATE`, D = 1, float64."""
    return ConjugateGaussian(torch.tensor([CONJUGATE["observation"]], dtype=DTYPE),
                             torch.zeros(1, dtype=DTYPE), 1.0, CONJUGATE["noise_scale"])


class MixturePrior:
    """z ~ sum_k pi_k N(m_k, t_k^2), x | z ~ N(z, s^2), x observed: D = 1.

    Both integrals the seed calls intractable have closed forms here, by the law of total
    probability over the component k: p(x) = sum_k pi_k N(x; m_k, t_k^2 + s^2), and p(z | x) is
    the mixture of the K conjugate posteriors, weighted by each component's share of p(x).
    """

    def __init__(self, weights, locs, scales, noise_scale, observation):
        as64 = lambda value: torch.as_tensor(value, dtype=DTYPE)  # noqa: E731
        self.weights, self.locs, self.scales = as64(weights), as64(locs), as64(scales)
        self.noise_scale, self.x = as64(noise_scale), as64([observation])
        # Components with event shape (1,), so that the mixture has q's event shape (D,) = (1,).
        components = Independent(Normal(self.locs[:, None], self.scales[:, None]), 1)
        self.prior = MixtureSameFamily(Categorical(probs=self.weights), components)

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        return Normal(z, self.noise_scale).log_prob(self.x).sum(-1)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(z) + self.log_likelihood(z)

    def _components(self):
        marginal = Normal(self.locs, (self.scales ** 2 + self.noise_scale ** 2).sqrt())
        return self.weights.log() + marginal.log_prob(self.x)  # log pi_k p(x | k), (K,)

    def log_evidence(self) -> torch.Tensor:
        return torch.logsumexp(self._components(), -1)

    def posterior(self):
        precision = self.scales ** -2 + self.noise_scale ** -2
        locs = (self.locs * self.scales ** -2 + self.x * self.noise_scale ** -2) / precision
        return MixtureSameFamily(Categorical(logits=self._components()),
                                 Independent(Normal(locs[:, None], precision.rsqrt()[:, None]), 1))


def mixture_model() -> MixturePrior:
    return MixturePrior(**MIXTURE)


# ----------------------------------------------------------------------------------------------
# Seed section 2: the discrete latent k, where every expectation is a finite sum
# ----------------------------------------------------------------------------------------------


def _section_two_joint() -> torch.Tensor:
    """log p(x, k) = log pi_k + log N(x; mu_k, sigma_k^2) for each component k, (K,)."""
    weights, locs, scales = (torch.as_tensor(SECTION_TWO[k], dtype=DTYPE)
                             for k in ("weights", "locs", "scales"))
    return weights.log() + Normal(locs, scales).log_prob(
        torch.tensor(SECTION_TWO["observation"], dtype=DTYPE))


def discrete_log_evidence() -> float:
    """log p(x) of section 2's mixture, by torch's MixtureSameFamily."""
    weights, locs, scales = (torch.as_tensor(SECTION_TWO[k], dtype=DTYPE)
                             for k in ("weights", "locs", "scales"))
    mixture = MixtureSameFamily(Categorical(probs=weights), Normal(locs, scales))
    return float(mixture.log_prob(torch.tensor(SECTION_TWO["observation"], dtype=DTYPE)))


def discrete_posterior() -> Categorical:
    """p(k | x) by Bayes' rule: the responsibilities of the components."""
    return Categorical(logits=_section_two_joint())


def discrete_elbo(q_first) -> np.ndarray:
    """sum_k q_k [log p(x, k) - log q_k] for q = (q_first, 1 - q_first), an array of q_first."""
    q_first = np.asarray(q_first, dtype=float)
    probs = torch.as_tensor(np.stack([q_first, 1 - q_first], -1), dtype=DTYPE)
    q = Categorical(probs=probs)
    return (probs * _section_two_joint()).sum(-1).numpy() + q.entropy().numpy()


# ----------------------------------------------------------------------------------------------
# Gaussian q on the continuous models: exact ELBO and KL, and the Monte Carlo estimate
# ----------------------------------------------------------------------------------------------


def gaussian_q(loc, scale) -> Independent:
    """q = N(loc, scale^2) with event shape (1,); loc and scale broadcast to its batch shape."""
    loc, scale = torch.broadcast_tensors(torch.as_tensor(loc, dtype=DTYPE),
                                         torch.as_tensor(scale, dtype=DTYPE))
    return Independent(Normal(loc.unsqueeze(-1), scale.unsqueeze(-1)), 1)


def _standardised(function, loc, scale):
    """function(loc + scale * e) as a function of the standard noise e, for arrays loc, scale."""
    loc, scale = np.broadcast_arrays(np.asarray(loc, float), np.asarray(scale, float))
    loc_t, scale_t = torch.from_numpy(loc.copy()), torch.from_numpy(scale.copy())

    def at(e):
        with torch.no_grad():
            return function((loc_t.unsqueeze(-1) + scale_t.unsqueeze(-1) * e).unsqueeze(-1))

    return at


def _gaussian_expectation(function, loc, scale) -> np.ndarray:
    """E_{z ~ N(loc, scale^2)}[function(z)] for arrays of loc and scale, by adaptive quadrature
    (one :func:`scipy.integrate.quad_vec` call over the standard noise e, z = loc + scale * e,
    so that one integration variable serves every q at once)."""
    at = _standardised(function, loc, scale)

    def integrand(e):
        e_t = torch.tensor([e], dtype=DTYPE)
        return (at(e_t)[..., 0] * math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)).numpy()

    value, _ = integrate.quad_vec(integrand, -40.0, 40.0, epsabs=1e-13, epsrel=1e-12,
                                  points=[0.0], limit=400)
    return value


# A uniform grid in z for the fast route: the trapezoid rule on a smooth integrand that vanishes
# at both ends converges faster than any power of the spacing, so spacing 0.01 leaves errors far
# below 1e-9 for every q the slider offers (checked against quad_vec in the tests; a Gauss-Hermite
# rule of even 300 points errs by 2e-5 at the widest q, where log p(x, z) bends from one
# component's quadratic to the other's). log p(x, z) is evaluated on the grid once per call and
# every q is then one row of a matrix product: a whole grid of q's at once.
_Z = np.linspace(-45.0, 45.0, 9001)


def _on_grid(function, loc, scale) -> np.ndarray:
    loc, scale = np.broadcast_arrays(np.asarray(loc, float), np.asarray(scale, float))
    with torch.no_grad():
        values = function(torch.from_numpy(_Z).unsqueeze(-1)).numpy()
    weights = np.exp(-0.5 * ((_Z - loc[..., None]) / scale[..., None]) ** 2) / (
        scale[..., None] * math.sqrt(2 * math.pi))
    return (weights * values).sum(-1) * (_Z[1] - _Z[0])


def exact_elbo(model, loc, scale, method: str = "grid") -> np.ndarray:
    """The ELBO of q = N(loc, scale^2), arrays of loc and scale (broadcast).

    The conjugate model's in closed form (``model.exact_elbo``); otherwise E_q[log p(x, z)] by
    quadrature (``method`` "grid", the trapezoid rule on a fine grid, fast and vectorised, or
    "adaptive", scipy's quad_vec) plus the entropy of q in closed form.
    """
    if hasattr(model, "exact_elbo"):
        loc_t, scale_t = torch.broadcast_tensors(torch.as_tensor(loc, dtype=DTYPE),
                                                 torch.as_tensor(scale, dtype=DTYPE))
        return model.exact_elbo(loc_t.unsqueeze(-1), scale_t.unsqueeze(-1)).numpy()
    integrate_q = _gaussian_expectation if method == "adaptive" else _on_grid
    expected = integrate_q(model.log_joint, loc, scale)
    return expected + gaussian_q(loc, scale).entropy().numpy()


def kl_to_posterior(model, loc, scale, method: str = "grid") -> np.ndarray:
    """KL(q || p(z | x)) for q = N(loc, scale^2): torch's KL registry where it has the pair
    (a Gaussian posterior), else E_q[log q(z) - log p(z | x)] by quadrature (``method`` as in
    :func:`exact_elbo`)."""
    q, posterior = gaussian_q(loc, scale), model.posterior()
    try:
        return kl_divergence(q, posterior).numpy()
    except NotImplementedError:  # (Normal, mixture): no closed form
        pass
    negative_entropy = -q.entropy().numpy()
    integrate_q = _gaussian_expectation if method == "adaptive" else _on_grid
    return negative_entropy - integrate_q(posterior.log_prob, loc, scale)


def monte_carlo_elbo(model, locs, scale, num_replicates: int, seed: int = 0):
    """The registry's ``pathwise`` one-sample ELBO estimate, ``num_replicates`` times at each
    mean in ``locs``: (mean, standard error) arrays. The replicates are a batch dimension of q."""
    locs = torch.as_tensor(locs, dtype=DTYPE)
    q = gaussian_q(locs.expand(num_replicates, -1), scale)
    torch.manual_seed(seed)
    with torch.no_grad():
        values = ESTIMATORS["pathwise"](model, q, num_samples=1).elbo  # (R, len(locs))
    return values.mean(0).numpy(), (values.std(0) / math.sqrt(num_replicates)).numpy()


def best_gaussian(model) -> tuple[float, float, float]:
    """The Gaussian q of largest ELBO: (loc, scale, gap = log p(x) - ELBO), by scipy's
    L-BFGS-B on the exact ELBO over (loc, log scale), started at the moments of the posterior."""
    from scipy import optimize

    posterior = model.posterior()
    start = [float(posterior.mean.squeeze()), math.log(float(posterior.stddev.squeeze()))]
    result = optimize.minimize(lambda p: -float(exact_elbo(model, p[0], math.exp(p[1]))), start,
                               method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-10})
    loc, scale = float(result.x[0]), math.exp(result.x[1])
    return loc, scale, float(model.log_evidence()) + float(result.fun)


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------

SCALES = [0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2, 3.0]
LOCS = [round(float(v), 1) + 0.0 for v in np.arange(-3.0, 3.01, 0.2)]  # + 0.0: no "-0"
_LOCS = np.linspace(-4.0, 4.0, 401)  # the exact curves' grid: points of _Z, spacing 0.02
_MC_LOCS = np.linspace(-3.0, 3.0, 9)
MC_REPLICATES = 200


@lru_cache(maxsize=1)
def _mixture_table() -> np.ndarray:
    """The mixture-prior model's exact ELBO on (slider scales) x (curve grid), computed once.

    At a fixed scale, E_q[log p(x, z)] as a function of the mean of q is the convolution of
    log p(x, z) with a Gaussian kernel, so each row is one FFT convolution (numpy.fft) of the
    same trapezoid sums :func:`exact_elbo` takes.
    """
    model = mixture_model()
    with torch.no_grad():
        values = model.log_joint(torch.from_numpy(_Z).unsqueeze(-1)).numpy()
    step = _Z[1] - _Z[0]
    columns = np.rint((_LOCS - _Z[0]) / step).astype(int)
    # The kernel on the grid's own offsets, wrapped around (zero-padded to twice the length so
    # that nothing wraps into the curve): row[i] = sum_j values[j] kernel(z_i - z_j).
    size = 2 * len(_Z)
    offsets = step * np.fft.fftfreq(size, d=1.0 / size)
    transformed = np.fft.rfft(values, size)
    rows = []
    for scale in SCALES:
        kernel = np.exp(-0.5 * (offsets / scale) ** 2) * step / (scale * math.sqrt(2 * math.pi))
        rows.append(np.fft.irfft(transformed * np.fft.rfft(kernel), size)[columns])
    entropy = gaussian_q(0.0, np.asarray(SCALES)).entropy().numpy()
    return np.asarray(rows) + entropy[:, None]


def draw_discrete():
    """Section 2: the ELBO of a two-point q(k) against q(k = 1), with log p(x) and the posterior."""
    import matplotlib.pyplot as plt

    grid = np.linspace(0.001, 0.999, 500)
    evidence = discrete_log_evidence()
    responsibility = float(discrete_posterior().probs[0])
    fig, ax = plt.subplots(figsize=(7.0, 3.6), constrained_layout=True)
    ax.plot(grid, discrete_elbo(grid), color="black", linewidth=2,
            label="ELBO(q), exact sum over k")
    ax.axhline(evidence, color="#d62728", linestyle="--",
               label=f"log p(x) = {evidence:.4f} (law of total probability)")
    ax.axvline(responsibility, color="0.5", linestyle=":",
               label=f"posterior p(k = 1 | x) = {responsibility:.3f}")
    ax.set_xlabel("q(k = 1), the probability q gives the first component")
    ax.set_ylabel("nats")
    ax.set_ylim(evidence - 2.0, evidence + 0.3)
    ax.set_title(f"Seed section 2: x = {SECTION_TWO['observation']:g}, latent k ∈ {{1, 2}}; "
                 "the gap is KL(q ‖ p(k | x))", fontsize=10)
    ax.legend(loc="lower center", fontsize=8)
    return fig


Q_COLOR = "#08519c"  # q itself: a colour no estimator of the registry has


def draw_elbo_gap(model: str = "conjugate Gaussian", scale: float = 0.45, loc: float = 0.0):
    """Left: q against the exact posterior. Right: the exact ELBO against the mean of q at this
    scale, log p(x) above it, the gap at this q, and pathwise estimates with ±2 s.e. bars."""
    import matplotlib.pyplot as plt

    chosen = conjugate_model() if model == "conjugate Gaussian" else mixture_model()
    evidence = float(chosen.log_evidence())
    if model == "conjugate Gaussian":
        curve = exact_elbo(chosen, _LOCS, scale)
    else:
        curve = _mixture_table()[SCALES.index(scale)]
    here = float(exact_elbo(chosen, loc, scale))
    kl = float(kl_to_posterior(chosen, loc, scale))
    mean, se = monte_carlo_elbo(chosen, _MC_LOCS, scale, MC_REPLICATES)

    # A fixed layout: constrained_layout would measure every label again at each move.
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.7),
                                      gridspec_kw={"width_ratios": [1, 1.25]})
    fig.subplots_adjust(left=0.07, right=0.985, bottom=0.13, top=0.9, wspace=0.22)
    z = torch.linspace(-5, 5, 400, dtype=DTYPE).unsqueeze(-1)
    posterior_density = chosen.posterior().log_prob(z).exp()
    q_density = gaussian_q(loc, scale).log_prob(z).exp()
    left.fill_between(z[:, 0], posterior_density, color="0.8", label="posterior p(z | x), exact")
    left.plot(z[:, 0], q_density, color=Q_COLOR, linewidth=2, label=f"q = N({loc:g}, {scale:g}²)")
    left.set_xlabel("z")
    left.set_ylabel("density")
    left.set_ylim(0, 1.1 * max(float(posterior_density.max()), float(q_density.max())))
    left.set_title(f"KL(q ‖ p(z | x)) = {kl:.3f} nats", fontsize=10)
    left.legend(loc="upper left", fontsize=8)

    right.plot(_LOCS, curve, color="black", linewidth=2, label=f"ELBO(q), exact, σ_q = {scale:g}")
    right.axhline(evidence, color="#d62728", linestyle="--", label=f"log p(x) = {evidence:.3f}")
    right.errorbar(_MC_LOCS, mean, yerr=2 * se, color=ESTIMATOR_COLOR, linestyle="none",
                   marker="o", markersize=4, capsize=2,
                   label=f"pathwise: mean of {MC_REPLICATES} one-sample estimates, ±2 s.e.")
    right.annotate("", xy=(loc, here), xytext=(loc, evidence),
                   arrowprops={"arrowstyle": "<->", "color": Q_COLOR})
    right.plot([loc], [here], marker="o", color=Q_COLOR, markersize=7)
    right.annotate(f"gap = {evidence - here:.3f}", (loc, max(here, evidence - 7)),
                   xytext=(8, -10), textcoords="offset points", color=Q_COLOR, fontsize=9,
                   va="top")
    right.set_ylim(evidence - 7, evidence + 2.4)
    right.set_xlim(_LOCS[0], _LOCS[-1])
    right.set_xlabel("μ_q, the mean of q")
    right.set_ylabel("nats")
    right.set_title(f"{model}: ELBO(q) + KL = log p(x)", fontsize=10)
    right.legend(loc="upper center", fontsize=7.5)
    return fig


def _estimator_color() -> str:
    from experiments.style import color

    return color("pathwise")


ESTIMATOR_COLOR = _estimator_color()

ELBO_GAP = register("elbo-gap", draw_elbo_gap,
                    "the model, and the scale and mean of the Gaussian q",
                    start={"model": "conjugate Gaussian", "scale": 0.45, "loc": 0.0},
                    model=["conjugate Gaussian", "mixture prior"], scale=SCALES, loc=LOCS)
