"""Reference problems: small models and q's whose ELBO gradient, and K-sample bound gradient,
are known exactly, with respect to q's parameters (lambda) and the model's (theta).

Each :class:`ReferenceProblem` follows the convention of :mod:`estimators.diagnostics`:
``build(lam, theta) -> (model, q)`` receives every parameter with a leading dimension R (one copy
per replicate) and returns a q of batch shape (R,) and a model that broadcasts against samples of
shape (num_samples, R, *event). Everything is float64. :data:`REFERENCE_PROBLEMS` holds one
instance of each family; the factories below make others (the hypothesis strategies of
:mod:`estimators.testing.strategies` draw their parameters), and :func:`enumerated_problem` and
:func:`gaussian_grid_problem` turn a user's own small model into a reference problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from scipy import integrate
from torch.distributions import (Bernoulli, Categorical, Independent, MixtureSameFamily, Normal,
                                 OneHotCategorical)
from torch.nn import functional as F

from ..base import EstimatorError
from ..discrete import q_kind
from .exact import (F64, MAX_TUPLES, EnumerationExact, Exact, GaussianGridExact,
                    QuadraticLogWeightExact, _leaves, _split)

__all__ = ["ReferenceProblem", "REFERENCE_PROBLEMS", "TARGETS", "KINDS", "conjugate_gaussian",
           "gaussian_mixture_target", "logistic_regression", "bernoulli_bits",
           "categorical_latents", "mixture_choice", "enumerated_problem",
           "gaussian_grid_problem", "get_problem", "check_target"]

TARGETS = ("elbo", "iwae")
KINDS = ("continuous", "bernoulli", "categorical", "mixture")


def _tensors(params: Mapping) -> dict:
    return {name: torch.as_tensor(value, dtype=F64).detach().clone()
            for name, value in params.items()}


@dataclass(frozen=True, eq=False)
class ReferenceProblem:
    """A model and a q with exact gradients of the ELBO (seed eq. 4) and of the K-sample bound
    E log (1/K) sum_k p(x, z_k) / q(z_k).

    ``kind`` is q's kind in the sense of ``Estimator.q_kinds`` ("continuous", "bernoulli",
    "categorical", "mixture"); ``lam`` and ``theta`` are the parameters at which the gradients
    are taken (dicts of float64 tensors); ``build`` makes (model, q) from them with a leading
    replicate dimension; ``method`` says how the exact numbers are computed.
    """

    name: str
    kind: str
    lam: Mapping[str, torch.Tensor]
    theta: Mapping[str, torch.Tensor]
    build: Callable = field(repr=False)
    description: str = ""
    method: str = ""
    elbo_method: Callable = field(default=None, repr=False)  # (lam, theta, gradient) -> Exact
    bound_method: Callable = field(default=None, repr=False)  # (lam, theta, Ks, gradient) -> {K: Exact}
    max_samples: int | None = None  # the largest K whose bound is within reach (None: any)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def num_coordinates(self) -> int:
        return sum(v.numel() for v in self.lam.values()) + sum(v.numel() for v in self.theta.values())

    def exact(self, target: str = "elbo", num_samples: int = 1, *, lam=None, theta=None,
              gradient: bool = True) -> Exact:
        """The exact objective (``target`` "elbo", or "iwae": the ``num_samples``-sample bound)
        and its gradient at ``lam`` and ``theta`` (default: the problem's own, cached)."""
        check_target(target, num_samples, self)
        own = lam is None and theta is None
        lam = self.lam if lam is None else _tensors(lam)
        theta = self.theta if theta is None else _tensors(theta)
        key = ("elbo", 1) if target == "elbo" or num_samples == 1 else ("iwae", num_samples)
        if own and key in self._cache and (self._cache[key].gradient or not gradient):
            return self._cache[key]
        if key[0] == "elbo":
            result = self.elbo_method(lam, theta, gradient)
        else:
            wanted = sorted({num_samples, *((1, 2, 5) if own else ())})
            wanted = [k for k in wanted if k > 1 and (self.max_samples is None
                                                     or k <= self.max_samples)]
            found = self.bound_method(lam, theta, wanted, gradient)
            if own:
                for k, value in found.items():
                    self._cache[("iwae", k)] = value if gradient else value._replace(gradient={})
            result = found[num_samples]
        if not gradient:
            result = result._replace(gradient={})
        if own:
            self._cache[key] = result
        return result

    def exact_gradient(self, target: str = "elbo", num_samples: int = 1) -> dict:
        """{"lambda": {name: tensor}, "theta": {name: tensor}}: the exact gradient of the ELBO
        (``target="elbo"``) or of the ``num_samples``-sample bound (``target="iwae"``)."""
        return self.exact(target, num_samples).gradient

    def exact_objective(self, target: str = "elbo", num_samples: int = 1, *, lam=None,
                        theta=None) -> float:
        """The exact objective's value, at the problem's parameters or at others (finite
        differences of it check :meth:`exact_gradient`)."""
        return self.exact(target, num_samples, lam=lam, theta=theta, gradient=False).value

    def __repr__(self) -> str:
        def values(params):
            return {n: v.tolist() for n, v in params.items()}

        return (f"ReferenceProblem({self.name!r}, kind={self.kind!r}, lam={values(self.lam)}, "
                f"theta={values(self.theta)})")


def check_target(target, num_samples, problem) -> None:
    """Refuse, in one line, a target or a K whose exact objective the problem cannot give."""
    if target not in TARGETS:
        raise EstimatorError(f"target must be 'elbo' or 'iwae' (the K-sample bound), got "
                             f"{target!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise EstimatorError(f"num_samples must be a positive int, got {num_samples!r}")
    if (target == "iwae" and problem.max_samples is not None
            and num_samples > problem.max_samples):
        raise EstimatorError(
            f"problem {problem.name}: its exact {num_samples}-sample bound is out of reach "
            f"(enumeration of more than {MAX_TUPLES:.0e} outcome tuples); use num_samples <= "
            f"{problem.max_samples}")


# --------------------------------------------------------------------------------------------
# Models. theta arrives with a leading replicate dimension R (or none); samples are (S, R, D).
# --------------------------------------------------------------------------------------------


class ConjugateGaussianModel:
    """z ~ N(prior_loc, prior_scale^2 I), x | z ~ N(z, noise_scale^2 I); theta = (prior_loc,
    log_noise_scale). Written as prior times likelihood (seed eq. 6)."""

    def __init__(self, x, prior_loc, log_noise_scale, prior_scale: float):
        self.x, self.prior_loc, self.prior_scale = x, prior_loc, prior_scale
        self.noise_scale = log_noise_scale.exp().unsqueeze(-1)

    @property
    def prior(self):
        return Independent(Normal(self.prior_loc, torch.full_like(self.prior_loc,
                                                                  self.prior_scale)), 1)

    def log_likelihood(self, z):
        return Normal(z, self.noise_scale).log_prob(self.x).sum(-1)

    def log_joint(self, z):
        return self.prior.log_prob(z) + self.log_likelihood(z)


class GaussianMixtureModel:
    """log p(x, z) = log sum_c softmax(logits)_c N(z; locs_c, scale^2 I): the seed's section 2
    model as an unnormalised target; theta = (logits, locs). Written with the standard normal
    as its prior, the rest its likelihood, so that the estimators of seed eq. (6) apply."""

    def __init__(self, logits, locs, scale: float):
        self.logits, self.locs, self.scale = logits, locs, scale
        dim = locs.shape[-1]
        self.prior = Independent(Normal(torch.zeros(dim, dtype=F64), torch.ones(dim, dtype=F64)), 1)

    def log_joint(self, z):
        mixture = MixtureSameFamily(Categorical(logits=self.logits), Independent(
            Normal(self.locs, torch.full_like(self.locs, self.scale)), 1))
        return mixture.log_prob(z)

    def log_likelihood(self, z):
        return self.log_joint(z) - self.prior.log_prob(z)


class LogisticRegressionModel:
    """Bayesian logistic regression: weights z ~ N(0, exp(log_prior_scale)^2 I), labels
    y_n ~ Bernoulli(sigmoid(x_n . z + intercept)); theta = (intercept, log_prior_scale)."""

    def __init__(self, features, labels, intercept, log_prior_scale):
        self.features, self.labels = features, labels
        self.intercept, self.log_prior_scale = intercept, log_prior_scale

    @property
    def prior(self):
        scale = self.log_prior_scale.exp().unsqueeze(-1).expand(
            *self.log_prior_scale.shape, self.features.shape[-1])
        return Independent(Normal(torch.zeros_like(scale), scale), 1)

    def log_likelihood(self, z):
        logits = z @ self.features.T + self.intercept.unsqueeze(-1)  # (..., N)
        return (self.labels * logits - F.softplus(logits)).sum(-1)

    def log_joint(self, z):
        return self.prior.log_prob(z) + self.log_likelihood(z)


class BernoulliBitsModel:
    """log p(x, b) = b . weights + b' C b + t b_1 b_2 b_3 - 0.7 sum b^3 (three bits): any
    pseudo-Boolean function at binary b, smooth (not quadratic) at relaxed b; theta = weights."""

    COUPLING = ((0.0, 0.8, -0.5), (0.8, 0.0, 0.6), (-0.5, 0.6, 0.0))
    TRIPLE = 1.2

    def __init__(self, weights):
        self.weights = weights

    def log_joint(self, z):
        coupling = torch.tensor(self.COUPLING, dtype=z.dtype)[: z.shape[-1], : z.shape[-1]]
        pairs = (z.unsqueeze(-1) * z.unsqueeze(-2) * coupling).sum((-1, -2))
        return ((z * self.weights).sum(-1) + pairs + self.TRIPLE * z.prod(-1)
                - 0.7 * z.pow(3).sum(-1))


class CategoricalLatentsModel:
    """Two one-hot latents y_1, y_2 of C classes: log p(x, y) = sum_l y_l . table_l + y_1' M y_2
    (a table at one-hot values, a quadratic on the simplex); theta = table (2, C)."""

    def __init__(self, table, interaction):
        self.table, self.interaction = table, interaction

    def log_joint(self, z):  # z (..., 2, C)
        own = (z * self.table).sum((-1, -2))
        return own + ((z[..., 0, :].unsqueeze(-1) * z[..., 1, :].unsqueeze(-2))
                      * self.interaction).sum((-1, -2))


# --------------------------------------------------------------------------------------------
# Families of reference problems
# --------------------------------------------------------------------------------------------


def _diagonal_gaussian(lam):
    return Independent(Normal(lam["loc"], lam["log_scale"].exp()), 1)


def conjugate_gaussian(dim: int = 2, *, x=None, prior_loc=None, log_noise_scale=-0.2,
                       prior_scale: float = 1.2, loc=None, log_scale=None,
                       name: str | None = None) -> ReferenceProblem:
    """The linear Gaussian model z ~ N(prior_loc, prior_scale^2 I), x | z ~ N(z, sigma^2 I) with
    q = N(loc, diag exp(log_scale)^2). The ELBO in closed form; the K-sample bound by the
    Mellin-Barnes route (log w is a sum of quadratics of q's noise). theta = (prior_loc,
    log_noise_scale = log sigma)."""
    if not isinstance(dim, int) or dim < 1:
        raise EstimatorError(f"conjugate_gaussian: dim must be a positive int, got {dim!r}")
    pattern = torch.tensor([0.5, -1.0, 0.3, 1.2, -0.4, 0.8, -0.6, 0.1], dtype=F64)
    x = torch.as_tensor(pattern[torch.arange(dim) % 8] if x is None else x, dtype=F64)
    lam = _tensors({
        "loc": (torch.tensor([0.4, -0.7, 0.1, 0.9, 0.0, -0.3, 0.5, -0.2], dtype=F64)[
            torch.arange(dim) % 8] if loc is None else loc),
        "log_scale": (torch.tensor([-0.3, 0.2, -0.1, 0.0, -0.5, 0.1, -0.2, 0.3], dtype=F64)[
            torch.arange(dim) % 8] if log_scale is None else log_scale)})
    theta = _tensors({
        "prior_loc": (torch.tensor([0.2, -0.3, 0.0, 0.4, -0.1, 0.3, -0.2, 0.1], dtype=F64)[
            torch.arange(dim) % 8] if prior_loc is None else prior_loc),
        "log_noise_scale": log_noise_scale})
    for key, value in (*lam.items(), ("prior_loc", theta["prior_loc"]), ("x", x)):
        if value.shape != (dim,):
            raise EstimatorError(f"conjugate_gaussian: {key} must have shape ({dim},), got "
                                 f"{tuple(value.shape)}")
    prior_scale = float(prior_scale)

    def build(lam, theta):
        model = ConjugateGaussianModel(x, theta["prior_loc"], theta["log_noise_scale"],
                                       prior_scale)
        return model, _diagonal_gaussian(lam)

    def elbo(lam, theta, gradient):
        lam_leaves, theta_leaves = _leaves(lam, None), _leaves(theta, None)
        with torch.enable_grad():
            value = _conjugate_elbo(x, prior_scale, lam_leaves, theta_leaves)
            leaves = [*lam_leaves.values(), *theta_leaves.values()]
            grads = (torch.autograd.grad(value, leaves) if gradient else [None] * len(leaves))
        return Exact(float(value.detach()), _split(grads, lam_leaves, theta_leaves, lambda g: g[0]), 0.0)

    def coefficients(lam, theta):
        scale = lam["log_scale"].exp()
        prior_var = prior_scale ** 2
        noise_var = (2 * theta["log_noise_scale"]).exp().unsqueeze(-1)
        shift = lam["loc"] - theta["prior_loc"]
        a0 = (-0.5 * math.log(2 * math.pi * prior_var) - shift ** 2 / (2 * prior_var)
              - 0.5 * torch.log(2 * math.pi * noise_var) - (x - lam["loc"]) ** 2 / (2 * noise_var)
              + 0.5 * math.log(2 * math.pi) + lam["log_scale"])
        a1 = scale * (-shift / prior_var + (x - lam["loc"]) / noise_var)
        a2 = 0.5 * (1 - scale ** 2 / prior_var - scale ** 2 / noise_var)
        marginal = torch.sqrt(prior_var + noise_var)
        log_evidence = Normal(theta["prior_loc"], marginal).log_prob(x).sum()
        return a0, a1, a2, log_evidence.detach()

    quadratic = QuadraticLogWeightExact(coefficients)
    return ReferenceProblem(
        name or f"conjugate_gaussian_{dim}d", "continuous", lam, theta, build,
        f"linear Gaussian model in {dim}-D, diagonal Gaussian q",
        "closed form (ELBO); Frullani and Mellin-Barnes integrals (K-sample bound)",
        elbo, quadratic.bounds)


def _conjugate_elbo(x, prior_scale, lam, theta):
    """E_q log p(x, z) + H(q) in closed form, for parameters with a leading dimension 1."""
    loc, scale = lam["loc"], lam["log_scale"].exp()
    noise_scale = theta["log_noise_scale"].exp().unsqueeze(-1)
    prior = (Normal(theta["prior_loc"], prior_scale).log_prob(loc)
             - scale ** 2 / (2 * prior_scale ** 2)).sum(-1)
    likelihood = (Normal(loc, noise_scale).log_prob(x) - scale ** 2 / (2 * noise_scale ** 2)).sum(-1)
    entropy = (0.5 * math.log(2 * math.pi * math.e) + lam["log_scale"]).sum(-1)
    return (prior + likelihood + entropy).sum()


def _grid_problem(name, kind, lam, theta, build, dim, description, method="",
                  elbo_method=None) -> ReferenceProblem:
    grid = GaussianGridExact(build, dim)

    def bounds(lam, theta, num_samples, gradient):
        return grid.bounds(lam, theta, num_samples, gradient)

    return ReferenceProblem(
        name, kind, lam, theta, build, description,
        method or "trapezoidal rule over q's noise (ELBO); Frullani's integral over the same "
                  "grid (K-sample bound)",
        elbo_method or (lambda lam, theta, gradient: grid.elbo(lam, theta, gradient)), bounds)


def gaussian_mixture_target(dim: int = 2, *, logits=(0.0, 0.4, -0.3), locs=None,
                            component_scale: float = 0.7, loc=None, log_scale=None,
                            name: str | None = None) -> ReferenceProblem:
    """log p = a mixture of Gaussians in 1-D or 2-D (theta = its logits and locs), q a diagonal
    Gaussian: a multimodal target whose expectations have no closed form. Exact by the
    trapezoidal rule over q's noise, 1-D or 2-D."""
    if dim not in (1, 2):
        raise EstimatorError(f"gaussian_mixture_target: dim must be 1 or 2, got {dim!r}")
    if locs is None:
        locs = [[-1.0, 0.5], [1.2, 1.0], [0.2, -1.3]] if dim == 2 else [[-1.0], [1.2], [0.2]]
    lam = _tensors({"loc": loc if loc is not None else [0.3, -0.2][:dim],
                    "log_scale": log_scale if log_scale is not None else [0.1, -0.2][:dim]})
    theta = _tensors({"logits": logits, "locs": locs})
    component_scale = float(component_scale)

    def build(lam, theta):
        return (GaussianMixtureModel(theta["logits"], theta["locs"], component_scale),
                _diagonal_gaussian(lam))

    return _grid_problem(name or f"gaussian_mixture_{dim}d", "continuous", lam, theta, build, dim,
                         f"mixture of {theta['logits'].shape[-1]} Gaussians as log p in {dim}-D, "
                         "diagonal Gaussian q")


# Twelve points and labels drawn once (features N(0, I), labels from weights (1.5, -1),
# intercept 0.3), kept as numbers so that the problem never depends on a generator.
_FEATURES = ((0.62, -1.10), (-0.85, 0.31), (1.44, 0.27), (-0.23, -0.94), (0.05, 1.62),
             (-1.37, -0.48), (0.91, 0.88), (-0.41, 1.05), (1.18, -0.36), (-0.66, -1.21),
             (0.33, 0.14), (-1.02, 0.57))
_LABELS = (1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0)


def logistic_regression(*, features=_FEATURES, labels=_LABELS, intercept: float = 0.2,
                        log_prior_scale: float = 0.3, loc=(0.9, -0.6), log_scale=(-0.7, -0.5),
                        name: str = "logistic_regression") -> ReferenceProblem:
    """Bayesian logistic regression, the statistician's model: two weights with a Gaussian prior
    (latent, q a diagonal Gaussian), theta = (intercept, log prior scale), twelve labelled
    points. The ELBO by one-dimensional quadrature per data point (x_n . z is Gaussian under q:
    scipy's quad_vec); the K-sample bound by Frullani's integral over a 2-D grid."""
    features = torch.as_tensor(features, dtype=F64)
    labels = torch.as_tensor(labels, dtype=F64)
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise EstimatorError("logistic_regression: features must be (N, P) and labels (N,), got "
                             f"{tuple(features.shape)} and {tuple(labels.shape)}")
    dim = features.shape[1]
    if dim > 2:
        raise EstimatorError(f"logistic_regression: its exact K-sample bound needs at most 2 "
                             f"weights (a grid over q's noise), got {dim}")
    lam = _tensors({"loc": loc, "log_scale": log_scale})
    theta = _tensors({"intercept": intercept, "log_prior_scale": log_prior_scale})

    def build(lam, theta):
        return (LogisticRegressionModel(features, labels, theta["intercept"],
                                        theta["log_prior_scale"]), _diagonal_gaussian(lam))

    def elbo(lam, theta, gradient):
        return _logistic_elbo(features, labels, lam, theta, gradient)

    return _grid_problem(name, "continuous", lam, theta, build, dim,
                         f"Bayesian logistic regression, {dim} weights, {len(labels)} points",
                         "one-dimensional quadrature per data point, scipy quad_vec (ELBO); "
                         "Frullani's integral over a grid of q's noise (K-sample bound)",
                         elbo_method=elbo)


def _logistic_elbo(features, labels, lam, theta, gradient) -> Exact:
    """E_q log p(y, z) + H(q): the linear terms and the Gaussian prior in closed form, and for
    each point E softplus(a_n), a_n = x_n . z + b ~ N(mu_n, sigma_n^2), with its derivatives in
    mu_n and sigma_n, by one call of quad_vec over the standard normal."""
    lam_leaves, theta_leaves = _leaves(lam, None), _leaves(theta, None)
    with torch.enable_grad():
        loc, log_scale = lam_leaves["loc"][0], lam_leaves["log_scale"][0]
        intercept, log_prior_scale = theta_leaves["intercept"][0], theta_leaves["log_prior_scale"][0]
        mean = features @ loc + intercept
        spread = torch.sqrt((features ** 2) @ (2 * log_scale).exp())
        mu, sigma = mean.detach().numpy(), spread.detach().numpy()
        count = len(mu)

        def integrand(g):
            a = mu + sigma * g
            density = math.exp(-0.5 * g * g) / math.sqrt(2 * math.pi)
            slope = 1 / (1 + torch.exp(-torch.from_numpy(a))).numpy()
            return torch.cat([F.softplus(torch.from_numpy(a)),
                              torch.from_numpy(slope), torch.from_numpy(slope * g)]).numpy() * density

        found, error = integrate.quad_vec(integrand, -math.inf, math.inf, epsabs=1e-13,
                                          epsrel=1e-13, norm="max", limit=2000)
        found = torch.from_numpy(found)
        value, d_mu, d_sigma = found[:count], found[count:2 * count], found[2 * count:]
        # The surrogate trick: the value of E softplus, the gradient by the chain rule.
        softplus = value + d_mu * (mean - mean.detach()) + d_sigma * (spread - spread.detach())
        prior_scale = log_prior_scale.exp()
        dim = loc.shape[0]
        prior = (-dim * (0.5 * math.log(2 * math.pi) + log_prior_scale)
                 - ((loc ** 2).sum() + (2 * log_scale).exp().sum()) / (2 * prior_scale ** 2))
        entropy = (0.5 * math.log(2 * math.pi * math.e) + log_scale).sum()
        total = (labels * mean).sum() - softplus.sum() + prior + entropy
        leaves = [*lam_leaves.values(), *theta_leaves.values()]
        grads = torch.autograd.grad(total, leaves) if gradient else [None] * len(leaves)
    scale = 1 + float(features.abs().sum())
    return Exact(float(total.detach()), _split(grads, lam_leaves, theta_leaves, lambda g: g[0]),
                 float(error) * scale)


def enumerated_problem(name: str, build: Callable, lam: Mapping, theta: Mapping, *,
                       description: str = "", kind: str | None = None) -> ReferenceProblem:
    """A reference problem from any ``build(lam, theta) -> (model, q)`` whose q is a small
    discrete distribution (Bernoulli or categorical latents): exact by enumeration of every
    outcome, and of every K-tuple of outcomes for the K-sample bound."""
    lam, theta = _tensors(lam), _tensors(theta)
    enumerate_ = EnumerationExact(build)
    _, q = build(_leaves(lam, None), _leaves(theta, None))
    found = q_kind(q)
    if found not in ("bernoulli", "categorical"):
        raise EstimatorError(f"enumerated_problem {name}: q must be a Bernoulli or categorical "
                             f"q (Independent(Bernoulli), OneHotCategorical, ...), got a {found} "
                             f"q ({type(q).__name__})")
    count = enumerate_.count(lam, theta)
    max_samples = max(1, int(math.floor(math.log(MAX_TUPLES) / math.log(count) + 1e-9)))

    def elbo(lam, theta, gradient):
        return enumerate_(lam, theta, "elbo", 1, gradient)

    def bounds(lam, theta, num_samples, gradient):
        return {k: enumerate_(lam, theta, "iwae", k, gradient) for k in num_samples}

    return ReferenceProblem(name, kind or found, lam, theta, build,
                            description or f"{found} q of {count} outcomes",
                            f"enumeration of the {count} outcomes (K-sample bound: of the "
                            f"{count}^K tuples)", elbo, bounds, max_samples)


def gaussian_grid_problem(name: str, build: Callable, lam: Mapping, theta: Mapping, *,
                          description: str = "") -> ReferenceProblem:
    """A reference problem from any ``build(lam, theta) -> (model, q)`` whose q is a diagonal
    Gaussian or a MixtureSameFamily of diagonal Gaussians in one or two dimensions: exact by the
    trapezoidal rule over q's noise (:mod:`estimators.testing.exact`)."""
    lam, theta = _tensors(lam), _tensors(theta)
    _, q = build(_leaves(lam, None), _leaves(theta, None))
    kind = q_kind(q)
    if kind not in ("continuous", "mixture") or q.event_shape[-1] not in (1, 2):
        raise EstimatorError(f"gaussian_grid_problem {name}: q must be a diagonal Gaussian or a "
                             "mixture of them with event shape (1,) or (2,), got "
                             f"{type(q).__name__} with event shape {tuple(q.event_shape)}")
    return _grid_problem(name, kind, lam, theta, build, q.event_shape[-1],
                         description or f"{kind} q in {q.event_shape[-1]}-D")


def bernoulli_bits(*, logits=(0.3, -0.8, 1.2), weights=(0.5, -1.0, 0.2),
                   name: str = "bernoulli_bits") -> ReferenceProblem:
    """Three Bernoulli latents (q = Independent(Bernoulli(logits), 1)) under a nonlinear log p
    (pairwise and triple interactions, :class:`BernoulliBitsModel`); theta = the weights.
    Exact by enumeration of the 8 outcomes."""
    def build(lam, theta):
        return (BernoulliBitsModel(theta["weights"]),
                Independent(Bernoulli(logits=lam["logits"]), 1))

    return enumerated_problem(name, build, {"logits": logits}, {"weights": weights},
                              description="three Bernoulli latents, nonlinear log p")


_INTERACTION = ((0.0, 1.0, -0.5), (0.7, 0.0, 0.4), (-0.6, 0.3, 0.0))


def categorical_latents(*, logits=((0.3, -0.6, 0.1), (-0.4, 0.2, 0.7)),
                        table=((-1.0, 0.5, -2.0), (0.3, -0.2, 0.6)), interaction=_INTERACTION,
                        name: str = "categorical_latents") -> ReferenceProblem:
    """Two categorical latents of three classes, q = Independent(OneHotCategorical(logits
    (2, 3)), 1), under a log p with an interaction between them; theta = the table (2, 3).
    Exact by enumeration of the 9 outcomes."""
    interaction = torch.as_tensor(interaction, dtype=F64)

    def build(lam, theta):
        return (CategoricalLatentsModel(theta["table"], interaction),
                Independent(OneHotCategorical(logits=lam["logits"]), 1))

    return enumerated_problem(name, build, {"logits": logits}, {"table": table},
                              description="two categorical latents of three classes")


def mixture_choice(*, logits=(0.4, -0.3), locs=((-0.8,), (1.1,)), log_scales=((-0.2,), (-0.5,)),
                   target_logits=(0.2, -0.1), target_locs=((-1.2,), (1.0,)),
                   name: str = "mixture_choice") -> ReferenceProblem:
    """A mixture q of two 1-D Gaussians (lambda: its logits, the component choice, and the
    components' locs and log scales) against a bimodal log p (theta: its logits and locs).
    Exact by the trapezoidal rule over each component's noise."""
    def build(lam, theta):
        q = MixtureSameFamily(Categorical(logits=lam["logits"]),
                              Independent(Normal(lam["locs"], lam["log_scales"].exp()), 1))
        return GaussianMixtureModel(theta["target_logits"], theta["target_locs"], 0.6), q

    lam = _tensors({"logits": logits, "locs": locs, "log_scales": log_scales})
    theta = _tensors({"target_logits": target_logits, "target_locs": target_locs})
    return _grid_problem(name, "mixture", lam, theta, build, lam["locs"].shape[-1],
                         "mixture of two Gaussians as q (a discrete choice), bimodal log p")


def _registry() -> dict:
    problems = [conjugate_gaussian(1), conjugate_gaussian(2), conjugate_gaussian(5),
                gaussian_mixture_target(1), gaussian_mixture_target(2), logistic_regression(),
                bernoulli_bits(), categorical_latents(), mixture_choice()]
    return {p.name: p for p in problems}


REFERENCE_PROBLEMS: dict[str, ReferenceProblem] = _registry()
"""Every reference problem by name. Exact numbers are computed on first use and kept."""


def get_problem(problem) -> ReferenceProblem:
    """A ReferenceProblem, or the one of :data:`REFERENCE_PROBLEMS` with that name."""
    if isinstance(problem, ReferenceProblem):
        return problem
    if isinstance(problem, str):
        if problem not in REFERENCE_PROBLEMS:
            raise EstimatorError(f"no reference problem {problem!r}; choose from "
                                 f"{', '.join(REFERENCE_PROBLEMS)}")
        return REFERENCE_PROBLEMS[problem]
    raise EstimatorError(f"problem must be a ReferenceProblem or the name of one, got "
                         f"{type(problem).__name__}")
