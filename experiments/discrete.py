"""discrete: the estimators of discrete latents on REBAR's toy and on sigmoid belief networks.

Seed section 5.2 ends with "discrete distributions like the binomial cannot then be learned by
using backpropagation!". :mod:`estimators.discrete` holds the estimators that work around it; this
study measures them, every estimator at the same budget of K samples of b per estimate:

* (a) the toy of Tucker et al. 2017 (REBAR, Figure 1): maximise E_{b ~ Bernoulli(sigma(theta))}
  [(b - t)^2] for t = 0.45 and t = 0.499, where the exact gradient sigma'(theta) (1 - 2 t) is
  tiny against the noise; and a categorical version, E_{c ~ Cat(softmax(theta))}[||onehot(c) -
  t||^2] with C categories, t_c = t + (1/2 - t) c / (C - 1), whose best category c = 0 leads the
  worst by 1 - 2 t, as b = 1 leads b = 0. The exact gradient is the registry's ``enumeration``.
  Exact variances: for the Bernoulli toy, by Gauss-Legendre quadrature over the uniforms each
  estimator draws (its ``uniform=`` option, :class:`estimators.BernoulliWithNoise` for the score
  functions), split where b jumps, for every estimator but RELAX (whose control variate is
  trained); for the categorical toy, by enumeration of the outcomes for the score-function
  family. Every estimator's variance is also measured, with standard errors, and each one
  optimises theta with Adam, a group of runs as a batch dimension (the optimisation trace).
* (b) a VAE with 200 Bernoulli latents on dynamically binarized MNIST, the sigmoid belief network
  of the REBAR, RELAX and DisARM papers: linear (q(b | x) = Bernoulli(sigma(W x + c)), p(b) =
  Bernoulli(sigma(a)), p(x | b) = Bernoulli(sigma(V b + d))) and nonlinear (two deterministic
  tanh layers of 200 in encoder and decoder, 784-200-200-200). Each estimator trains a group of
  runs as one network with a leading run dimension (:func:`experiments.replicated.stack_modules`);
  run r draws its initialisation, minibatches, binarization and estimator noise from streams
  seeded s + r (:class:`experiments.replicated.RunGenerators`, the estimators' ``uniform=``), so
  it is the solo run of seed s + r, and run r of every estimator shares them. Recorded: the
  ELBO of a fixed set of training images against steps and wall time, the variance of the
  encoder gradient at points of training (M independent estimates from M copies of the run's
  parameters, one backward pass), and the test ELBO and 100-sample bound at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Bernoulli, Independent, OneHotCategorical

from estimators import ESTIMATORS, BernoulliWithNoise, RelaxControlVariate
from estimators.base import log_mean_exp
from estimators.diagnostics import gradient_statistics, group_summary

from .common import StudyConfig, Timer, progress, save_figure, study_device
from .replicated import RunGenerators, RunGuard, stack_modules, stream_seed, unstack_module

NAME = "discrete"
SUMMARY = ("estimators of discrete latents: REBAR's toy (exact variances) and sigmoid belief "
           "networks on binarized MNIST")
DTYPE = torch.float64  # the toy's
SBN_DTYPE = torch.float32  # the sigmoid belief networks'
BERNOULLI, CATEGORICAL = "bernoulli", "categorical"
# The score-function family draws b through q.sample; the others take uniform=.
SCORE_FUNCTIONS = ("score_function", "score_function_loo")
TOY_ESTIMATORS = {
    BERNOULLI: ("score_function", "score_function_loo", "gumbel_softmax", "straight_through",
                "rebar", "relax", "arm", "disarm"),
    CATEGORICAL: ("score_function", "score_function_loo", "gumbel_softmax", "straight_through",
                  "rebar", "relax"),
}
SBN_ESTIMATORS = ("score_function_loo", "gumbel_softmax", "straight_through", "rebar", "relax",
                  "arm", "disarm")
SBN_MODELS = ("linear", "nonlinear")
PIXELS = 784


@dataclass(frozen=True)
class Config(StudyConfig):
    """Every field can be changed with --set FIELD=VALUE (tuples as comma-separated lists)."""

    num_samples: int = 2  # K: samples of b per estimate, every estimator (arm, disarm: K/2 pairs)
    # (a) the toy
    targets: tuple = (0.45, 0.499)  # t of E[(b - t)^2], maximised
    categories: int = 10  # C of the categorical toy
    toy_logit_range: float = 4.0  # theta in [-range, range] for the variance curves
    toy_curve_points: int = 33  # thetas of the exact variance curves
    toy_points: int = 9  # thetas with measured variances
    toy_replicates: int = 20000  # independent estimates per measured point
    quadrature_nodes: int = 40  # Gauss-Legendre nodes per piece and dimension
    toy_runs: int = 5  # runs of each optimisation, one batch
    toy_steps: int = 2000  # Adam steps of the optimisation trace
    toy_learning_rate: float = 0.01
    toy_record_every: int = 25  # steps between records of theta
    toy_probe_every: int = 250  # steps between measurements of the variance along the trace
    toy_probe_replicates: int = 1000  # estimates per such measurement and run
    # (b) the sigmoid belief networks
    models: tuple = SBN_MODELS  # "linear", "nonlinear"
    estimators: tuple = SBN_ESTIMATORS  # the SBN's estimators
    runs: int = 3  # runs of each estimator and model, one group (seeds seed .. seed + runs - 1)
    latent: int = 200  # Bernoulli latents
    hidden: int = 200  # width of the nonlinear model's deterministic tanh layers
    steps: int = 2500  # Adam steps, the same for every estimator
    batch_size: int = 50  # images per step
    learning_rate: float = 1e-3
    train_images: int = 0  # training images used (0: all 60,000)
    eval_every: int = 125  # steps between evaluations of the training bound
    train_eval_images: int = 2000  # fixed binarized training images of the training bound
    test_images: int = 10000  # test images of the final bounds (0: all)
    iwae_images: int = 1000  # test images of the final 100-sample bound
    iwae_samples: int = 100
    probe_fractions: tuple = (0.0, 0.5, 1.0)  # where in training the encoder gradient is probed
    probe_replicates: int = 32  # M: independent estimates per probe
    probe_batch: int = 50  # images of the probed minibatch
    data_dir: str = ""  # MNIST folder (default: $MNIST_DIR, else ../shared/data/mnist)
    parts: tuple = ("toy", "sbn")  # which parts to run

    # CPU only (the toy's quadrature, SBNs on the CPU): --device cuda is refused before any work
    DEVICES = ("cpu",)

    @classmethod
    def quick(cls) -> "Config":
        return cls(quick=True, toy_curve_points=13, toy_points=5, toy_replicates=1000,
                   quadrature_nodes=16, toy_runs=3, toy_steps=100, toy_record_every=5,
                   toy_probe_every=50, toy_probe_replicates=200, runs=2, steps=20,
                   train_images=5000, eval_every=20, train_eval_images=500, test_images=1000,
                   iwae_images=100, iwae_samples=20, probe_fractions=(0.0, 1.0),
                   probe_replicates=8, probe_batch=20)

    def __post_init__(self):
        problems = []
        unknown = [n for n in self.estimators if n not in SBN_ESTIMATORS]
        if unknown:
            problems.append(f"unknown SBN estimator(s) {', '.join(unknown)}; choose from "
                            f"{', '.join(SBN_ESTIMATORS)}")
        bad_models = [m for m in self.models if m not in SBN_MODELS]
        if bad_models:
            problems.append(f"unknown model(s) {', '.join(bad_models)}; choose from "
                            f"{', '.join(SBN_MODELS)}")
        bad_parts = [p for p in self.parts if p not in ("toy", "sbn")]
        if bad_parts or not self.parts:
            problems.append(f"parts must be toy and/or sbn, got {', '.join(self.parts) or 'none'}")
        if self.num_samples < 2 or self.num_samples % 2:
            problems.append(f"num_samples must be even and >= 2 (arm and disarm take K/2 pairs, "
                            f"score_function_loo two samples), got {self.num_samples}")
        if not self.targets or any(not 0 <= t < 0.5 for t in self.targets):
            problems.append(f"targets must lie in [0, 0.5), got {self.targets}")
        for name in ("categories", "toy_curve_points", "toy_points", "toy_replicates",
                     "quadrature_nodes", "toy_runs", "toy_probe_replicates", "runs",
                     "probe_replicates"):
            if getattr(self, name) < 2:
                problems.append(f"{name} must be >= 2, got {getattr(self, name)}")
        for name in ("toy_steps", "toy_record_every", "toy_probe_every", "latent", "hidden",
                     "steps", "batch_size", "eval_every", "train_eval_images", "iwae_images",
                     "iwae_samples", "probe_batch"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.train_images < 0 or self.test_images < 0:
            problems.append("train_images and test_images must be >= 0 (0: all)")
        if not self.toy_logit_range > 0:
            problems.append(f"toy_logit_range must be > 0, got {self.toy_logit_range}")
        for name in ("learning_rate", "toy_learning_rate"):
            if not 0 < getattr(self, name) <= 1:
                problems.append(f"{name} must lie in (0, 1], got {getattr(self, name)}")
        if any(not 0 <= f <= 1 for f in self.probe_fractions):
            problems.append(f"probe_fractions must lie in [0, 1], got {self.probe_fractions}")
        if problems:
            raise SystemExit("error: discrete: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# (a) The toy: E[(b - t)^2] as an ELBO
# --------------------------------------------------------------------------------------------


def category_targets(target: float, categories: int) -> torch.Tensor:
    """t_c = t + (1/2 - t) c / (C - 1): category 0 is the best, by 1 - 2 t over the worst."""
    return target + (0.5 - target) * torch.arange(categories, dtype=DTYPE) / (categories - 1)


class ToyObjective:
    """A "model" whose ELBO is E_q[cost(b)], cost(b) = ||b - t||^2, so that every ELBO estimator
    of the registry estimates the gradient of the toy's objective.

    log p(x, b) = cost(b) + log q_fixed(b), q_fixed being q with its logits held fixed (the
    relaxations' continuous extension, :mod:`estimators.discrete`): then log p - log q = cost(b)
    at discrete b and at relaxed ones, and the gradient of E_q[log q_fixed - log q] is zero.
    """

    def __init__(self, target, logits: torch.Tensor, kind: str):
        self.target, self.logits, self.kind = target, logits, kind

    def log_joint(self, b: torch.Tensor) -> torch.Tensor:
        cost = (b - self.target).pow(2).sum(-1)
        logits = self.logits.detach()
        if self.kind == BERNOULLI:
            log_q = -F.binary_cross_entropy_with_logits(logits.expand_as(b), b,
                                                        reduction="none").sum(-1)
        else:
            log_q = (b * torch.log_softmax(logits, -1)).sum(-1)
        return cost + log_q


def toy_q(logits: torch.Tensor, kind: str, noise: torch.Tensor | None = None):
    if kind == CATEGORICAL:
        return OneHotCategorical(logits=logits)
    base = Bernoulli(logits=logits) if noise is None else BernoulliWithNoise(logits, noise)
    return Independent(base, 1)


def toy_gradients(name: str, logits: torch.Tensor, target, kind: str, num_samples: int, *,
                  uniform=None, state=None) -> torch.Tensor:
    """The estimator's gradient with respect to ``logits`` (*batch, E), one per batch entry
    (RELAX's state used, not trained). ``uniform`` feeds every uniform it draws."""
    logits = logits.detach().clone().requires_grad_()
    model = ToyObjective(target, logits, kind)
    options = {}
    noise = None
    if name in SCORE_FUNCTIONS:
        if uniform is not None:
            noise = uniform((num_samples, *logits.shape))
    elif uniform is not None:
        options["uniform"] = uniform
    if name == "relax":
        options.update(state=state, train=False)
    estimate = ESTIMATORS[name](model, toy_q(logits, kind, noise), num_samples, **options)
    (grad,) = torch.autograd.grad(estimate.surrogate.sum(), logits)
    return grad


def toy_objective(logits: torch.Tensor, target, kind: str) -> torch.Tensor:
    """E_q[cost(b)] and, by autograd, its exact gradient: the registry's enumeration."""
    model = ToyObjective(target, logits, kind)
    return ESTIMATORS["enumeration"](model, toy_q(logits, kind), 1).elbo


def exact_gradient(logits: torch.Tensor, target, kind: str) -> torch.Tensor:
    logits = logits.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(toy_objective(logits, target, kind).sum(), logits)
    return grad


# Uniform arrays each estimator draws for one estimate of the Bernoulli toy (D = 1), and how
# many samples each covers: an estimator that is the mean of K independent single-sample terms
# is integrated for one sample (its variance then divided by K); the others for all K.
_QUADRATURE = {
    "score_function": ("iid", 1), "gumbel_softmax": ("iid", 1), "straight_through": ("iid", 1),
    "rebar": ("iid", 2),  # u, then v of z~ ~ p(z | b)
    "score_function_loo": ("all", 2),  # u_1, u_2
    "arm": ("all", 1), "disarm": ("all", 1),  # one pair's u (K = 2)
}
EXACT_TOY = tuple(_QUADRATURE)


class _Columns:
    """A ``uniform(shape)`` that hands out the columns of fixed points in order: a draw of shape
    (k, N, 1) takes the next k columns."""

    def __init__(self, points: torch.Tensor):
        self.points, self.next = points, 0

    def __call__(self, shape):
        k = shape[0]
        values = self.points[:, self.next:self.next + k].T.reshape(shape)
        self.next += k
        return values


def _gauss_legendre(breaks, nodes: int):
    """Nodes and weights on [0, 1] exact for polynomials of degree 2 nodes - 1 on each piece
    between ``breaks``."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    edges = np.unique(np.clip(np.concatenate([[0.0, 1.0], breaks]), 0, 1))
    points, weights = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        points.append(a + (b - a) * (x + 1) / 2)
        weights.append(w * (b - a) / 2)
    return np.concatenate(points), np.concatenate(weights)


def quadrature_moments(name: str, logit: float, target: float, num_samples: int,
                       nodes: int) -> tuple[float, float]:
    """(mean, variance) of the estimator of d/d theta on the Bernoulli toy at ``logit``, K =
    ``num_samples``, by integrating the registry's own estimate over the uniforms it draws.

    b = 1 iff u > 1 - sigma(theta) (and the antithetic b~ = 1 iff u > sigma(-theta)... for arm:
    u > 1 - sigma(-theta)), so every integrand is smooth between 1 - p and p: the rule is split
    there in each dimension.
    """
    kind, dims = _QUADRATURE[name]
    p = 1 / (1 + math.exp(-logit))
    x, w = _gauss_legendre([1 - p, p], nodes)
    grids = np.meshgrid(*[x] * dims, indexing="ij")
    points = torch.tensor(np.stack([g.ravel() for g in grids], -1), dtype=DTYPE)
    weights = np.prod(np.meshgrid(*[w] * dims, indexing="ij"), 0).ravel()
    per_estimate = 1 if kind == "iid" else num_samples
    logits = torch.full((points.shape[0], 1), float(logit), dtype=DTYPE)
    grad = toy_gradients(name, logits, target, BERNOULLI, per_estimate,
                            uniform=_Columns(points))
    values = grad[:, 0].numpy()
    mean = float(weights @ values)
    variance = float(weights @ (values - mean) ** 2)
    if kind == "iid":
        variance /= num_samples
    return mean, variance


def categorical_moments(name: str, logits: torch.Tensor, target: torch.Tensor,
                        num_samples: int) -> tuple[np.ndarray, float]:
    """(mean vector, total variance) of score_function or score_function_loo (K samples) on the
    categorical toy, by enumeration of the outcomes: the single-sample term is
    (f(c) - b) (e_c - pi), f(c) = ||e_c - t||^2."""
    probs = torch.softmax(logits, -1)
    C = probs.shape[-1]
    eye = torch.eye(C, dtype=DTYPE)
    cost = (eye - target).pow(2).sum(-1)  # f(c)
    score = eye - probs  # row c: d log pi_c / d logits
    if name == "score_function":
        terms = cost[:, None] * score  # (C, C)
        mean = probs @ terms
        second = probs @ terms.pow(2).sum(-1)
        return mean.numpy(), float((second - mean.pow(2).sum()) / num_samples)
    if name != "score_function_loo" or num_samples != 2:
        raise ValueError("categorical_moments: score_function, or score_function_loo with K = 2")
    # K = 2: (1/2) (f_1 - f_2)(s_1 - s_2), over the C^2 ordered pairs
    diff = cost[:, None] - cost[None, :]
    terms = 0.5 * diff[..., None] * (score[:, None, :] - score[None, :, :])  # (C, C, C)
    pair = probs[:, None] * probs[None, :]
    mean = (pair[..., None] * terms).sum((0, 1))
    second = (pair * terms.pow(2).sum(-1)).sum()
    return mean.numpy(), float(second - mean.pow(2).sum())


def _toy_logits(kind: str, value: float, categories: int) -> torch.Tensor:
    """A point of the variance curves: theta (Bernoulli) or logits (value, 0, ..., 0)."""
    if kind == BERNOULLI:
        return torch.tensor([value], dtype=DTYPE)
    logits = torch.zeros(categories, dtype=DTYPE)
    logits[0] = value
    return logits


def _best_probability(kind: str, logits: torch.Tensor) -> torch.Tensor:
    """P(the optimum): sigma(theta) of b = 1, or pi_0 of category 0."""
    if kind == BERNOULLI:
        return torch.sigmoid(logits[..., 0])
    return torch.softmax(logits, -1)[..., 0]


def _relax_states(runs: int, inputs: int, seed: int) -> nn.Module:
    return stack_modules([RelaxControlVariate.with_network(inputs, seed=stream_seed(
        seed + r, "discrete relax")).to(DTYPE) for r in range(runs)])


def measure_toy(name: str, logits: torch.Tensor, target, kind: str, config: Config,
                replicates: int, state=None) -> dict:
    """Mean and total variance, with standard errors, of ``replicates`` estimates at each row of
    ``logits`` (P, E), one pass (torch's global stream)."""
    expanded = logits.unsqueeze(1).expand(logits.shape[0], replicates, logits.shape[-1])
    grad = toy_gradients(name, expanded, target, kind, config.num_samples, state=state)
    rows = {"variance": [], "variance_se": [], "mean": [], "mean_se": []}
    for point in grad:  # (replicates, E)
        stats = gradient_statistics(point)
        rows["variance"].append(stats.total_variance.item())
        rows["variance_se"].append(stats.total_variance_se.item())
        rows["mean"].append(stats.mean.tolist())
        rows["mean_se"].append(stats.mean_se.tolist())
    return rows


def optimise_toy(name: str, target, kind: str, config: Config, bar=None) -> dict:
    """``toy_runs`` runs of Adam from theta = 0 as one batch; theta and the exact objective every
    toy_record_every steps, the measured variance at each run's theta every toy_probe_every."""
    runs, E = config.toy_runs, (1 if kind == BERNOULLI else config.categories)
    logits = torch.zeros(runs, 1, E, dtype=DTYPE, requires_grad=True)
    state = _relax_states(runs, E, config.seed) if name == "relax" else None
    parameters = [logits, *(state.parameters() if state is not None else [])]
    optimizer = torch.optim.Adam(parameters, lr=config.toy_learning_rate)
    record = {"step": [], "best_probability": [], "objective": [], "probe_step": [],
              "variance": [], "variance_se": []}
    for step in range(config.toy_steps + 1):
        if step % config.toy_record_every == 0 or step == config.toy_steps:
            with torch.no_grad():
                record["step"].append(step)
                record["best_probability"].append(_best_probability(kind, logits[:, 0]).tolist())
                record["objective"].append(toy_objective(logits[:, 0], target, kind).tolist())
        if step % config.toy_probe_every == 0 or step == config.toy_steps:
            # each run's own theta (and control variate), toy_probe_replicates estimates
            expanded = logits.detach().expand(runs, config.toy_probe_replicates, E)
            grad = toy_gradients(name, expanded, target, kind, config.num_samples,
                                    state=state)
            stats = [gradient_statistics(g) for g in grad]
            record["probe_step"].append(step)
            record["variance"].append([s.total_variance.item() for s in stats])
            record["variance_se"].append([s.total_variance_se.item() for s in stats])
        if step == config.toy_steps:
            break
        # The estimator's gradient reaches the logits (and RELAX's state) through the
        # surrogate: ascend it.
        optimizer.zero_grad()
        (-_surrogate(name, logits, target, kind, config, state).sum()).backward()
        optimizer.step()
        if bar is not None:
            bar.update(1)
    for key in ("best_probability", "objective", "variance", "variance_se"):
        record[key] = np.asarray(record[key]).T.tolist()  # (runs, records)
    return record


def _surrogate(name, logits, target, kind, config, state) -> torch.Tensor:
    """The estimator's surrogate with the trained logits as q's parameters."""
    model = ToyObjective(target, logits, kind)
    options = {"state": state} if name == "relax" else {}
    return ESTIMATORS[name](model, toy_q(logits, kind), config.num_samples, **options).surrogate


def run_toy(config: Config) -> dict:
    out = {"targets": list(config.targets), "categories": config.categories,
           "num_samples": config.num_samples, "runs": config.toy_runs,
           "steps": config.toy_steps, "replicates": config.toy_replicates,
           "probe_replicates": config.toy_probe_replicates, "estimators": TOY_ESTIMATORS,
           "exact_estimators": {BERNOULLI: list(EXACT_TOY),
                                CATEGORICAL: ["score_function", "score_function_loo"]},
           "parts": {}}
    curve = np.linspace(-config.toy_logit_range, config.toy_logit_range, config.toy_curve_points)
    points = np.linspace(-config.toy_logit_range, config.toy_logit_range, config.toy_points)
    total = sum(len(v) for v in TOY_ESTIMATORS.values()) * len(config.targets) * config.toy_steps
    with progress(total=total, desc="discrete: toy", unit="step") as bar:
        for kind, names in TOY_ESTIMATORS.items():
            for target in config.targets:
                t = (torch.tensor(target, dtype=DTYPE) if kind == BERNOULLI
                     else category_targets(target, config.categories))
                curve_logits = torch.stack([_toy_logits(kind, v, config.categories)
                                            for v in curve])
                point_logits = torch.stack([_toy_logits(kind, v, config.categories)
                                            for v in points])
                part = {"curve": curve, "points": points,
                        "best_probability_curve": _best_probability(kind, curve_logits),
                        "best_probability_points": _best_probability(kind, point_logits),
                        "exact_gradient_curve": exact_gradient(curve_logits, t, kind),
                        "exact_gradient_points": exact_gradient(point_logits, t, kind),
                        "exact": {}, "measured": {}, "trace": {}}
                if kind == BERNOULLI:
                    for name in EXACT_TOY:
                        moments = [quadrature_moments(name, v, target, config.num_samples,
                                                      config.quadrature_nodes) for v in curve]
                        part["exact"][name] = {"mean": [m[0] for m in moments],
                                               "variance": [m[1] for m in moments]}
                else:
                    for name in ("score_function", "score_function_loo"):
                        moments = [categorical_moments(name, lg, t, config.num_samples)
                                   for lg in curve_logits]
                        part["exact"][name] = {"mean": [m[0].tolist() for m in moments],
                                               "variance": [m[1] for m in moments]}
                for name in names:
                    if name != "relax":  # RELAX's variance depends on its trained state: trace
                        part["measured"][name] = measure_toy(name, point_logits, t, kind, config,
                                                             config.toy_replicates)
                    part["trace"][name] = optimise_toy(name, t, kind, config, bar)
                out["parts"][f"{kind}-{target:g}"] = {"kind": kind, "target": target, **part}
    return out


# --------------------------------------------------------------------------------------------
# (b) Sigmoid belief networks on dynamically binarized MNIST
# --------------------------------------------------------------------------------------------


def _bernoulli_log_prob(logits: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_d log Bernoulli(values_d; logits_d), defined at relaxed values in [0, 1] too (the
    relaxations evaluate the model there)."""
    logits, values = torch.broadcast_tensors(logits, values)
    return -F.binary_cross_entropy_with_logits(logits, values, reduction="none").sum(-1)


class SigmoidBeliefNetwork(nn.Module):
    """q(b | x) = Bernoulli(sigma(enc(x))), p(b) = Bernoulli(sigma(a)), p(x | b) =
    Bernoulli(sigma(dec(b))); enc and dec affine ("linear") or with two tanh layers
    ("nonlinear")."""

    def __init__(self, kind: str, latent: int = 200, hidden: int = 200,
                 pixel_mean: torch.Tensor | None = None):
        super().__init__()
        if kind == "linear":
            self.encoder = nn.Sequential(nn.Linear(PIXELS, latent))
            self.decoder = nn.Sequential(nn.Linear(latent, PIXELS))
        else:
            self.encoder = nn.Sequential(nn.Linear(PIXELS, hidden), nn.Tanh(),
                                         nn.Linear(hidden, hidden), nn.Tanh(),
                                         nn.Linear(hidden, latent))
            self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(),
                                         nn.Linear(hidden, hidden), nn.Tanh(),
                                         nn.Linear(hidden, PIXELS))
        self.prior_logits = nn.Parameter(torch.zeros(latent))
        if pixel_mean is not None:  # the decoder starts at the data's mean image
            with torch.no_grad():
                self.decoder[-1].bias.copy_(torch.logit(pixel_mean.clamp(1e-3, 1 - 1e-3)))

    def encoder_parameters(self) -> dict:
        return {f"encoder.{n}": p for n, p in self.encoder.named_parameters()}

    def posterior(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        logits = self.encoder(x)
        base = Bernoulli(logits=logits) if noise is None else BernoulliWithNoise(logits, noise)
        return Independent(base, 1)

    def bind(self, x: torch.Tensor) -> "BoundSBN":
        return BoundSBN(self, x)


class BoundSBN:
    """log p(x, b) for fixed images x (R, B, 784), vectorised over samples b (..., R, B, D)."""

    def __init__(self, network: SigmoidBeliefNetwork, x: torch.Tensor):
        self.network, self.x = network, x

    def log_joint(self, b: torch.Tensor) -> torch.Tensor:
        prior = _bernoulli_log_prob(self.network.prior_logits, b)
        return prior + _bernoulli_log_prob(self.network.decoder(b), self.x)


class SbnGroup:
    """The ``runs`` runs of one estimator and model as one network: run r is built under seed
    s + r, draws its minibatches, binarization and estimator noise from its own stream."""

    def __init__(self, name: str, kind: str, config: Config, seeds, pixel_mean, device):
        self.name, self.kind, self.seeds = name, kind, list(seeds)
        plain = []
        for seed in self.seeds:
            torch.manual_seed(stream_seed(seed, "discrete init"))
            plain.append(SigmoidBeliefNetwork(kind, config.latent, config.hidden,
                                              pixel_mean).to(SBN_DTYPE))
        self.template = plain[0]
        self.network = stack_modules(plain).to(device)
        self.state = None
        if name == "relax":
            self.state_template = RelaxControlVariate.with_network(config.latent).to(SBN_DTYPE)
            self.state = stack_modules([RelaxControlVariate.with_network(
                config.latent, seed=stream_seed(s, "discrete relax")).to(SBN_DTYPE)
                for s in self.seeds]).to(device)
        self.streams = RunGenerators([stream_seed(s, "discrete train") for s in self.seeds],
                                     device)

    def parameters(self) -> list:
        return [*self.network.parameters(), *(self.state.parameters() if self.state else [])]

    def uniform(self, shape):
        """Each run's share of a draw (..., R, B, D) from its own stream: the estimators'
        ``uniform=``."""
        return self.streams.uniform((shape[0], *shape[2:]), SBN_DTYPE, dim=1)

    def estimate(self, x: torch.Tensor, num_samples: int):
        return sbn_estimate(self.name, self.network, x, num_samples, self.uniform, self.state)

    def run_network(self, run: int) -> SigmoidBeliefNetwork:
        return unstack_module(self.network, self.template, run)


def sbn_estimate(name, network, x, num_samples, uniform, state=None, train_state=True):
    """The registry's estimator on the network's q(b | x) and p(x, b)."""
    if name in SCORE_FUNCTIONS:
        noise = uniform((num_samples, *x.shape[:-1], network.prior_logits.shape[-1]))
        q, options = network.posterior(x, noise), {}
    else:
        q, options = network.posterior(x), {"uniform": uniform}
    if name == "relax":
        options.update(state=state, train=train_state)
    return ESTIMATORS[name](network.bind(x), q, num_samples, **options)


def _runs_batches(group: SbnGroup, pixels: torch.Tensor, batch_size: int):
    """Each run's minibatches, dynamically binarized, from its own stream: (R, B, 784) a step."""
    steps_per_epoch = pixels.shape[0] // batch_size
    while True:
        order = group.streams.permutation(pixels.shape[0])  # (R, N)
        for step in range(steps_per_epoch):
            chosen = pixels[order[:, step * batch_size:(step + 1) * batch_size]]
            u = group.streams.uniform(chosen.shape[1:], chosen.dtype, dim=0)
            yield (u < chosen).to(chosen.dtype)


@torch.no_grad()
def sbn_bounds(network, images: torch.Tensor, seeds, num_samples: int, chunk: int = 500):
    """(R,) the ELBO and the num_samples-sample bound log mean_k p(x, b_k) / q(b_k | x) per image,
    averaged over ``images`` (N, 784), each run with its own evaluation stream."""
    streams = RunGenerators([stream_seed(s, "discrete evaluate") for s in seeds],
                            images.device)
    runs = len(seeds)
    elbo, bound = [], []
    for start in range(0, images.shape[0], chunk):
        x = images[start:start + chunk].expand(runs, -1, -1)
        latent = network.prior_logits.shape[-1]
        noise = streams.uniform((num_samples, x.shape[1], latent), x.dtype, dim=1)
        q = network.posterior(x, noise)
        b = q.sample((num_samples,))
        log_w = network.bind(x).log_joint(b) - q.log_prob(b)  # (S, R, n)
        elbo.append(log_w.mean(0))
        bound.append(log_mean_exp(log_w, 0))
    return torch.cat(elbo, -1).mean(-1), torch.cat(bound, -1).mean(-1)


def probe_encoder(group: SbnGroup, x: torch.Tensor, config: Config, generator) -> list:
    """Total variance (± s.e.) of the encoder gradient of the mean ELBO over ``x`` (B, 784), per
    run: M copies of the run's parameters as one network, each with its own noise, one backward
    pass."""
    rows = []
    M = config.probe_replicates
    for run in range(len(group.seeds)):
        copies = stack_modules([group.run_network(run)] * M)
        state = None
        if group.state is not None:
            own = unstack_module(group.state, group.state_template, run)
            state = stack_modules([own] * M)

        def uniform(shape):
            return torch.rand(shape, generator=generator, dtype=SBN_DTYPE)

        estimate = sbn_estimate(group.name, copies, x.expand(M, -1, -1), config.num_samples,
                                uniform, state, train_state=False)
        params = {n: p for n, p in copies.named_parameters() if n.startswith("encoder.")}
        grads = torch.autograd.grad(estimate.surrogate.mean(-1).sum(), list(params.values()))
        rows.append(group_summary(dict(zip(params, grads))))
    return rows


def train_sbn(name: str, kind: str, config: Config, data: dict, seeds=None, probing=True,
              device="cpu") -> dict:
    """One estimator's group of runs on one model; seeds default to seed .. seed + runs - 1."""
    seeds = list(seeds if seeds is not None else range(config.seed, config.seed + config.runs))
    group = SbnGroup(name, kind, config, seeds, data["pixel_mean"], device)
    optimizer = torch.optim.Adam(group.parameters(), lr=config.learning_rate)
    guard = RunGuard(group.parameters, len(seeds), device)
    probe_steps = sorted({int(round(f * config.steps)) for f in config.probe_fractions})
    batches = _runs_batches(group, data["train"], config.batch_size)
    probe_generator = torch.Generator().manual_seed(stream_seed(config.seed, "discrete probe"))
    record = {"step": [], "seconds": [], "train_elbo": [], "probe_step": [], "probes": []}
    elapsed, durations = 0.0, []
    step_count = torch.zeros(1, dtype=torch.int64)
    for step in range(config.steps + 1):
        if step % config.eval_every == 0 or step == config.steps:
            record["step"].append(step)
            record["seconds"].append(elapsed)
            record["train_elbo"].append(sbn_bounds(group.network, data["train_eval"], seeds,
                                                   1)[0].tolist())
        if probing and step in probe_steps:
            record["probe_step"].append(step)
            record["probes"].append(probe_encoder(group, data["probe"], config, probe_generator))
        if step == config.steps:
            break
        with Timer() as timer:
            x = next(batches)
            guard.snapshot()
            estimate = group.estimate(x, config.num_samples)
            loss = -estimate.surrogate.mean(-1)  # (R,): each run's own mean
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
            step_count += 1
            guard.keep(loss.detach(), step_count)
        elapsed += timer.seconds
        durations.append(timer.seconds)
    record["train_elbo"] = np.asarray(record["train_elbo"]).T.tolist()  # (runs, evaluations)
    test_elbo, _ = sbn_bounds(group.network, data["test"], seeds, 1)
    _, test_iwae = sbn_bounds(group.network, data["test"][:config.iwae_images], seeds,
                              config.iwae_samples, chunk=max(1, 20000 // config.iwae_samples))
    record["test_elbo"], record["test_iwae"] = test_elbo.tolist(), test_iwae.tolist()
    record["diverged"] = [{"run": r, "step": at} for r, at in enumerate(guard.first_bad.tolist())
                          if at >= 0]
    record["median_step_seconds"] = float(np.median(durations))
    record["group"] = group
    return record


def load_sbn_data(config: Config, device="cpu") -> dict:
    """Training pixel probabilities, the fixed binarized evaluation images and the probe batch."""
    from .mnist.data import DeviceDataset, MnistError, load_mnist

    try:
        train_images, _ = load_mnist(config.data_dir or None, "train")
        test_images, _ = load_mnist(config.data_dir or None, "test")
    except MnistError as error:
        raise SystemExit(f"error: discrete: {error}") from None
    if config.train_images:
        train_images = train_images[:config.train_images]
    if config.test_images:
        test_images = test_images[:config.test_images]
    train = DeviceDataset(train_images, "dynamic", device)
    test = DeviceDataset(test_images, "dynamic", device)
    if config.batch_size > len(train) or config.probe_batch > len(train):
        raise SystemExit(f"error: discrete: batch_size and probe_batch must be at most the "
                         f"{len(train)} training images")
    fixed = train.evaluation_images(seed=config.seed)
    return {"train": train.data, "pixel_mean": train.data.mean(0).cpu(),  # float32
            "train_eval": fixed[:config.train_eval_images],
            "probe": fixed[-config.probe_batch:],
            "test": test.evaluation_images(seed=config.seed + 1)}


def run_sbn(config: Config) -> dict:
    data = load_sbn_data(config)
    out = {"models": list(config.models), "estimators": list(config.estimators),
           "num_runs": config.runs, "steps": config.steps, "batch_size": config.batch_size,
           "num_samples": config.num_samples, "learning_rate": config.learning_rate,
           "train_images": int(data["train"].shape[0]),
           "train_eval_images": int(data["train_eval"].shape[0]),
           "test_images": int(data["test"].shape[0]),
           "iwae_images": min(config.iwae_images, int(data["test"].shape[0])),
           "iwae_samples": config.iwae_samples, "probe_replicates": config.probe_replicates,
           "probe_batch": config.probe_batch, "runs": {}}
    jobs = [(kind, name) for kind in config.models for name in config.estimators]
    for kind, name in progress(jobs, desc="discrete: SBN groups"):
        record = train_sbn(name, kind, config, data)
        record.pop("group")
        out["runs"].setdefault(kind, {})[name] = record
    return out


def run(config: Config, paths) -> dict:
    study_device(config, NAME)  # refuses, in one line, any device but the CPU
    out = {"parts": list(config.parts)}
    if "toy" in config.parts:
        out["toy"] = run_toy(config)
    if "sbn" in config.parts:
        out["sbn"] = run_sbn(config)
    return out


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------

_SCRIPT = "experiments/discrete.py"


def _legend(fig, axes, ncol: int = 4, extra=()):
    """One legend below the panels: each estimator once (its line and marker), families' order."""
    from .style import FAMILIES, legend_handle

    seen = []
    for ax in np.ravel(axes):
        for label in ax.get_legend_handles_labels()[1]:
            if label not in seen and not label.startswith("_"):
                seen.append(label)
    order = [member for _, members in FAMILIES.values() for member in members]
    seen.sort(key=lambda label: order.index(label) if label in order else len(order))
    handles = [legend_handle(name, markerfacecolor="white") for name in seen] + list(extra)
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=8,
               frameon=False, handlelength=2.6)


def plot(results: dict, results_path, paths) -> list:
    import matplotlib

    matplotlib.use("Agg")
    figures = []
    data = results["data"]
    if "toy" in data:
        figures += _plot_toy(data["toy"], results_path, paths)
    if "sbn" in data:
        figures += _plot_sbn(data["sbn"], results_path, paths)
    return figures


def _toy_title(part) -> str:
    if part["kind"] == BERNOULLI:
        return f"Bernoulli, t = {part['target']:g}"
    return f"categorical, C = {len(part['exact_gradient_curve'][0])}, t_0 = {part['target']:g}"


def _toy_grid(plt, rows: int, columns: int, size):
    fig, axes = plt.subplots(rows, columns, figsize=size, layout="constrained", squeeze=False)
    return fig, axes


def _plot_toy(toy: dict, results_path, paths) -> list:
    import matplotlib.pyplot as plt

    from .style import estimator_style, mean_and_se, plot_band, rc_context

    parts = list(toy["parts"].values())
    K = toy["num_samples"]
    figures = []
    with rc_context():
        # Variance against P(optimum): exact lines, measured points; two toys a row.
        columns = min(2, len(parts))
        rows = math.ceil(len(parts) / columns)
        fig, axes = _toy_grid(plt, rows, columns, (10.4, 3.3 * rows + 0.9))
        for ax in axes.flat[len(parts):]:
            ax.set_axis_off()
        for index, (ax, part) in enumerate(zip(axes.flat, parts)):
            x_curve = np.asarray(part["best_probability_curve"])
            x_points = np.asarray(part["best_probability_points"])
            for name, row in part["exact"].items():
                style = estimator_style(name)
                ax.plot(x_curve, np.maximum(row["variance"], 1e-12), color=style["color"],
                        linestyle=style["linestyle"], linewidth=1.4, label=name)
            for name, row in part["measured"].items():
                style = estimator_style(name)
                variance = np.asarray(row["variance"])
                ax.errorbar(x_points, np.maximum(variance, 1e-12),
                            yerr=2 * np.asarray(row["variance_se"]), linestyle="none",
                            marker=style["marker"], markersize=4, markerfacecolor="white",
                            capsize=2, color=style["color"], label=name)
            ax.set_yscale("log")
            ax.set_ylim(bottom=1e-9)
            what = "σ(θ)" if part["kind"] == BERNOULLI else "π_0, logits (θ, 0, …, 0)"
            ax.set_xlabel(f"P(the optimum) = {what}")
            if index % columns == 0:
                ax.set_ylabel(f"total variance of one\nestimate (K = {K})")
            ax.set_title(f"({'abcdefgh'[index]}) {_toy_title(part)}", fontsize=9.5)
        _legend(fig, axes)
        fig.suptitle("Gradient variance on the toy E[‖b − t‖²]: lines exact (quadrature over the "
                     "noise for the Bernoulli toy, enumeration for the score functions);\npoints "
                     f"measured from {toy['replicates']:,} estimates, ±2 s.e. (zero variance drawn "
                     "at the floor, 10⁻⁹); no line: no exact value computed", fontsize=9.5)
        figures += save_figure(fig, paths, "discrete-toy-variance", results_path, _SCRIPT)

        # Optimisation traces, one toy a row: P(optimum) and the variance along the way.
        fig, axes = _toy_grid(plt, len(parts), 2, (10.4, 2.5 * len(parts) + 1.1))
        for row_index, part in enumerate(parts):
            left, right = axes[row_index]
            for name, trace in part["trace"].items():
                style = estimator_style(name)
                plot_band(left, trace["step"], trace["best_probability"], label=name,
                          color=style["color"], linestyle=style["linestyle"], linewidth=1.3)
                variance = np.maximum(np.asarray(trace["variance"]), 1e-12)
                mean, se = mean_and_se(variance)
                right.errorbar(trace["probe_step"], mean, yerr=se, marker=style["marker"],
                               markersize=3.5, capsize=2, color=style["color"],
                               linestyle=style["linestyle"], linewidth=1.1, label=name)
            left.set_ylabel("P(the optimum)")
            # the Bernoulli toy starts at 1/2, the categorical at 1/C
            left.set_ylim(0, 1 if part["kind"] == BERNOULLI else None)
            right.set_yscale("log")
            right.set_ylabel(f"total variance at the\nrun's θ (K = {K})")
            left.set_title(f"({'abcdefgh'[2 * row_index]}) {_toy_title(part)}: P(the optimum)",
                           fontsize=9.5)
            right.set_title(f"({'abcdefgh'[2 * row_index + 1]}) {_toy_title(part)}: variance",
                            fontsize=9.5)
        for ax in axes[-1]:
            ax.set_xlabel("Adam step")
        _legend(fig, axes)
        fig.suptitle(f"Optimising the toy from θ = 0 with Adam: mean of {toy['runs']} runs, band "
                     f"and bars ±1 s.e. over runs;\nvariance from {toy['probe_replicates']:,} "
                     "estimates per run (zero variance drawn at the floor, 10⁻¹²)", fontsize=9.5)
        figures += save_figure(fig, paths, "discrete-toy-trace", results_path, _SCRIPT)
    return figures


def _plot_sbn(sbn: dict, results_path, paths) -> list:
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .style import estimator_style, mean_and_se, plot_band, rc_context

    models = sbn["models"]
    count = sbn["num_runs"]
    with rc_context():
        # One column a model, one row a quantity (four panels side by side were 18 in wide).
        fig, axes = plt.subplots(4, len(models), figsize=(10.4, 12.0), layout="constrained",
                                 squeeze=False)
        for column, kind in enumerate(models):
            runs = sbn["runs"][kind]
            for i, name in enumerate(sbn["estimators"]):
                record = runs[name]
                style = estimator_style(name)
                line = {"color": style["color"], "linestyle": style["linestyle"],
                        "linewidth": 1.3}
                elbo = np.asarray(record["train_elbo"])
                plot_band(axes[0, column], record["step"], elbo, label=name, **line)
                seconds = np.asarray(record["step"]) * record["median_step_seconds"]
                plot_band(axes[1, column], seconds, elbo, label=name, **line)
                variance = np.asarray([[r["total_variance"] for r in p]
                                       for p in record["probes"]]).T
                if variance.size:
                    mean, se = mean_and_se(variance)
                    axes[2, column].errorbar(record["probe_step"], mean, yerr=se,
                                             marker=style["marker"], markersize=4, capsize=2,
                                             label=name, **line)
                for j, key in enumerate(("test_elbo", "test_iwae")):
                    mean, se = mean_and_se(np.asarray(record[key])[:, None])
                    axes[3, column].errorbar([i + 0.18 * (2 * j - 1)], mean, yerr=se,
                                             marker="os"[j], color=style["color"], capsize=3,
                                             markerfacecolor="white" if j else style["color"])
            axes[3, column].set_xticks(range(len(sbn["estimators"])))
            axes[3, column].set_xticklabels(sbn["estimators"], rotation=35, ha="right",
                                            fontsize=8)
            axes[3, column].legend(handles=[
                Line2D([], [], color="0.2", marker="o", linestyle="none", label="ELBO"),
                Line2D([], [], color="0.2", marker="s", markerfacecolor="white",
                       linestyle="none", label=f"{sbn['iwae_samples']}-sample bound")],
                fontsize=7.5, loc="upper right", ncol=2)
            low, high = axes[3, column].get_ylim()  # room above the points for the legend
            axes[3, column].set_ylim(low, high + 0.3 * (high - low))
            axes[0, column].set_xlabel("Adam step")
            axes[1, column].set_xlabel(f"training time of the group of {count} runs (s)\n"
                                       "= steps × median step time")
            axes[2, column].set_xlabel("training step at which the gradient is probed")
            axes[2, column].set_yscale("log")
            letters = "abcdefgh"
            axes[0, column].set_title(f"({letters[column]}) {kind} SBN: training bound "
                                      "against steps", fontsize=9.5)
            axes[1, column].set_title(f"({letters[2 + column]}) {kind}: against wall-clock "
                                      "time", fontsize=9.5)
            axes[2, column].set_title(f"({letters[4 + column]}) {kind}: encoder gradient "
                                      "variance", fontsize=9.5)
            axes[3, column].set_title(f"({letters[6 + column]}) {kind}: test bounds at the "
                                      "end", fontsize=9.5)
        for ax in axes[:2, 0]:
            ax.set_ylabel(f"ELBO of {sbn['train_eval_images']:,}\ntraining images (nats)")
        axes[2, 0].set_ylabel(f"total variance of the encoder\ngradient ({sbn['probe_replicates']} "
                              f"estimates, {sbn['probe_batch']} images)")
        axes[3, 0].set_ylabel("test bound (nats),\nmean ± s.e. over runs")
        _legend(fig, axes[:3])
        fig.suptitle(f"Sigmoid belief networks, 200 Bernoulli latents, dynamically binarized "
                     f"MNIST: {sbn['steps']} Adam steps of {sbn['batch_size']} images × K = "
                     f"{sbn['num_samples']} samples\nfor every estimator; mean of {count} runs, "
                     "band and bars ±1 s.e. over runs", fontsize=9.5)
        return save_figure(fig, paths, "discrete-sbn", results_path, _SCRIPT)


# --------------------------------------------------------------------------------------------
# Key numbers
# --------------------------------------------------------------------------------------------


def _mean_se(values, digits=2) -> str:
    from .style import mean_and_se

    mean, se = mean_and_se(np.asarray(values, dtype=float)[:, None])
    return f"{mean[0]:.{digits}f} ± {se[0]:.{digits}f}"


# Published training ELBOs of the same two models on MNIST: Grathwohl et al. 2018 (RELAX), the
# table "Highest training ELBO for discrete variational autoencoders", as in the paper's source
# in its authors' repository (github.com/duvenaud/relax, paper/generalized_rebar.tex); their
# runs: 2,000,000 steps of 24 images, the learning rate chosen by validation, the nonlinear
# model's layers tanh as here. "Concrete" is the Gumbel-softmax relaxation.
PUBLISHED = {
    "source": "Grathwohl et al. 2018 (RELAX), table of the highest training ELBO, MNIST",
    "protocol": "2,000,000 steps of 24 images; highest training ELBO over training",
    "values": {"linear": {"gumbel_softmax": -111.3, "rebar": -111.6, "relax": -111.20,
                          "score_function+nvil": -112.5},
               "nonlinear": {"gumbel_softmax": -102.2, "rebar": -81.01, "relax": -78.13,
                             "score_function+nvil": -101.5}},
}


def published_lines(sbn: dict) -> list[str]:
    """Our final training ELBOs beside the published ones, for the estimators both have."""
    lines = [f"beside the published training ELBO ({PUBLISHED['source']}; "
             f"{PUBLISHED['protocol']}); ours: final ELBO of {sbn['train_eval_images']} training "
             f"images after {sbn['steps']} steps, mean ± s.e. over {sbn['num_runs']} runs, "
             "not comparable in level"]
    for kind in sbn["models"]:
        for name, value in PUBLISHED["values"].get(kind, {}).items():
            record = sbn["runs"][kind].get(name)
            ours = _mean_se([e[-1] for e in record["train_elbo"]]) if record else "not run"
            lines.append(f"  {kind:9s} {name:20s} published {value:8.2f}   ours {ours}")
    return lines


def summary(results: dict) -> str:
    from .style import paired_summary

    data = results["data"]
    lines = [f"discrete ({results['metadata']['wall_seconds']:.0f} s)"]
    if "toy" in data:
        toy = data["toy"]
        lines.append(f"toy: K = {toy['num_samples']}; variance of one estimate at θ = 0 "
                     "(exact, else measured ± s.e.); P(optimum) after "
                     f"{toy['steps']} Adam steps, mean ± s.e. over {toy['runs']} runs")
        for part in toy["parts"].values():
            middle = len(part["curve"]) // 2
            point = len(part["points"]) // 2
            lines.append(f"  {_toy_title(part)}: exact gradient at θ = 0 "
                         f"{np.linalg.norm(part['exact_gradient_curve'][middle]):.4g}")
            for name, trace in part["trace"].items():
                if name in part["exact"]:
                    variance = f"{part['exact'][name]['variance'][middle]:.4g} (exact)"
                else:
                    row = part["measured"].get(name)
                    variance = ("trained state: see trace" if row is None else
                                f"{row['variance'][point]:.4g} ± {row['variance_se'][point]:.2g}")
                final = [p[-1] for p in trace["best_probability"]]
                lines.append(f"    {name:20s} variance {variance:28s} P(optimum) "
                             f"{_mean_se(final, 3)}")
    if "sbn" in data:
        sbn = data["sbn"]
        lines.append(f"SBN: {sbn['steps']} steps of {sbn['batch_size']} images, K = "
                     f"{sbn['num_samples']}, {sbn['num_runs']} runs each; mean ± s.e. over runs: "
                     f"training ELBO ({sbn['train_eval_images']} images), test ELBO "
                     f"({sbn['test_images']} images), test {sbn['iwae_samples']}-sample bound "
                     f"({sbn['iwae_images']} images), encoder gradient variance at the last "
                     "probe, median step time of the group")
        for kind in sbn["models"]:
            lines.append(f"  {kind}")
            for name in sbn["estimators"]:
                record = sbn["runs"][kind][name]
                variance = (f"{np.mean([r['total_variance'] for r in record['probes'][-1]]):.3g}"
                            if record["probes"] else "-")
                diverged = "".join(f" (run {d['run']} frozen at step {d['step']})"
                                   for d in record["diverged"])
                lines.append(f"    {name:20s} train {_mean_se([e[-1] for e in record['train_elbo']])}"
                             f"  test {_mean_se(record['test_elbo'])}  bound "
                             f"{_mean_se(record['test_iwae'])}  var {variance:>9s}  "
                             f"{1e3 * record['median_step_seconds']:.1f} ms{diverged}")
            finals = {name: sbn["runs"][kind][name]["test_elbo"] for name in sbn["estimators"]}
            lines += ["    " + line for line in paired_summary(
                finals, sbn["num_runs"], f"the {kind} SBN's test ELBO", width=20)]
        lines += published_lines(sbn)
    return "\n".join(lines)


def main(argv=None) -> int:
    """Print the key numbers of saved results: ``python -m experiments.discrete [RESULTS]``."""
    from .common import summary_main

    return summary_main(NAME, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())
