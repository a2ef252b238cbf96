"""Tutorial 9: a VAE on MNIST (seed sections 4, 5 and 7) and the single bit of Shu (2017).

The MNIST parts of the tutorial train in the page itself; this module holds their figures and
the single-bit control. The single bit: x is D noisy copies of one fair bit, each flipped with
probability ``BIT_FLIP``; the VAE has a 1-D latent z ~ N(0, 1), a decoder p(x_d = 1 | z) =
sigmoid(g(z)) shared by the D copies (they are exchangeable; g a small tanh network) and a
Gaussian encoder. With a shared decoder the posterior p(z | x) depends on x only through the
number of ones m, so the encoder is a table: one (mu_m, sigma_m) per m = 0..D, the most flexible
Gaussian encoder there is. The expectation over x is then an exact sum over m with the
binomial-mixture weights p(m); only z is sampled, by the registry's ``pathwise_analytic_kl``
(seed eq. 6). Every D of the slider trains at once (a batch dimension), once, and is kept; the
trained models are then scored exactly, E_q[log p(x | z)] and log p_theta(x) by adaptive
quadrature over z.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

import numpy as np
import torch
from scipy import integrate, stats
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from estimators import ESTIMATORS
from estimators.base import set_validation, validation_enabled

from . import register

__all__ = ["BIT_FLIP", "COPIES", "count_probabilities", "data_entropy", "BitModel",
           "train_single_bit", "draw_single_bit", "draw_images", "draw_training", "SINGLE_BIT"]

BIT_FLIP = 0.1
COPIES = [1, 2, 3, 4, 6, 8, 12, 16]
BIT_HIDDEN = 16
# Adam steps of the single-bit VAEs: what the page's smoke mode ("CI" set, as in the tutorials)
# affords, or enough for the numbers to settle (to about 0.01 nats).
BIT_STEPS = 150 if "CI" in os.environ else 1000
BIT_SAMPLES = 8
DTYPE = torch.float64


def count_probabilities(copies: int, flip: float | None = None) -> np.ndarray:
    """p(m), m = 0..copies: the number of ones among D noisy copies of a fair bit, a mixture
    of Binomial(D, flip) (the bit is 0) and Binomial(D, 1 - flip) (the bit is 1); flip
    defaults to BIT_FLIP, read at the call, so that a reader who edits it gets the new data."""
    flip = BIT_FLIP if flip is None else flip
    counts = np.arange(copies + 1)
    return 0.5 * (stats.binom.pmf(counts, copies, flip) + stats.binom.pmf(counts, copies, 1 - flip))


def data_entropy(copies: int, flip: float | None = None) -> float:
    """H(x) in nats: each of the C(D, m) patterns with m ones has probability p(m) / C(D, m)."""
    counts = np.arange(copies + 1)
    p_count = count_probabilities(copies, flip)
    log_pattern = np.log(p_count) - (math.lgamma(copies + 1) - np.array(
        [math.lgamma(m + 1) + math.lgamma(copies - m + 1) for m in counts]))
    return float(-(p_count * log_pattern).sum())


class BitModel(nn.Module):
    """The decoders of every D at once: parameters with a leading dimension len(copies).

    As a model of seed eq. (6): ``prior`` N(0, 1) and ``log_likelihood(z)`` = m log sigmoid(g(z))
    + (D - m) log sigmoid(-g(z)) for z of shape (S, len(copies), Dmax + 1, 1), row m of each D
    being the count of ones it scores.
    """

    def __init__(self, copies, hidden: int = BIT_HIDDEN, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        size, top = len(copies), max(copies)
        self.register_buffer("dims", torch.tensor(copies, dtype=DTYPE)[:, None])
        self.register_buffer("counts", torch.arange(top + 1, dtype=DTYPE))

        def draw(*shape, scale=1.0):
            return nn.Parameter(scale * torch.randn(*shape, generator=generator, dtype=DTYPE))

        self.w1, self.b1 = draw(size, hidden), draw(size, hidden, scale=0.5)
        self.w2, self.b2 = draw(size, hidden, scale=hidden ** -0.5), draw(size, scale=0.0)
        # The encoder's table: one (mu, log sigma) per D and count m (rows m > D unused).
        self.loc = draw(size, top + 1, scale=0.1)
        self.log_scale = nn.Parameter(torch.full((size, top + 1), -1.0, dtype=DTYPE))
        zeros = torch.zeros(size, top + 1, 1, dtype=DTYPE)
        self.prior = Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def logit(self, z: torch.Tensor) -> torch.Tensor:
        """g(z) of each D's decoder; z (..., len(copies), M, 1) -> (..., len(copies), M)."""
        hidden = torch.tanh(z * self.w1[:, None, :] + self.b1[:, None, :])
        return (hidden * self.w2[:, None, :]).sum(-1) + self.b2[:, None]

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        logit = self.logit(z)
        return (self.counts * nn.functional.logsigmoid(logit)
                + (self.dims - self.counts) * nn.functional.logsigmoid(-logit))

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(z) + self.log_likelihood(z)

    def posterior(self) -> Independent:
        return Independent(Normal(self.loc[..., None], self.log_scale.exp()[..., None]), 1)


def _weights(copies, flip: float) -> torch.Tensor:
    """p(m) for each D, zero-padded to Dmax + 1: (len(copies), Dmax + 1)."""
    top = max(copies)
    rows = [np.pad(count_probabilities(d, flip), (0, top - d)) for d in copies]
    return torch.tensor(np.array(rows), dtype=DTYPE)


def _expect_over_q(function, model: BitModel) -> np.ndarray:
    """E_{q_m}[function(z)] for every (D, m), by adaptive quadrature over the standard noise."""
    loc, scale = model.loc.detach(), model.log_scale.exp().detach()

    def integrand(e):
        with torch.no_grad():
            value = function((loc + scale * e)[None, ..., None])[0]
        return value.numpy() * math.exp(-0.5 * e * e) / math.sqrt(2 * math.pi)

    value, _ = integrate.quad_vec(integrand, -12.0, 12.0, epsabs=1e-10, epsrel=1e-9, limit=200)
    return value


def _log_evidence(model: BitModel) -> np.ndarray:
    """log p_theta(x) of a pattern with m ones, for every (D, m): the integral over the prior."""
    shape = model.loc.shape

    def integrand(z):
        with torch.no_grad():
            point = torch.full((1, *shape, 1), z, dtype=DTYPE)
            value = model.log_likelihood(point)[0].exp()
        return value.numpy() * math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

    value, _ = integrate.quad_vec(integrand, -12.0, 12.0, epsabs=1e-14, epsrel=1e-10, limit=200)
    return np.log(value)


def train_single_bit(steps: int | None = None, seed: int = 0, copies=COPIES) -> dict:
    """Train the single-bit VAE of every D in ``copies`` (one batch), score it exactly, keep it.

    Returns, per D (lists in the order of ``copies``): ``elbo``, ``kl`` (mean over x of
    KL(q(z|x) || p(z))), ``log_evidence`` (mean over x of log p_theta(x)), ``entropy`` (H(x),
    exact), ``no_latent`` (D ln 2, the best model that ignores z), and for the figure the
    encoder's ``loc``/``scale`` per m and the decoder's p(x_d = 1 | z) on ``grid``.
    """
    return _train_single_bit(BIT_STEPS if steps is None else steps, seed, tuple(copies),
                             BIT_FLIP)


@lru_cache(maxsize=4)
def _train_single_bit(steps: int, seed: int, copies: tuple, flip: float) -> dict:
    model = BitModel(list(copies), seed=seed)
    weights = _weights(copies, flip)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    estimator = ESTIMATORS["pathwise_analytic_kl"]
    generator_state = torch.get_rng_state()
    torch.manual_seed(seed)
    validating = validation_enabled()
    set_validation(False)  # small tensors, many steps: the value scans would dominate
    try:
        for _ in range(steps):
            estimate = estimator(model, model.posterior(), BIT_SAMPLES)  # (len(copies), Dmax + 1)
            loss = -(weights * estimate.surrogate).sum()  # the exact sum over x, by count m
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    finally:
        set_validation(validating)
        torch.set_rng_state(generator_state)
    with torch.no_grad():
        kl = kl_divergence(model.posterior(), model.prior).numpy()
    reconstruction = _expect_over_q(model.log_likelihood, model)
    weights = weights.numpy()
    grid = np.linspace(-4, 4, 201)
    with torch.no_grad():
        points = torch.tensor(grid, dtype=DTYPE).reshape(-1, 1, 1, 1).expand(-1, len(copies), 1, 1)
        decoder = torch.sigmoid(model.logit(points))[:, :, 0].T.numpy()
    scale = model.log_scale.exp().detach().numpy()
    return {"copies": list(copies), "steps": steps, "flip": flip,
            "elbo": list((weights * (reconstruction - kl)).sum(1)),
            "kl": list((weights * kl).sum(1)),
            "log_evidence": list((weights * np.where(weights > 0, _log_evidence(model), 0)).sum(1)),
            "entropy": [data_entropy(d, flip) for d in copies],
            "no_latent": [d * math.log(2) for d in copies],
            "loc": [model.loc.detach().numpy()[i, :d + 1] for i, d in enumerate(copies)],
            "scale": [scale[i, :d + 1] for i, d in enumerate(copies)],
            "grid": grid, "decoder": decoder}


def draw_single_bit(copies: int = 1):
    """Left: per D, the nats the latent saves over ignoring it (trained, and the most possible)
    and the KL it costs. Right, for this D: the encoder's q(z | x) for each count of ones, and
    the decoder's p(x_d = 1 | z)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    result = train_single_bit()
    dims = np.array(result["copies"], dtype=float)
    saved = np.array(result["no_latent"]) + np.array(result["elbo"])
    possible = np.array(result["no_latent"]) - np.array(result["entropy"])
    index = result["copies"].index(copies)

    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.8),
                                      gridspec_kw={"width_ratios": [1, 1.15]})
    fig.subplots_adjust(left=0.08, right=0.9, bottom=0.13, top=0.9, wspace=0.3)
    left.plot(dims, possible, color="black", linewidth=1.5,
              label="most a latent can save: D ln 2 − H(x), exact")
    left.plot(dims, saved, color="#d95f02", marker="o", markersize=4,
              label="saved by the trained VAE: ELBO + D ln 2")
    left.plot(dims, result["kl"], color="#1b9e77", marker="s", markersize=4,
              label="its cost: mean KL(q(z|x) ‖ p(z))")
    left.axvline(copies, color="0.6", linestyle=":", linewidth=1)
    left.set_xscale("log", base=2)
    left.set_xticks(dims, [f"{d:g}" for d in dims])
    left.xaxis.set_minor_locator(NullLocator())  # minor ticks of a log axis: slow to lay out
    left.set_xlabel("D, noisy copies of the bit")
    left.set_ylabel("nats per data point")
    left.set_title(f"flip probability {result['flip']:g}, {result['steps']} Adam steps",
                   fontsize=9.5)
    left.legend(loc="upper left", fontsize=7)

    z = np.linspace(-4, 4, 201)
    p_count = count_probabilities(copies, result["flip"])
    colours = plt.get_cmap("coolwarm")(np.linspace(0, 1, copies + 1))
    right.fill_between(z, stats.norm.pdf(z), color="0.88", label="prior N(0, 1)")
    top = 0.45
    for m, (loc, scale) in enumerate(zip(result["loc"][index], result["scale"][index])):
        if p_count[m] < 1e-4:  # counts the data almost never show
            continue
        density = stats.norm.pdf(z, loc, scale)
        top = max(top, density.max())
        right.plot(z, density, color=colours[m], linewidth=1.5,
                   label=f"q(z | m = {m})" if m in (0, copies) else None)
    right.set_ylim(0, 1.6 * top)  # room for the legend above the curves
    right.set_xlabel("z")
    right.set_ylabel("density")
    twin = right.twinx()
    twin.plot(result["grid"], result["decoder"][index], color="black", linestyle="--",
              label="decoder p(x_d = 1 | z)")
    twin.set_ylim(0, 1)
    twin.set_ylabel("p(x_d = 1 | z)")
    twin.grid(False)
    right.set_title(f"D = {copies}: KL {result['kl'][index]:.3f}, −ELBO {-result['elbo'][index]:.3f}"
                    f", H(x) {result['entropy'][index]:.3f}", fontsize=9)
    lines = right.get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    right.legend(lines[0] + extra[0], lines[1] + extra[1], loc="upper left", fontsize=7)
    return fig


def draw_images(rows: dict, columns: int = 10):
    """One row of 28 x 28 images per entry of ``rows`` (title -> tensor (n, 784)), grey."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 1, figsize=(8.0, 0.95 * len(rows) + 0.2),
                             constrained_layout=True, squeeze=False)
    for ax, (title, images) in zip(axes[:, 0], rows.items()):
        strip = images[:columns].detach().reshape(-1, 28, 28)
        ax.imshow(torch.cat(list(strip), dim=1).numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_axis_off()
    return fig


def draw_training(history: dict):
    """Left: the test ELBO against the step. Right: the variance of the gradient with respect to
    q's parameters, per estimator, ±2 s.e., on a log axis."""
    import matplotlib.pyplot as plt

    from experiments.style import color

    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.5), constrained_layout=True)
    left.plot(history["step"], history["test_elbo"], color="black", marker="o", markersize=3)
    left.set_xlabel("Adam step (100 images each)")
    left.set_ylabel("test ELBO (nats per image)")
    left.set_title("training: the bound rises", fontsize=10)
    for name, rows in history["variance"].items():
        values, errors = np.array(rows).T
        right.errorbar(history["step"], values, yerr=2 * errors, color=color(name), marker="o",
                       markersize=3, capsize=2, label=name)
    right.set_yscale("log")
    right.set_xlabel("Adam step")
    right.set_ylabel("variance per image")
    right.set_title("one-sample gradient in q's λ = (μ, σ), ±2 s.e.", fontsize=10)
    right.legend(fontsize=8)
    return fig


SINGLE_BIT = register("single-bit", draw_single_bit,
                      "the number D of noisy copies of a fair bit that a 1-D VAE encodes",
                      start={"copies": 1}, copies=COPIES)
