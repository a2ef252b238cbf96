"""seed-ideas: the seed's claims checked one by one, each with a figure.

1. Section 1, maximum likelihood is KL minimisation: fit a Gaussian and a two-component mixture
   by maximum likelihood to n draws of a known p (a two-component mixture); the average
   log-likelihood of the fit on fresh data estimates E_p[log p_hat] = -H(p) - KL(p || p_hat)
   (H(p) and the KL by quadrature), and as n grows KL(p || p_hat) falls to the smallest KL the
   family allows: zero for the mixture, KL(p || best Gaussian) for the Gaussian.
2. Section 3, log p(x) = ELBO(q) + KL(q || p(z|x)) (the step from eq. 2 to eq. 3) on the linear
   Gaussian model :class:`estimators.targets.ConjugateGaussian`, over a grid of Gaussian q's:
   ELBO in closed form, KL from ``torch.distributions.kl_divergence`` with the exact posterior,
   the residual at rounding level; the ``pathwise`` estimator's ELBO values alongside.
3. Section 4, an autoencoder with one linear hidden layer trained by squared error is PCA: its
   decoder spans the principal subspace (principal angles by ``scipy.linalg.subspace_angles``
   against numpy's SVD), while a tanh autoencoder reconstructs data on a curved 1-D manifold
   far better than any linear one.
4. Section 7 and Shu (2017), "Autoencoding a single bit": a VAE with a Bernoulli decoder, a
   Gaussian encoder and a 1-D latent, trained with ``pathwise_analytic_kl`` (seed eq. 6), on D
   noisy copies of one fair bit. For D = 1 the data need no latent (the decoder alone gives
   log p(x) = -ln 2 exactly), and a Gaussian q(z|x) cannot match the posterior of a latent that
   is used, so using it only loosens the bound: the VAE reaches -ELBO = ln 2 with KL ~ 0 and
   reconstruction ~ ln 2 (the bound is flat near zero KL, so a few hundredths of a nat of KL
   linger after training). Each extra copy makes the bit worth more, and the KL rises with D.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import integrate, linalg, stats
from torch import nn
from torch.distributions import (Bernoulli, Categorical, Independent, MixtureSameFamily, Normal,
                                 kl_divergence)

from estimators import ESTIMATORS, NormalWithNoise
from estimators.diagnostics import replicate_gradients
from estimators.targets import ConjugateGaussian

from .common import StudyConfig, progress, save_figure, study_device
from .replicated import RunGenerators, stack_modules, stream_seed

NAME = "seed-ideas"
SUMMARY = ("the seed's claims one figure each: ML = KL minimisation, log p(x) = ELBO + KL, "
           "linear autoencoder = PCA, a VAE ignores the latent of a single bit")
DTYPE = torch.float64
SCRIPT = "experiments/seed_ideas.py"


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every field can be changed with --set FIELD=VALUE (tuples as comma-separated lists)."""

    # --- section 1: maximum likelihood = KL minimisation
    true_weights: tuple = (0.3, 0.7)  # p: mixture weights
    true_locs: tuple = (-2.0, 1.0)  # p: component means
    true_scales: tuple = (0.6, 1.0)  # p: component standard deviations
    sizes: tuple = (10, 30, 100, 300, 1000, 3000, 10000)  # n, the training-set sizes
    fits: int = 20  # independent training sets (and fits) per n
    test_size: int = 20000  # fresh draws behind each held-out average log-likelihood
    min_scale: float = 0.05  # floor of a fitted mixture's scales (its likelihood is unbounded)
    # --- section 3: log p(x) = ELBO + KL on the conjugate Gaussian model
    observation: float = 1.5  # x
    noise_scale: float = 0.5  # x | z ~ N(z, noise_scale^2), z ~ N(0, 1)
    q_locs: int = 61  # grid of q's means on [-2, 4]
    q_scales: int = 40  # grid of q's standard deviations, log-spaced on [0.05, 3]
    elbo_replicates: int = 2000  # pathwise single-sample ELBO estimates per shown q
    # --- runs: the autoencoders and the single-bit VAEs train as groups of runs
    runs: int = 5  # independent runs of each training (its own initialisation; the bit VAE its own data too)
    # --- section 4: autoencoders
    pca_dim: int = 10  # data dimension of the linear-autoencoder check
    pca_rank: int = 2  # bottleneck width = number of principal components
    pca_points: int = 2000  # points near a random rank-pca_rank subspace
    pca_iterations: int = 200  # L-BFGS iterations of the linear autoencoder
    curve_points: int = 1000  # points on the noisy arc, for training (as many again for testing)
    curve_noise: float = 0.05  # standard deviation of the noise off the arc, per coordinate
    curve_steps: int = 2000  # Adam steps of the tanh autoencoder
    curve_hidden: int = 64  # width of its hidden layers
    # --- section 7: autoencoding a single bit
    bit_dims: tuple = (1, 2, 4, 8, 16)  # D, the number of noisy copies of the bit
    bit_flip: float = 0.1  # each copy is the bit flipped with this probability
    bit_steps: int = 1500  # Adam steps, a fresh batch of data each step
    bit_batch: int = 256  # data points per step
    bit_hidden: int = 32  # width of the encoder's and decoder's hidden layer
    bit_eval_points: int = 20000  # fresh data behind the reported terms
    bit_eval_samples: int = 16  # z's per point for the reconstruction term

    # CPU only (1-D fits, quadrature, small networks): --device cuda is refused before any work
    DEVICES = ("cpu",)

    @classmethod
    def quick(cls) -> "Config":
        return cls(quick=True, sizes=(10, 100, 1000, 10000), fits=8, test_size=10000,
                   q_locs=31, q_scales=20, elbo_replicates=1000, pca_points=1000,
                   pca_iterations=120, curve_points=500, curve_steps=1200, curve_hidden=32,
                   runs=3, bit_dims=(1, 2, 4, 8), bit_steps=800, bit_batch=256,
                   bit_eval_points=5000)

    def __post_init__(self):
        problems = []
        if len(self.true_weights) != len(self.true_locs) or len(self.true_locs) != len(
                self.true_scales):
            problems.append("true_weights, true_locs and true_scales must have one entry per "
                            "component")
        if any(w <= 0 for w in self.true_weights) or any(s <= 0 for s in self.true_scales):
            problems.append("true_weights and true_scales must be positive")
        if not self.sizes or min(self.sizes) < 3:
            problems.append(f"sizes must be at least 3 points each, got {self.sizes}")
        if self.fits < 2 or self.test_size < 2 or self.elbo_replicates < 2:
            problems.append("fits, test_size and elbo_replicates must be >= 2")
        if self.noise_scale <= 0 or self.min_scale <= 0 or self.curve_noise <= 0:
            problems.append("noise_scale, min_scale and curve_noise must be > 0")
        if not 1 <= self.pca_rank < self.pca_dim:
            problems.append(f"pca_rank must lie in [1, pca_dim), got {self.pca_rank}")
        if not 0 < self.bit_flip < 0.5:
            problems.append(f"bit_flip must lie in (0, 0.5), got {self.bit_flip}")
        if not self.bit_dims or min(self.bit_dims) < 1:
            problems.append(f"bit_dims must be positive, got {self.bit_dims}")
        if self.runs < 1:
            problems.append(f"runs must be >= 1 (2 or more give a spread), got {self.runs}")
        if problems:
            raise SystemExit("error: seed-ideas: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Section 1: maximum likelihood is KL minimisation
# --------------------------------------------------------------------------------------------


def mixture(weights, locs, scales) -> MixtureSameFamily:
    """A 1-D Gaussian mixture; batch dimensions are independent mixtures."""
    weights = torch.as_tensor(weights, dtype=DTYPE)
    return MixtureSameFamily(Categorical(probs=weights / weights.sum(-1, keepdim=True)),
                             Normal(torch.as_tensor(locs, dtype=DTYPE),
                                    torch.as_tensor(scales, dtype=DTYPE)))


def true_density(config: Config) -> MixtureSameFamily:
    return mixture(config.true_weights, config.true_locs, config.true_scales)


def _integration_range(config: Config) -> tuple:
    low = min(m - 12 * s for m, s in zip(config.true_locs, config.true_scales))
    high = max(m + 12 * s for m, s in zip(config.true_locs, config.true_scales))
    return low, high


def expected_log_density(config: Config, log_density) -> np.ndarray:
    """E_p[log q(x)] by adaptive quadrature, for a vectorised ``log_density(x) -> (..., )``."""
    p = true_density(config)
    low, high = _integration_range(config)

    def integrand(x):
        point = torch.tensor(x, dtype=DTYPE)
        return (p.log_prob(point).exp() * log_density(point)).numpy()

    value, _ = integrate.quad_vec(integrand, low, high, epsabs=1e-12, epsrel=1e-10,
                                  points=list(config.true_locs), limit=500)
    return np.asarray(value)


def fit_gaussians(samples: torch.Tensor) -> tuple:
    """Maximum-likelihood Normal fits, one per row: ``scipy.stats.norm.fit`` (mean, biased sd)."""
    fitted = [stats.norm.fit(row) for row in samples.numpy()]
    locs, scales = (torch.tensor(v, dtype=DTYPE) for v in zip(*fitted))
    return Normal(locs, scales)


def fit_mixtures(samples: torch.Tensor, min_scale: float, iterations: int = 300):
    """Maximum-likelihood two-component mixtures, one per row, by L-BFGS on the log-likelihood.

    The rows are independent problems fitted together (their losses add). Starts from the
    quartiles; the scales are floored at ``min_scale`` because the likelihood of a mixture is
    unbounded when a component collapses onto one point.
    """
    quartiles = torch.quantile(samples, torch.tensor([0.25, 0.75], dtype=DTYPE), dim=1).T
    spread = samples.std(1, keepdim=True).expand(-1, 2)
    logits = torch.zeros(samples.shape[0], 2, dtype=DTYPE, requires_grad=True)
    locs = quartiles.clone().requires_grad_(True)
    raw_scales = torch.log(torch.expm1((spread / 2 - min_scale).clamp_min(1e-3))).requires_grad_(True)
    params = [logits, locs, raw_scales]

    def build():
        scales = min_scale + nn.functional.softplus(raw_scales)
        return MixtureSameFamily(Categorical(logits=logits), Normal(locs, scales))

    optimizer = torch.optim.LBFGS(params, lr=1, max_iter=iterations, tolerance_grad=1e-10,
                                  tolerance_change=1e-14, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = -build().log_prob(samples.T).mean(0).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        fitted = build()
        return MixtureSameFamily(Categorical(logits=fitted.mixture_distribution.logits.detach()),
                                 Normal(locs.detach(), fitted.component_distribution.scale.detach()))


def maximum_likelihood(config: Config) -> dict:
    p = true_density(config)
    neg_entropy = float(expected_log_density(config, p.log_prob))
    moments_mean = float(p.mean)
    best_gaussian = Normal(p.mean, p.stddev)
    best_gaussian_kl = neg_entropy - float(expected_log_density(config, best_gaussian.log_prob))
    families = {"Gaussian": {"num_parameters": 2}, "2-component mixture": {"num_parameters": 5}}
    for row in families.values():
        row.update({key: [] for key in ("train", "heldout", "heldout_se", "kl")})

    for n in progress(config.sizes, desc=f"{NAME}: maximum likelihood"):
        torch.manual_seed(config.seed + 17 + n)
        train = p.sample((config.fits, n))
        test = p.sample((config.test_size,))
        fitted = {"Gaussian": fit_gaussians(train),
                  "2-component mixture": fit_mixtures(train, config.min_scale)}
        for family, q in fitted.items():
            row = families[family]
            row["train"].append(q.log_prob(train.T).mean(0))
            test_log = q.log_prob(test.unsqueeze(-1))  # (test_size, fits)
            row["heldout"].append(test_log.mean(0))
            row["heldout_se"].append(test_log.std(0) / math.sqrt(config.test_size))
            # KL(p || q) = E_p log p - E_p log q
            expected = expected_log_density(config, lambda x: q.log_prob(x.unsqueeze(-1)))
            row["kl"].append(neg_entropy - expected)
    return {"sizes": list(config.sizes), "neg_entropy": neg_entropy,
            "best_gaussian_kl": best_gaussian_kl, "p_mean": moments_mean,
            "test_size": config.test_size, "families": families}


# --------------------------------------------------------------------------------------------
# Section 3: log p(x) = ELBO + KL(q || p(z|x))
# --------------------------------------------------------------------------------------------


def conjugate_model(config: Config) -> ConjugateGaussian:
    return ConjugateGaussian(torch.tensor([config.observation], dtype=DTYPE),
                             torch.zeros(1, dtype=DTYPE), 1.0, config.noise_scale)


def elbo_identity(config: Config) -> dict:
    model = conjugate_model(config)
    locs = torch.linspace(-2.0, 4.0, config.q_locs, dtype=DTYPE)
    scales = torch.logspace(math.log10(0.05), math.log10(3.0), config.q_scales, dtype=DTYPE)
    loc_grid, scale_grid = torch.meshgrid(locs, scales, indexing="ij")
    q = Independent(Normal(loc_grid.unsqueeze(-1), scale_grid.unsqueeze(-1)), 1)
    elbo = model.exact_elbo(loc_grid.unsqueeze(-1), scale_grid.unsqueeze(-1))
    posterior = model.posterior()
    kl = kl_divergence(q, posterior)
    log_evidence = model.log_evidence()
    # The wrong direction, KL(p(z|x) || q), kept to show that the check rejects it.
    wrong_kl = kl_divergence(posterior, q)

    # Monte Carlo ELBO values of the registry's pathwise estimator at three scales of q.
    shown = [0.2, float(posterior.stddev), 1.5]
    chosen_locs = locs[:: max(1, config.q_locs // 12)]
    monte_carlo = []
    for scale in shown:
        def build(lam, theta):
            return model, Independent(Normal(lam["loc"], lam["scale"]), 1)

        start = {"loc": chosen_locs.unsqueeze(-1),
                 "scale": torch.full_like(chosen_locs, scale).unsqueeze(-1)}
        grads = replicate_gradients(ESTIMATORS["pathwise"], build, start,
                                    num_replicates=config.elbo_replicates, num_samples=1)
        values = grads.elbo
        exact = model.exact_elbo(chosen_locs.unsqueeze(-1),
                                 torch.full_like(chosen_locs, scale).unsqueeze(-1))
        monte_carlo.append({"scale": scale, "loc": chosen_locs, "mean": values.mean(0),
                            "se": values.std(0) / math.sqrt(values.shape[0]),
                            "exact": exact,
                            "curve": model.exact_elbo(locs.unsqueeze(-1),
                                                      torch.full_like(locs, scale).unsqueeze(-1))})
    return {"locs": locs, "scales": scales, "elbo": elbo, "kl": kl,
            "log_evidence": float(log_evidence), "residual": log_evidence - elbo - kl,
            "wrong_residual": log_evidence - elbo - wrong_kl,
            "posterior_loc": float(posterior.mean), "posterior_scale": float(posterior.stddev),
            "elbo_replicates": config.elbo_replicates, "monte_carlo": monte_carlo,
            "observation": config.observation, "noise_scale": config.noise_scale}


# --------------------------------------------------------------------------------------------
# Section 4: a linear autoencoder is PCA; a nonlinear one follows a curved manifold
# --------------------------------------------------------------------------------------------


def principal_subspace(data: np.ndarray, rank: int) -> tuple:
    """The top-``rank`` principal directions (columns) and the best rank-``rank`` squared error."""
    centred = data - data.mean(0)
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    mse = float((singular[rank:] ** 2).sum() / data.shape[0])
    return vt.T, mse


def linear_autoencoder(config: Config) -> dict:
    generator = torch.Generator().manual_seed(config.seed + 41)
    dim, rank = config.pca_dim, config.pca_rank
    # Data near a random rank-2 subspace, well separated spectrum: latent sd 3 and 1.5, noise 0.2.
    mixing = torch.linalg.qr(torch.randn(dim, rank, generator=generator, dtype=DTYPE))[0]
    latent = torch.randn(config.pca_points, rank, generator=generator, dtype=DTYPE)
    latent = latent * torch.linspace(3.0, 1.5, rank, dtype=DTYPE)
    data = latent @ mixing.T + 0.2 * torch.randn(config.pca_points, dim, generator=generator,
                                                 dtype=DTYPE) + 1.0
    directions, pca_mse = principal_subspace(data.numpy(), rank)
    top, other = directions[:, :rank], directions[:, rank:2 * rank]

    # L-BFGS's line search is not elementwise: runs optimised as one sum would share their steps
    # and converge more slowly (to 3e-4 rad in 120 evaluations where one run reaches 1e-6), so
    # each run is optimised on its own.
    runs = []
    for run in range(config.runs):  # each run its own initialisation; one set of data
        torch.manual_seed(config.seed + 42 + 1000 * run)
        runs.append(_fit_linear_autoencoder(data, rank, top, config.pca_iterations))
    return {"pca_mse": pca_mse, "runs": config.runs,
            "history": [history for history, _ in runs],
            "angles": [linalg.subspace_angles(d.weight.detach().numpy(), top) for _, (_, d) in runs],
            "encoder_angles": [linalg.subspace_angles(e.weight.detach().numpy().T, top)
                               for _, (e, _) in runs],
            "wrong_angles": [linalg.subspace_angles(d.weight.detach().numpy(), other)
                             for _, (_, d) in runs],
            "singular_values": np.linalg.svd(data.numpy() - data.numpy().mean(0),
                                             compute_uv=False) / math.sqrt(config.pca_points)}


def _fit_linear_autoencoder(data, rank, top, iterations):
    """One linear autoencoder fitted by L-BFGS from torch's current seed; its path and layers."""
    dim = data.shape[1]
    encoder, decoder = nn.Linear(dim, rank, dtype=DTYPE), nn.Linear(rank, dim, dtype=DTYPE)
    params = list(encoder.parameters()) + list(decoder.parameters())
    optimizer = torch.optim.LBFGS(params, lr=1, max_iter=iterations, history_size=100,
                                  tolerance_grad=1e-14, tolerance_change=1e-16,
                                  line_search_fn="strong_wolfe")
    history = {"evaluation": [], "mse": [], "max_angle": []}

    def closure():
        optimizer.zero_grad()
        loss = (decoder(encoder(data)) - data).pow(2).sum(-1).mean()
        loss.backward()
        with torch.no_grad():  # the path to the optimum, one entry per function evaluation
            history["evaluation"].append(len(history["evaluation"]))
            history["mse"].append(loss.item())
            angles = linalg.subspace_angles(decoder.weight.numpy(), top)
            history["max_angle"].append(float(angles.max()))
        return loss

    optimizer.step(closure)
    return history, (encoder, decoder)


def arc(num_points: int, noise: float, generator) -> torch.Tensor:
    """A noisy horseshoe: the unit circle from -30 to 210 degrees, plus Gaussian noise."""
    angle = torch.empty(num_points, dtype=DTYPE).uniform_(-math.pi / 6, 7 * math.pi / 6,
                                                          generator=generator)
    points = torch.stack([angle.cos(), angle.sin()], -1)
    return points + noise * torch.randn(num_points, 2, generator=generator, dtype=DTYPE)


def curved_manifold(config: Config) -> dict:
    generator = torch.Generator().manual_seed(config.seed + 43)
    train = arc(config.curve_points, config.curve_noise, generator)
    test = arc(config.curve_points, config.curve_noise, generator)
    width = config.curve_hidden
    runs = config.runs

    def layer(inputs, outputs):
        return nn.Linear(inputs, outputs, dtype=DTYPE)

    nonlinears, linears = [], []
    for run in range(runs):  # each run its own initialisation; one set of data
        torch.manual_seed(config.seed + 47 + 1000 * run)
        nonlinears.append(nn.Sequential(layer(2, width), nn.Tanh(), layer(width, width),
                                        nn.Tanh(), layer(width, 1), layer(1, width), nn.Tanh(),
                                        layer(width, width), nn.Tanh(), layer(width, 2)))
        linears.append(nn.Sequential(layer(2, 1), layer(1, 2)))
    train_runs = train.unsqueeze(0).expand(runs, *train.shape)
    test_runs = test.unsqueeze(0).expand(runs, *test.shape)

    def mse(network, points):  # (runs,): each run's mean squared error per point
        return (network(points) - points).pow(2).sum(-1).mean(-1)

    for network in linears:  # L-BFGS, run by run (its line search is not elementwise)
        optimizer = torch.optim.LBFGS(network.parameters(), lr=1, max_iter=200,
                                      line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = (network(train) - train).pow(2).sum(-1).mean()
            loss.backward()
            return loss

        optimizer.step(closure)
    # Adam is elementwise: the tanh autoencoders train as one group
    nonlinear, linear = stack_modules(nonlinears), stack_modules(linears)

    optimizer = torch.optim.Adam(nonlinear.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.curve_steps)
    curve = []
    for step in progress(range(config.curve_steps), desc=f"{NAME}: tanh AE x{runs}"):
        optimizer.zero_grad()
        losses = mse(nonlinear, train_runs)
        losses.sum().backward()
        optimizer.step()
        schedule.step()
        if step % 25 == 0 or step == config.curve_steps - 1:
            curve.append((step + 1, losses.tolist()))
    # PCA fitted to the training data, scored on the test data like the autoencoders.
    directions, _ = principal_subspace(train.numpy(), 1)
    mean = train.numpy().mean(0)
    centred = test.numpy() - mean
    projected = centred @ directions[:, :1] @ directions[:, :1].T
    pca_mse = float(((centred - projected) ** 2).sum(-1).mean())
    with torch.no_grad():
        order = torch.linspace(-math.pi / 6, 7 * math.pi / 6, 200, dtype=DTYPE)
        clean = torch.stack([order.cos(), order.sin()], -1).unsqueeze(0).expand(runs, 200, 2)
        return {
            "train": train, "test": test, "runs": runs,
            "linear_curve": linear(clean)[0], "nonlinear_curve": nonlinear(clean)[0],
            "linear_mse": mse(linear, test_runs).tolist(),
            "nonlinear_mse": mse(nonlinear, test_runs).tolist(),
            "pca_mse": pca_mse, "noise_floor": config.curve_noise ** 2,
            "training_curve": curve, "noise": config.curve_noise,
        }


# --------------------------------------------------------------------------------------------
# Section 7: autoencoding a single bit
# --------------------------------------------------------------------------------------------


def noisy_copies(num_points: int, dim: int, flip: float, generator) -> torch.Tensor:
    """D copies of one fair bit, each flipped independently with probability ``flip``."""
    bit = torch.bernoulli(torch.full((num_points, 1), 0.5, dtype=DTYPE), generator=generator)
    flips = torch.bernoulli(torch.full((num_points, dim), flip, dtype=DTYPE), generator=generator)
    return (bit + flips) % 2


def data_entropy(dim: int, flip: float) -> float:
    """H(x) in nats of D noisy copies of a fair bit: sum over the number m of ones."""
    ones = np.arange(dim + 1)
    probability = 0.5 * (flip ** ones * (1 - flip) ** (dim - ones)
                         + (1 - flip) ** ones * flip ** (dim - ones))
    return float(-(stats.binom.pmf(ones, dim, 0.5) * 2 ** dim * probability
                   * np.log(probability)).sum())


class BitVae(nn.Module):
    """Gaussian encoder q(z|x) and Bernoulli decoder p(x|z), 1-D latent, prior N(0, 1)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(dim, hidden, dtype=DTYPE), nn.Tanh(),
                                     nn.Linear(hidden, 2, dtype=DTYPE))
        self.decoder = nn.Sequential(nn.Linear(1, hidden, dtype=DTYPE), nn.Tanh(),
                                     nn.Linear(hidden, dim, dtype=DTYPE))

    def posterior(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """q(z | x); with ``noise``, a q whose one draw is that standard noise."""
        loc, log_scale = (t.unsqueeze(-1) for t in self.encoder(x).unbind(-1))
        return Independent(Normal(loc, log_scale.exp()) if noise is None
                           else NormalWithNoise(loc, log_scale.exp(), noise), 1)

    def model(self, x: torch.Tensor) -> "BitLikelihood":
        return BitLikelihood(self, x)


class BitLikelihood:
    """The factorised model of seed eq. (6) for a batch x: prior N(0, 1) and p(x | z)."""

    def __init__(self, vae: BitVae, x: torch.Tensor):
        self.vae, self.x = vae, x
        zeros = torch.zeros(*x.shape[:-1], 1, dtype=x.dtype)  # (B, 1), or (R, B, 1) for R runs
        self.prior = Independent(Normal(zeros, torch.ones_like(zeros)), 1)

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.vae.decoder(z)
        return Bernoulli(logits=logits).log_prob(self.x.expand_as(logits)).sum(-1)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.prior.log_prob(z) + self.log_likelihood(z)


def train_bit_group(config: Config, dim: int, seeds) -> list[dict]:
    """One VAE per seed, trained together as one group; each run's terms on its own fresh data.

    Run r is built under ``seeds[r]``, sees the data stream of ``seeds[r] + 1`` and draws its z
    from its own stream, so its numbers do not depend on the other runs of the group.
    """
    runs = len(seeds)
    vaes = []
    for seed in seeds:
        torch.manual_seed(seed)
        vaes.append(BitVae(dim, config.bit_hidden))
    group = stack_modules(vaes)
    streams = [torch.Generator().manual_seed(seed + 1) for seed in seeds]
    noise = RunGenerators([stream_seed(seed, "single-bit noise") for seed in seeds])
    optimizer = torch.optim.Adam(group.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.bit_steps)
    estimator = ESTIMATORS["pathwise_analytic_kl"]
    for _ in range(config.bit_steps):
        x = torch.stack([noisy_copies(config.bit_batch, dim, config.bit_flip, stream)
                         for stream in streams])
        draws = noise.normal((1, config.bit_batch, 1), DTYPE, dim=1)
        estimate = estimator(group.model(x), group.posterior(x, draws), 1)
        optimizer.zero_grad()
        (-estimate.surrogate.mean(-1)).sum().backward()
        optimizer.step()
        schedule.step()
    count = math.sqrt(config.bit_eval_points)
    results = []
    with torch.no_grad():
        x = torch.stack([noisy_copies(config.bit_eval_points, dim, config.bit_flip, stream)
                         for stream in streams])
        q = group.posterior(x)
        model = group.model(x)
        kl = kl_divergence(q, model.prior)  # (R, N)
        samples = noise.normal((config.bit_eval_samples, config.bit_eval_points, 1), DTYPE, dim=1)
        z = q.base_dist.loc + q.base_dist.scale * samples
        reconstruction = -model.log_likelihood(z).mean(0)  # (R, N)
    for run in range(runs):
        results.append({"kl": float(kl[run].mean()), "kl_se": float(kl[run].std() / count),
                        "reconstruction": float(reconstruction[run].mean()),
                        "reconstruction_se": float(reconstruction[run].std() / count)})
    return results


def single_bit(config: Config) -> dict:
    rows = {key: [] for key in ("dim", "seed", "kl", "kl_se", "reconstruction",
                                "reconstruction_se")}
    for dim in progress(config.bit_dims, desc=f"{NAME}: single-bit VAE x{config.runs}"):
        seeds = [config.seed + 1000 * run + dim for run in range(config.runs)]
        for run, result in enumerate(train_bit_group(config, dim, seeds)):
            rows["dim"].append(dim)
            rows["seed"].append(run)
            for key, value in result.items():
                rows[key].append(value)
    return {**rows, "flip": config.bit_flip, "steps": config.bit_steps, "runs": config.runs,
            "entropy": [data_entropy(d, config.bit_flip) for d in config.bit_dims],
            "dims": list(config.bit_dims)}


def run(config: Config, paths) -> dict:
    study_device(config, NAME)  # refuses, in one line, any device but the CPU
    return {"maximum_likelihood": maximum_likelihood(config),
            "elbo_identity": elbo_identity(config),
            "linear_autoencoder": linear_autoencoder(config),
            "curved_manifold": curved_manifold(config),
            "single_bit": single_bit(config)}


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _figure(plt, columns: int, width: float, height: float = 4.4, ratios=None):
    fig, axes = plt.subplots(1, columns, figsize=(width, height), layout="constrained",
                             gridspec_kw={"width_ratios": ratios} if ratios else None)
    fig.get_layout_engine().set(rect=(0, 0.03, 1, 0.97))
    return fig, axes


def plot(results: dict, results_path, paths) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .style import rc_context

    data = results["data"]
    written = []
    with rc_context():
        for name, draw in (("ml-kl", _plot_maximum_likelihood), ("elbo-gap", _plot_elbo),
                           ("autoencoders", _plot_autoencoders), ("single-bit", _plot_single_bit)):
            fig = draw(plt, data)
            written += save_figure(fig, paths, f"{NAME}-{name}", results_path, SCRIPT)
    return written


_FAMILY_COLORS = {"Gaussian": "#1b9e77", "2-component mixture": "#d95f02"}


def _plot_maximum_likelihood(plt, data):
    part = data["maximum_likelihood"]
    sizes = np.asarray(part["sizes"], dtype=float)
    fig, axes = _figure(plt, 2, 10.4, height=5.0)
    ax = axes[0]
    for family, row in part["families"].items():
        colour = _FAMILY_COLORS[family]
        heldout = np.asarray(row["heldout"])  # (n values, fits)
        exact = part["neg_entropy"] - np.asarray(row["kl"])
        train = np.asarray(row["train"])
        fits = heldout.shape[1]
        ax.plot(sizes, exact.mean(1), color=colour, linewidth=1.8,
                label=f"{family}: −H(p) − KL(p ‖ p̂), quadrature")
        ax.errorbar(sizes, heldout.mean(1), yerr=2 * heldout.std(1, ddof=1) / math.sqrt(fits),
                    color=colour, linestyle="none", marker="o", markerfacecolor="white",
                    capsize=3, label=f"{family}: average log-likelihood on fresh data")
        ax.plot(sizes, train.mean(1), color=colour, linestyle=":", marker=".",
                label=f"{family}: average log-likelihood on its training data")
    ax.axhline(part["neg_entropy"], color="black", linestyle="--", linewidth=1.2,
               label=f"−H(p) = {part['neg_entropy']:.4f} (the best possible)")
    ax.set_xscale("log")
    ax.set_xlabel("n, training-set size")
    ax.set_ylabel("average log-likelihood (nats per point)")
    ax.set_title("(a) fresh-data log-likelihood = −H(p) − KL(p ‖ p̂)", fontsize=9.5)
    # Room for every error bar, but not for a wild fit at the smallest n.
    low = min(min((np.asarray(r["heldout"]).mean(1)
                   - 2 * np.asarray(r["heldout"]).std(1, ddof=1) / math.sqrt(fits)).min(),
                  (part["neg_entropy"] - np.asarray(r["kl"])).mean(1).min())
              for r in part["families"].values())
    high = max(np.asarray(r["train"]).mean(1).max() for r in part["families"].values())
    ax.set_ylim(max(low - 0.05, part["neg_entropy"] - 1.0),
                min(max(high, part["neg_entropy"]) + 0.05, part["neg_entropy"] + 0.5))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, fontsize=7,
              frameon=False)

    ax = axes[1]
    for family, row in part["families"].items():
        colour = _FAMILY_COLORS[family]
        kl = np.asarray(row["kl"])
        ax.errorbar(sizes, kl.mean(1), yerr=2 * kl.std(1, ddof=1) / math.sqrt(kl.shape[1]),
                    color=colour, marker="o", capsize=3, label=f"{family}: KL(p ‖ p̂), mean of "
                    f"{kl.shape[1]} fits")
        if family != "Gaussian":
            ax.plot(sizes, row["num_parameters"] / (2 * sizes), color=colour, linestyle=":",
                    label=f"d / (2n), d = {row['num_parameters']} (large-n theory)")
    ax.axhline(part["best_gaussian_kl"], color=_FAMILY_COLORS["Gaussian"], linestyle="--",
               label=f"KL(p ‖ best Gaussian) = {part['best_gaussian_kl']:.3f}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("n, training-set size")
    ax.set_ylabel("KL(p ‖ p̂) (nats)")
    ax.set_title("(b) maximum likelihood minimises KL(p ‖ p̂) as n grows", fontsize=9.5)
    ax.legend(loc="lower left", fontsize=7.5)
    fig.suptitle("Seed section 1: maximising likelihood is minimising KL(p ‖ p̂); p = mixture "
                 "of two Gaussians.\nError bars: ±2 s.e. over fits", fontsize=10)
    return fig


def _plot_elbo(plt, data):
    part = data["elbo_identity"]
    from scipy.stats import norm

    fig, axes = _figure(plt, 3, 10.4, height=4.9, ratios=[1.25, 1.1, 0.85])
    ax = axes[0]
    evidence = part["log_evidence"]
    locs = np.asarray(part["locs"])
    colours = ["#66a61e", "#e7298a", "#7570b3"]
    # ±3 s.e.: of 39 estimates some lie beyond 2 s.e. by chance alone (at sigma_q = 1.5 two
    # did, and one 3.1 s.e. off looked like a bug); the largest |z| is said with its chance.
    z = np.concatenate([(np.asarray(row["mean"]) - np.asarray(row["exact"])) / np.asarray(row["se"])
                        for row in part["monte_carlo"]])
    largest = float(np.abs(z).max())
    chance = 1 - (1 - 2 * norm.sf(largest)) ** z.size
    for row, colour in zip(part["monte_carlo"], colours):
        label = f"σ_q = {row['scale']:.3g}" + (" (posterior's)" if abs(
            row["scale"] - part["posterior_scale"]) < 1e-12 else "")
        ax.plot(locs, row["curve"], color=colour, linewidth=1.6, label=f"ELBO, {label}")
        ax.errorbar(row["loc"], row["mean"], yerr=3 * np.asarray(row["se"]), color=colour,
                    linestyle="none", marker="o", markersize=4, markerfacecolor="white",
                    capsize=2)
    elbo, kl = np.asarray(part["elbo"]), np.asarray(part["kl"])
    scales = np.asarray(part["scales"])
    for row, colour in zip(part["monte_carlo"], colours):
        column = int(np.argmin(np.abs(scales - row["scale"])))
        ax.plot(locs[::3], (elbo + kl)[::3, column], linestyle="none", marker="x", color=colour,
                markersize=5)
    ax.axhline(evidence, color="black", linewidth=1.2, label=f"log p(x) = {evidence:.4f}")
    ax.axvline(part["posterior_loc"], color="0.5", linestyle=":", linewidth=1)
    ax.plot([], [], color="0.3", marker="o", markerfacecolor="white", linestyle="none",
            label=f"pathwise ELBO estimate, ±3 s.e. (R = {part['elbo_replicates']});\nlargest "
                  f"|z| of the {z.size}: {largest:.1f}, which the largest of {z.size} normal "
                  f"deviates\nexceeds with chance {chance:.2f}")
    ax.plot([], [], color="0.3", marker="x", linestyle="none", label="ELBO + KL(q ‖ p(z|x))")
    ax.set_ylim(evidence - 8, evidence + 1.5)
    ax.set_xlabel("mean of q, μ_q")
    ax.set_ylabel("nats")
    ax.set_title("(a) ELBO ≤ log p(x); ELBO + KL = log p(x)", fontsize=9.5)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, fontsize=7,
              frameon=False)

    ax = axes[1]
    gap = evidence - elbo
    scale_grid = np.broadcast_to(scales, kl.shape)
    points = ax.scatter(kl.ravel(), gap.ravel(), c=np.log10(scale_grid.ravel()), s=9,
                        cmap="viridis", label=f"{kl.size} Gaussian q's")
    line = np.array([kl.min(), kl.max()])
    ax.plot(line, line, color="black", linewidth=0.8, linestyle="--", label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # inside the panel: a colour bar beside it crowded the next panel's label
    bar = fig.colorbar(points, cax=ax.inset_axes([0.52, 0.2, 0.42, 0.04]), orientation="horizontal")
    bar.set_label("log₁₀ σ_q (colour of the points)", fontsize=7.5)
    bar.ax.xaxis.set_label_position("top")
    bar.ax.tick_params(labelsize=7)
    ax.set_xlabel("KL(q ‖ p(z|x)), torch's kl_divergence (nats)")
    ax.set_ylabel("log p(x) − ELBO(q) (nats)")
    ax.set_title("(b) the gap is the KL to the posterior", fontsize=9.5)
    ax.legend(loc="upper left", fontsize=7.5)

    ax = axes[2]
    residual = np.asarray(part["residual"]).ravel()
    eps = np.finfo(np.float64).eps
    ax.hist(residual / eps, bins=41, color="#7570b3")
    ax.set_xlabel("log p(x) − ELBO − KL,\nin units of float64 ε = 2.2e−16")
    ax.set_ylabel("number of q's")
    ax.set_title(f"(c) residual: max |·| = {np.abs(residual).max():.1e} nats", fontsize=9.5)
    fig.suptitle("Seed section 3: log p(x) = ELBO(q) + KL(q ‖ p(z|x)) on the conjugate Gaussian "
                 f"model z ~ N(0, 1), x | z ~ N(z, {part['noise_scale']:g}²),\nx = "
                 f"{part['observation']:g}; q = N(μ_q, σ_q²) on a grid", fontsize=10)
    return fig


def _plot_autoencoders(plt, data):
    from .style import mean_and_se, plot_band

    linear_part, curve_part = data["linear_autoencoder"], data["curved_manifold"]
    runs = linear_part["runs"]
    fig, axes = _figure(plt, 3, 10.4, height=4.6, ratios=[1.05, 1.05, 0.8])
    ax = axes[0]
    # Each run its own L-BFGS path, of its own length: the band covers the evaluations every
    # run reached.
    length = min(len(h["evaluation"]) for h in linear_part["history"])
    iterations = np.arange(length)
    angles = np.asarray([h["max_angle"][:length] for h in linear_part["history"]])
    plot_band(ax, iterations, angles, color="#1b9e77", marker=".",
              label="largest principal angle to the PCA subspace (rad)")
    excess = np.asarray([h["mse"][:length] for h in linear_part["history"]]) - linear_part["pca_mse"]
    plot_band(ax, iterations, np.clip(excess, 1e-16, None), color="#d95f02", marker=".",
              label="squared error − PCA's (per point)")
    ax.set_yscale("log")
    ax.set_xlabel("L-BFGS function evaluation")
    ax.set_ylabel("radians / squared error")
    final = np.max(np.asarray(linear_part["angles"]), axis=1)  # each run's largest angle
    ax.set_title("(a) linear autoencoder → PCA subspace\n"
                 f"(D = {len(linear_part['singular_values'])}, bottleneck "
                 f"{len(linear_part['angles'][0])}; largest final\nangle, over runs: "
                 f"{final.max():.0e} rad)", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7.5, frameon=False)

    ax = axes[1]
    test = np.asarray(curve_part["test"])
    linear_mse, linear_se = mean_and_se(np.asarray(curve_part["linear_mse"])[:, None])
    nonlinear_mse, nonlinear_se = mean_and_se(np.asarray(curve_part["nonlinear_mse"])[:, None])
    ax.scatter(test[:, 0], test[:, 1], s=4, color="0.6", label="test data (noisy arc)")
    linear_curve = np.asarray(curve_part["linear_curve"])
    nonlinear_curve = np.asarray(curve_part["nonlinear_curve"])
    ax.plot(linear_curve[:, 0], linear_curve[:, 1], color="#1b9e77", linewidth=2.2,
            label="linear AE (run 0): the arc's reconstruction")
    ax.plot(nonlinear_curve[:, 0], nonlinear_curve[:, 1], color="#d95f02", linewidth=2.2,
            label="tanh AE (run 0): the arc's reconstruction")
    ax.set_aspect("equal")
    ax.set_xlabel("x₁")
    ax.set_ylabel("x₂")
    ax.set_title("(b) 1-D bottleneck on a curved\n1-D manifold", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7.5, frameon=False)

    ax = axes[2]
    labels = ["PCA,\n1 comp.", "linear\nAE", "tanh\nAE"]
    values = [curve_part["pca_mse"], linear_mse[0], nonlinear_mse[0]]
    errors = [0.0, linear_se[0], nonlinear_se[0]]
    ax.bar(labels, values, yerr=errors, capsize=4, color=["0.6", "#1b9e77", "#d95f02"])
    ax.axhline(curve_part["noise_floor"], color="black", linestyle="--", linewidth=1,
               label=f"noise across the arc, σ² = {curve_part['noise_floor']:.4f}")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 1.0)
    for x, (value, error) in enumerate(zip(values, errors)):
        ax.text(x, (value + error) * 1.15, f"{value:.3g}" + (f"\n± {error:.1g}" if error else ""),
                ha="center", va="bottom", fontsize=8.5)
    ax.set_ylabel("test squared error per point")
    ax.set_title("(c) reconstruction error\non fresh data", fontsize=9)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=7.5, frameon=False)
    fig.suptitle("Seed section 4: a linear autoencoder trained by squared error is PCA; "
                 f"a nonlinear one can follow a curved manifold.\n{runs} runs each (their own "
                 "initialisations): mean, band and bars ±1 s.e. over runs", fontsize=10)
    return fig


def _plot_single_bit(plt, data):
    part = data["single_bit"]
    dims = np.asarray(part["dims"], dtype=float)
    all_dims = np.asarray(part["dim"])
    fig, axes = _figure(plt, 2, 10.4, height=5.2)

    def mean_se(key):
        values = np.asarray(part[key])
        means, errors = [], []
        for d in dims:
            chosen = values[all_dims == d]
            means.append(chosen.mean())
            if chosen.size > 1:
                errors.append(chosen.std(ddof=1) / math.sqrt(chosen.size))
            else:  # one run: its own Monte Carlo error
                errors.append(np.asarray(part[key + "_se"])[all_dims == d][0])
        return np.asarray(means), np.asarray(errors)

    recon, recon_se = mean_se("reconstruction")
    kl, kl_se = mean_se("kl")
    flip = part["flip"]
    binary_entropy = -(flip * math.log(flip) + (1 - flip) * math.log(1 - flip))
    seeds = int(np.sum(all_dims == dims[0]))
    ax = axes[0]
    ax.errorbar(dims, recon / dims, yerr=recon_se / dims, color="#d95f02", marker="o",
                capsize=3, label="−E_q[log p(x|z)] / D (reconstruction)")
    ax.errorbar(dims, (recon + kl) / dims, yerr=np.hypot(recon_se, kl_se) / dims, color="#7570b3",
                marker="s", markerfacecolor="white", capsize=3, label="−ELBO / D")
    ax.plot(dims, np.asarray(part["entropy"]) / dims, color="black", linewidth=1.2,
            label="H(x) / D, exact (the best −ELBO / D)")
    ax.axhline(math.log(2), color="0.4", linestyle="--", label="ln 2: a fair coin per bit, no latent")
    ax.axhline(binary_entropy, color="0.4", linestyle=":",
               label=f"H({flip:g}) = {binary_entropy:.3f}: what knowing the bit alone leaves")
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [f"{d:g}" for d in dims])
    ax.set_xlabel("D, number of noisy copies of the bit")
    ax.set_ylabel("nats per bit")
    ax.set_title("(a) reconstruction term per bit", fontsize=9.5)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, fontsize=7,
              frameon=False)

    ax = axes[1]
    ax.errorbar(dims, kl, yerr=kl_se, color="#1b9e77", marker="o", capsize=3,
                label="KL(q(z|x) ‖ p(z)), mean over data")
    ax.axhline(math.log(2), color="0.4", linestyle="--", label="ln 2: the information in one bit")
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [f"{d:g}" for d in dims])
    ax.set_yscale("log")
    ax.set_ylim(min(1e-3, kl.min() / 3), max(3.0, kl.max() * 1.5))
    ax.annotate(f"D = {dims[0]:g}: −ELBO = {recon[0] + kl[0]:.4f} ≈ ln 2 = {math.log(2):.4f}\n"
                f"with KL = {kl[0]:.2g} nats: the latent is all but ignored", (dims[0], kl[0]),
                xytext=(12, 8), textcoords="offset points", fontsize=8.5,
                arrowprops={"arrowstyle": "-", "color": "0.5"})
    ax.set_xlabel("D, number of noisy copies of the bit")
    ax.set_ylabel("KL (nats per data point)")
    ax.set_title("(b) the latent is used only when D copies make it\nworth its KL",
                 fontsize=9.5)
    ax.legend(loc="upper left", fontsize=7.5)
    fig.suptitle(f"Seed section 7 (Shu 2017): a VAE with a 1-D latent on D copies of a fair bit, "
                 f"each flipped with probability {flip:g}\npathwise_analytic_kl, "
                 f"{part['steps']} Adam steps; mean over {seeds} runs (one group), ±1 s.e. over "
                 "runs", fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Key numbers
# --------------------------------------------------------------------------------------------


def summary(results: dict) -> str:
    """The key numbers of saved results, as plain text."""
    data = results["data"]
    lines = [f"seed-ideas ({results['metadata']['wall_seconds']:.0f} s)"]
    part = data["maximum_likelihood"]
    lines.append(f"section 1: -H(p) = {part['neg_entropy']:.4f}; KL(p || best Gaussian) = "
                 f"{part['best_gaussian_kl']:.4f}; per n: mean KL(p || p_hat) over fits, and "
                 "max |z| of fresh-data log-likelihood against -H(p) - KL(p || p_hat)")
    for family, row in part["families"].items():
        kl = np.asarray(row["kl"])
        z = ((np.asarray(row["heldout"]) - (part["neg_entropy"] - kl))
             / np.asarray(row["heldout_se"]))
        lines.append(f"  {family:20s} " + "  ".join(
            f"n={n}: {k:.4f}" for n, k in zip(part["sizes"], kl.mean(1)))
            + f"   max|z| {np.abs(z).max():.1f}")
    part = data["elbo_identity"]
    residual = np.abs(np.asarray(part["residual"]))
    lines.append(f"section 3: log p(x) = {part['log_evidence']:.6f}; max |log p(x) - ELBO - KL| "
                 f"= {residual.max():.2e} over {residual.size} q's (with KL reversed: "
                 f"{np.abs(np.asarray(part['wrong_residual'])).max():.3f})")
    part = data["linear_autoencoder"]
    angles, wrong = np.asarray(part["angles"]), np.asarray(part["wrong_angles"])
    lines.append(f"section 4: linear AE vs PCA over {part['runs']} runs: largest principal angle "
                 f"{angles.max():.1e} rad (smallest against components 3-4: {wrong.min():.2f}); "
                 f"squared error {max(h['mse'][-1] for h in part['history']):.6f} at most vs PCA "
                 f"{part['pca_mse']:.6f}")
    part = data["curved_manifold"]

    def both(values):
        values = np.asarray(values)
        se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
        return f"{values.mean():.4f} ± {se:.2g}"

    lines.append(f"           arc, test squared error per point (mean ± s.e. over "
                 f"{part['runs']} runs): PCA {part['pca_mse']:.4f}, linear AE "
                 f"{both(part['linear_mse'])}, tanh AE {both(part['nonlinear_mse'])} "
                 f"(noise {part['noise_floor']:.4f})")
    part = data["single_bit"]
    lines.append("section 7: D, run, reconstruction (nats per point), KL (nats per point), each "
                 "± its Monte Carlo s.e.; then the mean ± s.e. over runs")
    dims = np.asarray(part["dim"])
    for d, seed, r, rs, k, ks in zip(part["dim"], part["seed"], part["reconstruction"],
                                     part["reconstruction_se"], part["kl"], part["kl_se"]):
        lines.append(f"  D={d:<3d} run {seed}  {r:8.4f} ± {rs:.2g}   {k:8.4f} ± {ks:.2g}")
    for d in part["dims"]:
        chosen = dims == d
        lines.append(f"  D={d:<3d} mean   {both(np.asarray(part['reconstruction'])[chosen])}"
                     f"   {both(np.asarray(part['kl'])[chosen])}")
    lines.append(f"  ln 2 = {math.log(2):.4f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Print the key numbers of saved results: ``python -m experiments.MODULE [RESULTS]``."""
    from .common import summary_main

    return summary_main(NAME, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())
