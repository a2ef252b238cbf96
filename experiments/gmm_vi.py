"""gmm-vi: every ELBO gradient estimator on Gaussian-mixture targets, against exact gradients.

Variational inference of an unnormalised Gaussian-mixture target p(z) (the seed's section 2 model,
:class:`estimators.targets.GaussianMixtureTarget`) with q = N(loc, diag exp(2 log_scale)); lambda
is (loc, log_scale). Four parts:

1. Bias and variance of the lambda-gradient of every estimator of :data:`estimators.ESTIMATORS`,
   against the exact gradient from :mod:`experiments.quadrature`, as functions of
   * the number of samples K, on the 2-D "eight Gaussians" ring (adaptive cubature in 2-D): the
     variance of an average of K independent terms is Var_1 / K, so K x variance is flat;
   * the scale of q, on a skewed 1-D mixture (adaptive quadrature, scipy's quad_vec);
   * the dimension D up to 100, on a *product-form* target log p(z) = sum_d log p_d(z_d), each
     p_d a 1-D mixture: the exact gradient is then a sum of 1-D quadratures and stays exact at any
     D (a general D-dimensional mixture would need a D-dimensional integral).
   iwae, dreg and vimco estimate the gradient of the K-sample importance-weighted bound, not of
   the ELBO: their "bias" against the ELBO gradient is the gap between two objectives, expected
   and not an error. The K sweep also measures that gap directly with a high-precision Monte
   Carlo reference of the IWAE gradient, so the three can be compared with it (vimco from K = 2,
   where its leave-one-out baselines have another sample). The measure-valued estimators
   evaluate log p at 4D extra points per sample, so their cost grows as D^2: the dimension sweep
   runs them up to ``measure_valued_max_dim`` (and in passes of fewer replicates).
2. Fitting q with each estimator at an equal budget (same K per step, same steps, Adam), with the
   exact ELBO of every iterate by quadrature: the gap to the best Gaussian (found with exact
   gradients) against steps and against wall-clock time.
3. A mixture q whose component choice is discrete, and the gradient with respect to its logits:
   the score function of the registry on the augmented latent (c, z), and the registry's
   estimators of a discrete choice on q = MixtureSameFamily: the Gumbel-softmax relaxation
   (biased, more so as the temperature grows) and exact enumeration over components.

Parts 1 and 2 run every registry entry that takes a continuous q (``Estimator.q_kinds``); the
estimators of discrete latents only (enumeration, the relaxations, REBAR, RELAX, ARM, DisARM)
cannot take a Gaussian q, and part 3 and the ``discrete`` study measure them.

All Monte Carlo statistics come from :func:`estimators.diagnostics.replicate_gradients`: R
independent gradient estimates in one vectorised pass, with standard errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize
from torch.distributions import (Categorical, Distribution, Independent, MixtureSameFamily,
                                 Normal, constraints)

from estimators import ESTIMATORS, EmaBaseline
from estimators.diagnostics import gradient_statistics, replicate_gradients
from estimators.targets import GaussianMixtureTarget, WithStandardPrior

from .common import StudyConfig, Timer, progress, save_figure, study_device
from .quadrature import gaussian_elbo, mixture_elbo

NAME = "gmm-vi"
SUMMARY = "bias and variance of every estimator vs exact quadrature gradients on mixture targets"
DTYPE = torch.float64


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every field can be changed with --set FIELD=VALUE (tuples as comma-separated lists)."""

    num_replicates: int = 10000  # R: independent gradient estimates behind each point's error bar
    # --- the 1-D target (scale sweep, fits, discrete part): a skewed, unimodal 3-component mixture
    target_logits: tuple = (0.0, -0.5, 0.3)
    target_locs: tuple = (-1.0, 0.5, 2.0)
    target_scales: tuple = (0.8, 0.6, 1.0)
    # --- K sweep on the 2-D ring of eight Gaussians (radius 3, component scale 0.5)
    samples_grid: tuple = (1, 2, 4, 8, 16, 32, 64)  # K values
    ring_q_loc: tuple = (1.5, 0.5)  # q's mean: between two components, off every symmetry axis
    ring_q_scale: float = 1.0  # q's standard deviation in each coordinate
    reference_replicates: int = 100000  # iwae replicates behind the IWAE-gradient reference
    # --- scale sweep on the 1-D target
    scale_grid: tuple = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # q's standard deviation
    scale_q_loc: float = 0.0  # q's mean
    # --- dimension sweep on a product-form target
    dim_grid: tuple = (1, 2, 5, 10, 20, 50, 100)
    # the measure-valued estimators evaluate log p at 4D points of D coordinates per sample (D^2
    # work): the dimension sweep runs them up to this D and says so
    measure_valued_max_dim: int = 10
    dim_q_loc: float = 0.0  # q's mean in every coordinate
    dim_q_scale: float = 1.0  # q's standard deviation in every coordinate
    sweep_num_samples: int = 8  # K in the scale and dimension sweeps
    # --- fitting q with each estimator: equal budgets
    fit_dim: int = 10  # D of the product-form target being fitted
    fit_steps: int = 800  # Adam steps, the same for every estimator
    fit_num_samples: int = 4  # K per step, the same for every estimator
    fit_runs: int = 16  # independent runs per estimator, trained side by side as a batch of q's
    fit_learning_rate: float = 0.05
    fit_eval_every: int = 10  # steps between exact-ELBO evaluations
    fit_init_loc: float = 3.0  # every run starts at loc = this, scale = 1
    # --- discrete component choice: q = mixture of two Gaussians, gradient wrt its logits
    discrete_logits: tuple = (0.3, -0.3)
    discrete_locs: tuple = (-1.0, 1.5)
    discrete_scales: tuple = (0.7, 0.9)
    temperatures: tuple = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)  # Gumbel-softmax temperatures
    discrete_num_samples: int = 8  # K per gradient estimate (enumeration: K per component)

    # CPU only (low-dimensional Gaussians, scipy quadrature): --device cuda is refused
    DEVICES = ("cpu",)

    @classmethod
    def quick(cls) -> "Config":
        return cls(quick=True, num_replicates=1000, samples_grid=(1, 4, 16, 64),
                   reference_replicates=8000, scale_grid=(0.03, 0.3, 3.0),
                   dim_grid=(1, 10, 100), fit_steps=150, fit_runs=4, fit_eval_every=15,
                   temperatures=(0.1, 0.5, 2.0))


# --------------------------------------------------------------------------------------------
# Targets and variational families
# --------------------------------------------------------------------------------------------


def one_dimensional_target(config: Config) -> GaussianMixtureTarget:
    return GaussianMixtureTarget(torch.tensor(config.target_logits, dtype=DTYPE),
                                 torch.tensor(config.target_locs, dtype=DTYPE).unsqueeze(-1),
                                 torch.tensor(config.target_scales, dtype=DTYPE).unsqueeze(-1))


class ProductMixtureTarget:
    """log p(z) = sum_d log p_d(z_d), each p_d a 1-D Gaussian mixture: exact gradients at any D.

    The ELBO of a factorised q is then a sum of 1-D integrals (see
    :func:`experiments.quadrature.gaussian_elbo` with ``product=True``). ``logits``, ``locs`` and
    ``scales`` have shape (D, C).
    """

    def __init__(self, logits, locs, scales):
        self.logits = torch.as_tensor(logits, dtype=DTYPE)
        self.locs = torch.as_tensor(locs, dtype=DTYPE)
        self.scales = torch.as_tensor(scales, dtype=DTYPE)
        self.factors = MixtureSameFamily(Categorical(logits=self.logits),
                                         Normal(self.locs, self.scales))

    @classmethod
    def shifted_copies(cls, base: GaussianMixtureTarget, dim: int, seed: int = 0):
        """D copies of a 1-D mixture, each shifted by N(0, 1) and with jittered weights."""
        generator = torch.Generator().manual_seed(seed)
        shift = torch.randn(dim, 1, generator=generator, dtype=DTYPE)
        jitter = 0.5 * torch.randn(dim, base.logits.shape[-1], generator=generator, dtype=DTYPE)
        return cls(base.logits + jitter, base.locs[:, 0] + shift,
                   base.scales[:, 0].expand(dim, -1))

    def head(self, dim: int) -> "ProductMixtureTarget":
        """The first ``dim`` factors: a target whose exact gradient is a prefix of this one's."""
        return ProductMixtureTarget(self.logits[:dim], self.locs[:dim], self.scales[:dim])

    @property
    def dim(self) -> int:
        return self.logits.shape[0]

    def log_factors(self, z: torch.Tensor) -> torch.Tensor:
        """The D terms log p_d(z_d), shape (..., D)."""
        return self.factors.log_prob(z)

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        return self.log_factors(z).sum(-1)


def gaussian_q(loc: torch.Tensor, log_scale: torch.Tensor) -> Distribution:
    return Independent(Normal(loc, log_scale.exp()), 1)


class ComponentAndPoint(Distribution):
    """q(c, z) = pi_c N(z; locs_c, diag scales_c^2): a mixture with its component made explicit.

    A sample is the vector (c, z_1..z_D), event shape (1 + D,), so a score-function estimator sees
    the discrete choice c: its score includes grad log pi_c. No rsample (c is discrete).
    ``logits`` (..., C), ``locs`` and ``scales`` (..., C, D).
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = False

    def __init__(self, logits, locs, scales):
        self.logits, self.locs, self.scales = logits, locs, scales
        batch_shape = logits.shape[:-1]
        super().__init__(batch_shape, torch.Size([1 + locs.shape[-1]]), validate_args=False)

    @property
    def choice(self) -> Categorical:
        return Categorical(logits=self.logits)

    @property
    def components(self) -> Independent:
        return Independent(Normal(self.locs, self.scales), 1)

    @property
    def marginal(self) -> MixtureSameFamily:
        """q(z) = sum_c pi_c N(z; ...), the density the ELBO of a mixture q uses."""
        return MixtureSameFamily(self.choice, self.components)

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            choice = self.choice.sample(sample_shape)
            every = self.components.sample(sample_shape)  # (*S, *batch, C, D)
            index = choice[..., None, None].expand(*choice.shape, 1, every.shape[-1])
            point = every.gather(-2, index).squeeze(-2)
            return torch.cat([choice.unsqueeze(-1).to(point.dtype), point], -1)

    def log_prob(self, value):
        choice, point = value[..., 0].round().long(), value[..., 1:]
        per_component = self.components.log_prob(point.unsqueeze(-2))  # (..., C)
        joint = torch.log_softmax(self.logits, -1) + per_component
        return joint.gather(-1, choice.unsqueeze(-1)).squeeze(-1)

    def detached(self) -> "ComponentAndPoint":
        return ComponentAndPoint(self.logits.detach(), self.locs.detach(), self.scales.detach())


def mixture_q(logits, locs, scales) -> MixtureSameFamily:
    """q(z) = sum_c pi_c N(z; locs_c, diag scales_c^2), the marginal of :class:`ComponentAndPoint`:
    the form the registry's estimators of a discrete choice (enumeration, gumbel_softmax) take."""
    return MixtureSameFamily(Categorical(logits=logits), Independent(Normal(locs, scales), 1))


class AugmentedTarget:
    """p(z) r(c | z) with r = q(c | z) at q's current parameters, held fixed.

    With this model the augmented signal log p(z) + log r(c|z) - log q(c, z) equals
    log p(z) - log q(z) in value, and because E_q[grad log q(c|z)] = 0 holding r fixed leaves the
    expected gradient that of the mixture ELBO: a score-function estimator on (c, z) is unbiased for
    it.
    """

    def __init__(self, target, q_fixed: ComponentAndPoint):
        self.target, self.q_fixed = target, q_fixed

    def log_joint(self, value: torch.Tensor) -> torch.Tensor:
        point = value[..., 1:]
        posterior = self.q_fixed.log_prob(value) - self.q_fixed.marginal.log_prob(point)
        return self.target.log_joint(point) + posterior


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


# Points of z that one vectorised pass may hold: the measure-valued estimators evaluate log p at
# K (1 + 4D) points of D coordinates per replicate, so their passes hold fewer replicates.
MAX_POINTS_PER_PASS = 2_000_000


def chunk_for(name: str, num_samples: int, dim: int, chunk: int) -> int:
    """Replicates per vectorised pass: ``chunk``, fewer where the estimator evaluates log p at
    many points per replicate (the measure-valued ones)."""
    if not ESTIMATORS[name].needs_diagonal_gaussian:
        return chunk
    points = num_samples * (1 + 4 * dim) * dim
    return max(2, min(chunk, MAX_POINTS_PER_PASS // points))


def gaussian_gradients(name: str, target, loc: torch.Tensor, log_scale: torch.Tensor,
                       num_samples: int, num_replicates: int, chunk: int = 10_000) -> torch.Tensor:
    """R replicate lambda-gradients, (R, 2D): (d/dloc, d/dlog_scale), vectorised in chunks."""
    estimator = ESTIMATORS[name]
    chunk = chunk_for(name, num_samples, loc.shape[-1], chunk)
    target = WithStandardPrior(target, loc.shape[-1], DTYPE)

    def build(lam, theta):
        return target, gaussian_q(lam["loc"], lam["log_scale"])

    options = {}
    if name == "score_function_ema":
        # The moving average after one warm-up call: b = the mean signal, independent of the
        # samples it is then used with, as after a stretch of training at these parameters.
        state = EmaBaseline()
        warm = gaussian_q(loc.expand(min(num_replicates, chunk), -1),
                          log_scale.expand(min(num_replicates, chunk), -1))
        estimator(target, warm, num_samples, state=state)
        options = {"state": state}
    grads = replicate_gradients(estimator, build, {"loc": loc, "log_scale": log_scale},
                                num_replicates=num_replicates, num_samples=num_samples,
                                chunk=chunk, **options)
    return torch.cat([grads.lambda_["loc"], grads.lambda_["log_scale"]], -1)


def summarise(grads: torch.Tensor, exact: torch.Tensor) -> dict:
    """Bias of d/dloc_1 (the first coordinate) and the total variance, each with its error."""
    stats = gradient_statistics(grads, exact)
    return {
        "mean": stats.mean[0].item(), "mean_se": stats.mean_se[0].item(),
        "bias": stats.bias[0].item(), "bias_se": stats.bias_se[0].item(),
        "relative_bias": (stats.bias[0] / exact[0]).item(),
        "max_abs_z": stats.z.abs().max().item(),
        "total_variance": stats.total_variance.item(),
        "total_variance_se": stats.total_variance_se.item(),
    }


# The registry entries that take a Gaussian q: the estimators of discrete latents only (q_kinds
# without "continuous") are left out of parts 1 and 2, and measured in part 3 and by the discrete
# study.
GAUSSIAN = [n for n, e in ESTIMATORS.items() if "continuous" in e.q_kinds]


def _estimator_names(num_samples: int) -> list[str]:
    return [n for n in GAUSSIAN if num_samples >= ESTIMATORS[n].min_samples]


def samples_sweep(config: Config) -> dict:
    """Bias and variance against K on the 2-D ring; the IWAE-gradient reference for iwae/dreg."""
    target = GaussianMixtureTarget.ring()
    loc = torch.tensor(config.ring_q_loc, dtype=DTYPE)
    log_scale = torch.full_like(loc, math.log(config.ring_q_scale))
    exact = gaussian_elbo(target.log_joint, loc, log_scale)
    exact_grad = torch.cat([exact.loc, exact.log_scale])
    rows = {name: {"num_samples": []} for name in GAUSSIAN}
    reference = {"num_samples": [], "gap": [], "gap_se": [], "dreg_z": [], "vimco_z": []}
    jobs = [(k, n) for k in config.samples_grid for n in _estimator_names(k)]
    for num_samples, name in progress(jobs, desc="gmm-vi: K sweep"):
        grads = gaussian_gradients(name, target, loc, log_scale, num_samples,
                                   config.num_replicates)
        row = summarise(grads, exact_grad)
        rows[name]["num_samples"].append(num_samples)
        for key, value in row.items():
            rows[name].setdefault(key, []).append(value)
    for num_samples in progress(config.samples_grid, desc="gmm-vi: IWAE reference"):
        grads = gaussian_gradients("iwae", target, loc, log_scale, num_samples,
                                   config.reference_replicates)
        stats = gradient_statistics(grads, exact_grad)
        reference["num_samples"].append(num_samples)
        reference["gap"].append(stats.bias[0].item())
        reference["gap_se"].append(stats.bias_se[0].item())
        for name in ("dreg", "vimco"):  # vimco from K = 2: its baselines need another sample
            if num_samples not in rows[name]["num_samples"]:
                reference[f"{name}_z"].append(None)
                continue
            index = rows[name]["num_samples"].index(num_samples)
            bias, se = rows[name]["bias"][index], rows[name]["bias_se"][index]
            reference[f"{name}_z"].append((bias - stats.bias[0].item())
                                          / math.hypot(se, stats.bias_se[0].item()))
    return {"target": "GaussianMixtureTarget.ring()", "q_loc": list(config.ring_q_loc),
            "q_scale": config.ring_q_scale, "exact_gradient": exact_grad.tolist(),
            "exact_elbo": exact.elbo.item(), "quadrature_error": exact.error,
            "estimators": rows, "iwae_reference": reference}


def scale_sweep(config: Config) -> dict:
    """Bias and variance against q's scale on the 1-D mixture, K fixed."""
    target = one_dimensional_target(config)
    scales = torch.tensor(config.scale_grid, dtype=DTYPE).unsqueeze(-1)
    locs = torch.full_like(scales, config.scale_q_loc)
    exact = gaussian_elbo(target.log_joint, locs, scales.log())  # every scale in one call
    rows = {name: {"scale": []} for name in _estimator_names(config.sweep_num_samples)}
    jobs = [(i, n) for i in range(len(config.scale_grid)) for n in rows]
    for index, name in progress(jobs, desc="gmm-vi: scale sweep"):
        exact_grad = torch.cat([exact.loc[index], exact.log_scale[index]])
        grads = gaussian_gradients(name, target, locs[index], scales[index].log(),
                                   config.sweep_num_samples, config.num_replicates)
        rows[name]["scale"].append(config.scale_grid[index])
        for key, value in summarise(grads, exact_grad).items():
            rows[name].setdefault(key, []).append(value)
    return {"num_samples": config.sweep_num_samples, "q_loc": config.scale_q_loc,
            "exact_gradient_loc": exact.loc[:, 0].tolist(), "quadrature_error": exact.error,
            "estimators": rows}


def dimension_sweep(config: Config) -> dict:
    """Bias and variance against D on the product-form target, K fixed."""
    largest = ProductMixtureTarget.shifted_copies(one_dimensional_target(config),
                                                  max(config.dim_grid), seed=config.seed)
    loc = torch.full((largest.dim,), config.dim_q_loc, dtype=DTYPE)
    log_scale = torch.full_like(loc, math.log(config.dim_q_scale))
    # Product form: each coordinate's gradient involves its own factor only, so the exact
    # gradient of every smaller D is a prefix of this one.
    exact = gaussian_elbo(largest.log_factors, loc, log_scale, product=True)
    rows = {name: {"dim": []} for name in _estimator_names(config.sweep_num_samples)}
    # The measure-valued estimators' cost grows as D^2 (module docstring): up to
    # measure_valued_max_dim only.
    jobs = [(d, n) for d in config.dim_grid for n in rows
            if d <= config.measure_valued_max_dim or not ESTIMATORS[n].needs_diagonal_gaussian]
    rows = {n: row for n, row in rows.items() if any(n == name for _, name in jobs)}
    for dim, name in progress(jobs, desc="gmm-vi: dimension sweep"):
        exact_grad = torch.cat([exact.loc[:dim], exact.log_scale[:dim]])
        grads = gaussian_gradients(name, largest.head(dim), loc[:dim], log_scale[:dim],
                                   config.sweep_num_samples, config.num_replicates)
        rows[name]["dim"].append(dim)
        for key, value in summarise(grads, exact_grad).items():
            rows[name].setdefault(key, []).append(value)
    return {"num_samples": config.sweep_num_samples, "q_loc": config.dim_q_loc,
            "q_scale": config.dim_q_scale, "quadrature_error": exact.error, "estimators": rows,
            "measure_valued_max_dim": config.measure_valued_max_dim}


def best_gaussian(target: ProductMixtureTarget) -> tuple[float, np.ndarray]:
    """The maximal ELBO over Gaussian q, by L-BFGS on the exact ELBO and its exact gradient."""
    dim = target.dim

    def negative(params):
        exact = gaussian_elbo(target.log_factors, torch.from_numpy(params[:dim]),
                              torch.from_numpy(params[dim:]), product=True, method="cubature")
        return -exact.elbo.item(), -torch.cat([exact.loc, exact.log_scale]).numpy()

    # Start from the moment-matched Gaussian, close to the optimum of this unimodal target.
    weights = torch.softmax(target.logits, -1)
    mean = (weights * target.locs).sum(-1)
    variance = (weights * (target.scales.pow(2) + target.locs.pow(2))).sum(-1) - mean.pow(2)
    start = torch.cat([mean, 0.5 * variance.log()]).numpy()
    result = optimize.minimize(negative, start, jac=True, method="BFGS", options={"gtol": 1e-9})
    return -float(result.fun), result.x


def fit(config: Config) -> dict:
    """Adam on q with each estimator at one budget; the exact ELBO of every iterate afterwards."""
    target = ProductMixtureTarget.shifted_copies(one_dimensional_target(config), config.fit_dim,
                                                 seed=config.seed)
    optimum, _ = best_gaussian(target)
    runs, dim = config.fit_runs, config.fit_dim
    model = WithStandardPrior(target, dim, DTYPE)
    rows = {}
    for name in progress(_estimator_names(config.fit_num_samples), desc="gmm-vi: fits"):
        estimator = ESTIMATORS[name]
        loc = torch.full((runs, dim), config.fit_init_loc, dtype=DTYPE, requires_grad=True)
        log_scale = torch.zeros((runs, dim), dtype=DTYPE, requires_grad=True)
        optimizer = torch.optim.Adam([loc, log_scale], lr=config.fit_learning_rate)
        options = {"state": EmaBaseline()} if name == "score_function_ema" else {}
        snapshots, steps, seconds, elapsed, durations = [], [], [], 0.0, []
        for step in range(config.fit_steps + 1):
            if step % config.fit_eval_every == 0 or step == config.fit_steps:
                snapshots.append((loc.detach().clone(), log_scale.detach().clone()))
                steps.append(step)
                seconds.append(elapsed)
            if step == config.fit_steps:
                break
            with Timer() as timer:
                estimate = estimator(model, gaussian_q(loc, log_scale), config.fit_num_samples,
                                     **options)
                optimizer.zero_grad()
                (-estimate.surrogate.sum()).backward()
                optimizer.step()
            elapsed += timer.seconds
            durations.append(timer.seconds)
        locs = torch.stack([s[0] for s in snapshots])  # (T, runs, D)
        log_scales = torch.stack([s[1] for s in snapshots])
        elbo = gaussian_elbo(target.log_factors, locs, log_scales, product=True,
                             method="cubature").elbo
        gap = (optimum - elbo).clamp_min(1e-12)  # (T, runs)
        rows[name] = {
            "step": steps, "seconds": seconds,
            "gap_mean": gap.mean(1).tolist(),
            "gap_se": (gap.std(1) / math.sqrt(runs)).tolist(),
            "seconds_per_step": elapsed / config.fit_steps,
            # The median step is robust to other processes taking the CPU for a while.
            "median_step_seconds": float(np.median(durations)),
            "final_gap": gap[-1].tolist(),
        }
    return {"dim": dim, "optimum_elbo": optimum, "num_samples": config.fit_num_samples,
            "runs": runs, "learning_rate": config.fit_learning_rate, "estimators": rows}


def discrete(config: Config) -> dict:
    """Logit gradients of a two-component mixture q: score function, Gumbel-softmax, enumeration."""
    target = one_dimensional_target(config)
    logits = torch.tensor(config.discrete_logits, dtype=DTYPE)
    locs = torch.tensor(config.discrete_locs, dtype=DTYPE).unsqueeze(-1)
    log_scales = torch.tensor(config.discrete_scales, dtype=DTYPE).log().unsqueeze(-1)
    elbo, exact_logits = mixture_elbo(target.log_joint, logits, locs[:, 0], log_scales[:, 0].exp())
    params = {"logits": logits, "locs": locs, "log_scales": log_scales}

    def measure(estimator, augmented: bool, **options) -> dict:
        def build(lam, theta):
            if not augmented:  # the registry's estimators of a discrete choice
                return target, mixture_q(lam["logits"], lam["locs"], lam["log_scales"].exp())
            q = ComponentAndPoint(lam["logits"], lam["locs"], lam["log_scales"].exp())
            return AugmentedTarget(target, q.detached()), q

        grads = replicate_gradients(estimator, build, params, num_replicates=config.num_replicates,
                                    num_samples=config.discrete_num_samples, **options)
        stats = gradient_statistics(grads.lambda_["logits"], exact_logits)
        return {"mean": stats.mean[0].item(), "mean_se": stats.mean_se[0].item(),
                "variance": stats.variance[0].item(), "variance_se": stats.variance_se[0].item(),
                "z": stats.z[0].item()}

    methods = {name: measure(ESTIMATORS[name], True)
               for name in ("score_function", "score_function_loo")}
    methods["enumeration"] = measure(ESTIMATORS["enumeration"], False)
    relaxed = {"temperature": []}
    for temperature in progress(config.temperatures, desc="gmm-vi: Gumbel-softmax"):
        row = measure(ESTIMATORS["gumbel_softmax"], False, temperature=temperature)
        relaxed["temperature"].append(temperature)
        for key, value in row.items():
            relaxed.setdefault(key, []).append(value)
    return {"exact_elbo": elbo, "exact_gradient": exact_logits[0].item(),
            "num_samples": config.discrete_num_samples, "methods": methods,
            "gumbel_softmax": relaxed}


def validate(config: Config) -> None:
    """Refuse, with one line naming the field, a config the study cannot run."""
    problems = [
        (config.num_replicates < 2, f"num_replicates must be >= 2 to estimate a variance, "
                                    f"got {config.num_replicates}"),
        (config.reference_replicates < 2, "reference_replicates must be >= 2"),
        (not config.samples_grid or min(config.samples_grid) < 1,
         f"samples_grid must hold K >= 1, got {config.samples_grid}"),
        (config.sweep_num_samples < 2, "sweep_num_samples must be >= 2 (score_function_loo and "
                                       f"score_function_optimal need two), got "
                                       f"{config.sweep_num_samples}"),
        (not config.scale_grid or min(config.scale_grid) <= 0,
         f"scale_grid must hold positive scales, got {config.scale_grid}"),
        (not config.dim_grid or min(config.dim_grid) < 1,
         f"dim_grid must hold dimensions >= 1, got {config.dim_grid}"),
        (config.measure_valued_max_dim < 1,
         f"measure_valued_max_dim must be >= 1, got {config.measure_valued_max_dim}"),
        (not config.temperatures or min(config.temperatures) <= 0,
         f"temperatures must be positive, got {config.temperatures}"),
        (config.ring_q_scale <= 0 or config.dim_q_scale <= 0, "q scales must be positive"),
        (len(config.ring_q_loc) != 2, f"ring_q_loc must have 2 entries, got {config.ring_q_loc}"),
        (len({len(config.target_logits), len(config.target_locs), len(config.target_scales)}) != 1,
         "target_logits, target_locs and target_scales must have one length"),
        (len({len(config.discrete_logits), len(config.discrete_locs),
              len(config.discrete_scales)}) != 1,
         "discrete_logits, discrete_locs and discrete_scales must have one length"),
        (min(config.target_scales + config.discrete_scales) <= 0, "mixture scales must be positive"),
        (config.fit_dim < 1 or config.fit_steps < 1 or config.fit_eval_every < 1,
         "fit_dim, fit_steps and fit_eval_every must be >= 1"),
        (config.fit_runs < 2, f"fit_runs must be >= 2 for a standard error, got {config.fit_runs}"),
        (config.fit_num_samples < 2, "fit_num_samples must be >= 2 (two estimators need two)"),
        (config.fit_learning_rate <= 0, "fit_learning_rate must be positive"),
        (config.discrete_num_samples < 2, "discrete_num_samples must be >= 2"),
    ]
    for failed, message in problems:
        if failed:
            raise SystemExit(f"error: gmm-vi: {message}")


PARTS = {"samples": samples_sweep, "scale": scale_sweep, "dimension": dimension_sweep,
         "fit": fit, "discrete": discrete}


def run(config: Config, paths) -> dict:
    study_device(config, NAME)  # refuses, in one line, any device but the CPU
    validate(config)
    data = {"estimators": list(GAUSSIAN),
            "objectives": {name: ESTIMATORS[name].objective for name in GAUSSIAN}}
    # One bar over the parts, shown before the first part's exact gradients by cubature (several
    # seconds with no inner bar yet), then each part's own bar below it.
    bar = progress(PARTS.items(), desc="gmm-vi: parts", total=len(PARTS), leave=True)
    for name, part in bar:
        bar.set_postfix_str(name)
        data[name] = part(config)
    return data


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def _style(name: str, objective: str) -> dict:
    """The estimator's colour, line style and marker; open markers for the estimators of the
    K-sample bound (iwae, dreg, vimco), which are not meant to follow the ELBO's gradient."""
    from .style import estimator_style

    style = estimator_style(name)
    return {**style, "markersize": 4, "linewidth": 1.3, "capsize": 2, "elinewidth": 0.9,
            "markerfacecolor": "white" if objective == "iwae" else style["color"]}


def _jitter(values, index: int, count: int, spread: float = 0.06):
    """Spread estimators' markers sideways on a log axis so their error bars do not overlap."""
    factor = 10 ** (spread * (index - (count - 1) / 2) / max(count - 1, 1))
    return [v * factor for v in values]


def _figure(plt, rows: int, columns: int, width: float = 10.4, height: float = 7.4, **kwargs):
    fig, axes = plt.subplots(rows, columns, figsize=(width, height), layout="constrained",
                             squeeze=False, **kwargs)
    return fig, axes


def _z_panel(ax, rows: dict, objectives: dict, what: str, gradient: str) -> None:
    """Every ELBO estimator's bias in standard errors, one column each, one point per setting.

    Ten estimators' biases with error bars against the sweep were a tangle; their message is
    that each sits within a few standard errors of zero, which the z-scores show one by one.
    """
    names = [n for n in rows if objectives[n] == "elbo"]
    z_all = []
    for column, name in enumerate(names):
        row = rows[name]
        z = np.asarray(row["bias"], float) / np.asarray(row["bias_se"], float)
        offsets = np.linspace(-0.25, 0.25, len(z)) if len(z) > 1 else np.zeros(1)
        style = _style(name, "elbo")
        ax.plot(column + offsets, z, linestyle="none", marker=style["marker"], markersize=4,
                color=style["color"], markerfacecolor=style["markerfacecolor"])
        z_all.append(z)
    z_all = np.concatenate(z_all)
    ax.axhspan(-2, 2, color="0.85", alpha=0.6, linewidth=0, zorder=0)
    ax.axhline(0.0, color="black", linewidth=0.8)
    for level in (-3, 3):
        ax.axhline(level, color="0.5", linewidth=0.8, linestyle=":")
    ax.set_xticks(range(len(names)), names, rotation=40, ha="right", fontsize=7.5)
    ax.set_xlim(-0.6, len(names) - 0.4)
    limit = max(4.0, 1.1 * np.nanmax(np.abs(z_all)))
    ax.set_ylim(-limit, limit)
    ax.grid(False, axis="x")
    ax.set_ylabel(f"bias of {gradient} / its s.e.\n(mean − exact, in standard errors)")
    beyond = int(np.sum(np.abs(z_all) > 2))
    ax.set_title(f"(a) ELBO estimators: bias in s.e., one point per {what}\n"
                 f"{beyond} of {z_all.size} beyond ±2 (shaded); chance alone puts 4.6% there",
                 fontsize=9)


def _gap_panel(ax, rows: dict, key: str, objectives: dict, gradient: str, xlabel: str,
               title: str) -> None:
    """The K-sample bound's estimators: their departure from the ELBO's gradient (expected)."""
    names = [n for n in rows if objectives[n] == "iwae"]
    for index, name in enumerate(names):
        row = rows[name]
        ax.errorbar(_jitter(row[key], index, len(names), 0.12), row["bias"], yerr=row["bias_se"],
                    label=name, **_style(name, "iwae"))
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"bias: mean estimate − exact {gradient}\n(±1 s.e.)")
    ax.set_title(title, fontsize=9)


def _variance_panel(ax, rows: dict, key: str, objectives: dict, names=None,
                    times_key: bool = False) -> None:
    names = list(rows) if names is None else names
    for index, name in enumerate(names):
        row = rows[name]
        scale = np.asarray(row[key], float) if times_key else 1.0
        ax.errorbar(_jitter(row[key], index, len(names), 0.03),
                    np.asarray(row["total_variance"]) * scale,
                    yerr=np.asarray(row["total_variance_se"]) * scale, label=name,
                    **_style(name, objectives[name]))
    ax.set_xscale("log")
    ax.set_yscale("log")


def _score_functions(rows: dict) -> list:
    from .style import family_of

    return [n for n in rows if family_of(n) == "score function"]


def _legend(fig, axes, extra=(), ncol: int = 4) -> None:
    """One legend below the panels: every estimator any panel draws, in registry order."""
    found = {}
    for ax in np.ravel(axes):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            found.setdefault(label, handle)
    from .style import FAMILIES

    order = [member for _, members in FAMILIES.values() for member in members]
    labels = sorted(found, key=lambda label: order.index(label) if label in order else len(order))
    handles = [found[label] for label in labels]
    for handle, label in extra:
        handles.append(handle)
        labels.append(label)
    fig.legend(handles, labels, loc="outside lower center", ncol=ncol, fontsize=7.5,
               frameon=False, columnspacing=1.2, handlelength=2.6)


_OPEN = "open markers: iwae, dreg and vimco, which estimate the K-sample bound's gradient"


def plot(results: dict, results_path, paths) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .style import plain_log_ticks, rc_context

    data = results["data"]
    objectives = data["objectives"]
    script = "experiments/gmm_vi.py"
    figures = []
    with rc_context():
        figures += _plot_samples(plt, data, objectives, results_path, paths, script)
        figures += _plot_sweep(plt, data, "scale", objectives, results_path, paths, script)
        figures += _plot_sweep(plt, data, "dimension", objectives, results_path, paths, script)
        figures += _plot_fit(plt, data["fit"], objectives, results_path, paths, script,
                             plain_log_ticks)
        figures += _plot_discrete(plt, data["discrete"], results_path, paths, script)
    return figures


def _plot_samples(plt, data, objectives, results_path, paths, script) -> list:
    """K sweep: the 1/K law, K x variance, and the bias of each objective's estimators."""
    from matplotlib.lines import Line2D

    part = data["samples"]
    rows = part["estimators"]
    fig, axes = _figure(plt, 2, 2)
    few = [n for n in ("score_function", "pathwise", "measure_valued", "iwae") if n in rows]
    _variance_panel(axes[0, 0], rows, "num_samples", objectives, names=few)
    grid = np.array(sorted({k for r in rows.values() for k in r["num_samples"]}), float)
    anchor = rows["pathwise"]["total_variance"][0] * rows["pathwise"]["num_samples"][0]
    axes[0, 0].plot(grid, anchor / grid, color="0.5", linestyle=":", linewidth=2)
    axes[0, 0].set_ylabel("total variance of the λ-gradient\n(trace of covariance, ±1 s.e.)")
    axes[0, 0].set_title("(a) variance falls as 1/K (dotted: ∝ 1/K through pathwise);\n"
                         "one estimator of each family", fontsize=9)
    _variance_panel(axes[0, 1], rows, "num_samples", objectives, times_key=True)
    axes[0, 1].set_ylabel("K × total variance\n(flat under the 1/K law, ±1 s.e.)")
    axes[0, 1].set_title("(b) K × variance, every estimator: flat for the ELBO's,\n"
                         "rising for the K-sample bound's", fontsize=9)
    for ax in axes[0]:
        ax.set_xlabel("samples per estimate K")
    _z_panel(axes[1, 0], rows, objectives, "K", "∂ELBO/∂loc₁")
    axes[1, 0].set_title(axes[1, 0].get_title().replace("(a)", "(c)"), fontsize=9)
    _gap_panel(axes[1, 1], rows, "num_samples", objectives, "∂ELBO/∂loc₁",
               "samples per estimate K",
               "(d) K-sample bound estimators: they follow the bound,\nnot the ELBO")
    ref = part["iwae_reference"]
    gap, gap_se = np.asarray(ref["gap"]), np.asarray(ref["gap_se"])
    # A band of ±2 s.e. would be thinner than the lines on it: a wide pale line instead.
    (reference,) = axes[1, 1].plot(ref["num_samples"], gap, color="0.55", alpha=0.45,
                                   linewidth=7, solid_capstyle="round", zorder=0)
    fig.suptitle(f"2-D ring of eight Gaussians, q = N({part['q_loc']}, {part['q_scale']}² I): "
                 "gradient of the ELBO with respect to q's (loc, log-scale);\nexact value by "
                 "adaptive cubature; " + _OPEN, fontsize=9.5)
    _legend(fig, axes, extra=[
        (Line2D([], [], color="0.5", linestyle=":", linewidth=2), "∝ 1/K"),
        (reference, "IWAE-K gradient − ELBO gradient (Monte Carlo reference, 2 s.e. ≤ "
                    f"{2 * gap_se.max():.2g})")])
    return save_figure(fig, paths, "gmm-vi-samples", results_path, script)


def _plot_sweep(plt, data, name, objectives, results_path, paths, script) -> list:
    """The scale or the dimension sweep: bias of each objective's estimators, then variance, the
    score functions apart from the rest (a panel of thirteen crossing lines reads as none)."""
    part = data[name]
    rows = part["estimators"]
    key, xlabel, what = (("scale", "standard deviation of q", "σ") if name == "scale" else
                         ("dim", "dimension D", "D"))
    fig, axes = _figure(plt, 2, 2)
    gradient = "∂ELBO/∂loc" if name == "scale" else "∂ELBO/∂loc₁"
    _z_panel(axes[0, 0], rows, objectives, what, gradient)
    _gap_panel(axes[0, 1], rows, key, objectives, gradient, xlabel,
               "(b) K-sample bound estimators: their bound's\ngradient departs from the ELBO's")
    scores = _score_functions(rows)
    others = [n for n in rows if n not in scores]
    _variance_panel(axes[1, 0], rows, key, objectives, names=scores)
    _variance_panel(axes[1, 1], rows, key, objectives, names=others)
    axes[1, 0].set_title("(c) variance: the score functions", fontsize=9)
    axes[1, 1].set_title("(d) variance: pathwise, measure-valued and K-sample bound",
                         fontsize=9)
    for ax in axes[1]:
        ax.set_xlabel(xlabel)
        ax.set_ylabel("total variance of the λ-gradient\n(trace of covariance, ±1 s.e.)")
    low = min(min(np.asarray(r["total_variance"]).min() for r in rows.values()), np.inf)
    high = max(np.asarray(r["total_variance"]).max() for r in rows.values())
    for ax in axes[1]:  # one scale for both variance panels, so that they compare
        ax.set_ylim(low / 3, high * 3)
    extra = []
    if name == "dimension":
        dims = np.array(sorted({d for r in rows.values() for d in r["dim"]}), float)
        # Guides through the first point of: pathwise (∝ D), the leave-one-out baseline (∝ D²,
        # a centred signal of variance ∝ D times D score coordinates) and no baseline (∝ D³:
        # the signal's mean, ∝ D, enters squared). The D³ term overtakes at large D only, so
        # that guide goes through the last point.
        for estimator, power, line, at, ax in (
                ("pathwise", 1, ":", 0, axes[1, 1]), ("score_function_loo", 2, "-.", 0, axes[1, 0]),
                ("score_function", 3, "--", -1, axes[1, 0])):
            through = rows[estimator]["total_variance"][at] / rows[estimator]["dim"][at] ** power
            (guide,) = ax.plot(dims, through * dims ** power, color="0.55", linestyle=line,
                               linewidth=1.5, zorder=0)
            extra.append((guide, f"∝ D{'' if power == 1 else '²³'[power - 2]} (through "
                                 f"{estimator} at D = {rows[estimator]['dim'][at]})"))
    if name == "scale":
        title = (f"1-D three-component mixture, q = N({part['q_loc']}, σ²), K = "
                 f"{part['num_samples']}; exact gradient by adaptive quadrature")
    else:
        limit = part.get("measure_valued_max_dim")
        title = (f"product of D one-dimensional mixtures, q = N({part['q_loc']}, "
                 f"{part['q_scale']}² I), K = {part['num_samples']}; exact gradient = sum of "
                 "1-D quadratures" + (f";\nmeasure-valued up to D = {limit} (their cost grows "
                                      "as D²)" if limit is not None else ""))
    fig.suptitle(title + ("; " if name == "dimension" else ";\n") + _OPEN, fontsize=9.5)
    _legend(fig, axes, extra=extra)
    return save_figure(fig, paths, f"gmm-vi-{name}", results_path, script)


def _plot_fit(plt, part, objectives, results_path, paths, script, plain_log_ticks) -> list:
    """Fits at equal budgets, against steps and time; the score functions in the top row."""
    rows = part["estimators"]
    fig, axes = _figure(plt, 2, 2, height=7.2, sharey=True)
    scores = _score_functions(rows)
    for name, row in rows.items():
        style = _style(name, objectives[name])
        mean, se = np.asarray(row["gap_mean"]), np.asarray(row["gap_se"])
        seconds = np.asarray(row["step"]) * row["median_step_seconds"]
        line = 0 if name in scores else 1
        for ax, x in ((axes[line, 0], row["step"]), (axes[line, 1], seconds)):
            ax.plot(x, mean, color=style["color"], linestyle=style["linestyle"], linewidth=1.3,
                    label=name)
            ax.fill_between(x, np.maximum(mean - se, mean * 0.05), mean + se,
                            color=style["color"], alpha=0.2, linewidth=0)
    for ax in axes.flat:
        ax.set_yscale("log")
    for ax in axes[:, 0]:
        ax.set_ylabel("ELBO gap to the best Gaussian q\n(nats, exact)")
    axes[1, 0].set_xlabel("Adam step")
    axes[1, 1].set_xlabel("training time (s) = steps × median wall-clock time of one step\n"
                          f"(estimator, backward pass and Adam update, {part['runs']} runs "
                          "batched)")
    axes[0, 0].set_title(f"(a) the score functions, against steps (mean ± s.e. of "
                         f"{part['runs']} runs)", fontsize=9)
    axes[0, 1].set_title("(b) the score functions, against wall-clock time", fontsize=9)
    axes[1, 0].set_title("(c) the others, against steps", fontsize=9)
    axes[1, 1].set_title("(d) the others, against wall-clock time", fontsize=9)
    for column in range(2):  # the same time and step axes above and below
        low = min(ax.get_xlim()[0] for ax in axes[:, column])
        high = max(ax.get_xlim()[1] for ax in axes[:, column])
        for ax in axes[:, column]:
            ax.set_xlim(low, high)
    fig.suptitle(f"fitting q to a {part['dim']}-D product of mixtures, K = {part['num_samples']} "
                 f"per step, Adam (lr {part['learning_rate']}); best ELBO "
                 f"{part['optimum_elbo']:.4f}; the score functions apart from the others",
                 fontsize=9.5)
    _legend(fig, axes)
    return save_figure(fig, paths, "gmm-vi-fit", results_path, script)


def _plot_discrete(plt, part: dict, results_path, paths, script: str) -> list:
    from .style import estimator_style

    relaxed = part["gumbel_softmax"]
    temps = np.asarray(relaxed["temperature"])
    fig, axes = _figure(plt, 1, 2, height=4.0)
    axes = axes[0]
    exact = part["exact_gradient"]
    axes[0].axhline(exact, color="black", linewidth=1.0, linestyle=(0, (2, 2)),
                    label="exact (quadrature)", zorder=3)
    for name, row in part["methods"].items():
        style = estimator_style(name)
        for ax, key in ((axes[0], "mean"), (axes[1], "variance")):
            value, se = row[key], row[key + "_se"]
            ax.axhspan(value - se, value + se, color=style["color"], alpha=0.25, linewidth=0)
            ax.axhline(value, color=style["color"], linewidth=1.3, linestyle=style["linestyle"],
                       label=name)
    style = estimator_style("gumbel_softmax")
    for ax, key in ((axes[0], "mean"), (axes[1], "variance")):
        ax.errorbar(temps, relaxed[key], yerr=relaxed[key + "_se"], color=style["color"],
                    linestyle=style["linestyle"], marker=style["marker"], markersize=4.5,
                    capsize=2, label="gumbel_softmax")
        ax.set_xscale("log")
        ax.set_xlabel("Gumbel-softmax temperature τ")
    axes[1].set_yscale("log")
    axes[0].set_ylabel("estimate of ∂ELBO/∂logit₁ (mean ± 1 s.e.)")
    axes[1].set_ylabel("variance of one estimate (±1 s.e.)")
    axes[0].set_title("(a) mean: the relaxation is biased at high τ", fontsize=9)
    axes[1].set_title("(b) variance: the relaxation pays at low τ", fontsize=9)
    axes[0].legend(fontsize=7.5, frameon=False)
    fig.suptitle(f"two-component mixture q, gradient with respect to its logits, K = "
                 f"{part['num_samples']} (enumeration: K per component);\nhorizontal lines "
                 "(bands ±1 s.e.) do not depend on τ", fontsize=9.5)
    return save_figure(fig, paths, "gmm-vi-discrete", results_path, script)


# --------------------------------------------------------------------------------------------
# Key numbers: python -m experiments.gmm_vi [RESULTS.json]
# --------------------------------------------------------------------------------------------


def summary(results: dict) -> str:
    """The key numbers of saved results, as plain text."""
    data = results["data"]
    lines = [f"gmm-vi ({results['metadata']['wall_seconds']:.0f} s, "
             f"R = {results['metadata']['config']['num_replicates']} replicates per point)"]
    part = data["samples"]
    lines.append("K sweep (2-D ring): total variance of the lambda-gradient, K x variance at the "
                 "largest K, max |z| of the bias over all coordinates and K")
    for name, row in part["estimators"].items():
        k, last = row["num_samples"], len(row["num_samples"]) - 1
        lines.append(f"  {name:24s} Var(K={k[0]}) {row['total_variance'][0]:8.2f} ± "
                     f"{row['total_variance_se'][0]:.2f}   K x Var(K={k[last]}) "
                     f"{k[last] * row['total_variance'][last]:8.2f} ± "
                     f"{k[last] * row['total_variance_se'][last]:.2f}   max|z| "
                     f"{max(row['max_abs_z']):6.1f}")
    ref = part["iwae_reference"]
    lines.append("  IWAE-K gradient - ELBO gradient (d/dloc_1, reference): "
                 + ", ".join(f"K={k}: {g:+.3f}" for k, g in zip(ref["num_samples"], ref["gap"])))
    for name in ("dreg", "vimco"):
        if f"{name}_z" in ref:  # results from before vimco have dreg's only
            lines.append(f"  {name} against that reference, z: " + ", ".join(
                "n/a" if z is None else f"{z:+.1f}" for z in ref[f"{name}_z"]))
    for key, label, unit in (("scale", "scale", "sigma"), ("dimension", "dim", "D")):
        lines.append(f"{key} sweep: total variance at the smallest and largest {unit}, max |z|"
                     + (f" (measure-valued up to D = {data[key]['measure_valued_max_dim']})"
                        if "measure_valued_max_dim" in data[key] else ""))
        for name, row in data[key]["estimators"].items():
            lines.append(f"  {name:24s} {unit}={row[label][0]:<6g} {row['total_variance'][0]:10.3g}"
                         f"   {unit}={row[label][-1]:<6g} {row['total_variance'][-1]:10.3g}"
                         f"   max|z| {max(row['max_abs_z']):6.1f}")
    part = data["fit"]
    lines.append(f"fit ({part['dim']}-D, K = {part['num_samples']}, {part['runs']} runs, best "
                 f"ELBO {part['optimum_elbo']:.4f}): exact ELBO gap (nats) at step "
                 f"{part['estimators']['pathwise']['step'][len(part['estimators']['pathwise']['step']) // 4]}"
                 " and at the end, median time per step")
    for name, row in part["estimators"].items():
        quarter = len(row["step"]) // 4
        final = np.asarray(row["final_gap"])
        lines.append(f"  {name:24s} {row['gap_mean'][quarter]:7.3f}   {final.mean():6.3f} ± "
                     f"{final.std(ddof=1) / math.sqrt(final.size):.3f}   "
                     f"{1e3 * row['median_step_seconds']:.3f} ms")
    part = data["discrete"]
    lines.append(f"discrete choice: d ELBO / d logit_1, exact {part['exact_gradient']:.4f}")
    for name, row in part["methods"].items():
        lines.append(f"  {name:24s} {row['mean']:.4f} ± {row['mean_se']:.4f} (z {row['z']:+.1f})"
                     f"   variance {row['variance']:.4f}")
    relaxed = part["gumbel_softmax"]
    for i, temperature in enumerate(relaxed["temperature"]):
        lines.append(f"  gumbel_softmax tau={temperature:<5g}   {relaxed['mean'][i]:.4f} ± "
                     f"{relaxed['mean_se'][i]:.4f} (z {relaxed['z'][i]:+.1f})   variance "
                     f"{relaxed['variance'][i]:.4f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Print the key numbers of saved results: ``python -m experiments.MODULE [RESULTS]``."""
    from .common import summary_main

    return summary_main(NAME, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())
