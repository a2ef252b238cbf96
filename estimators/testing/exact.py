"""Exact objectives of the reference problems and their gradients, computed four ways.

Every route works in float64 and returns :class:`Exact`: the objective's value, its gradient
with respect to q's parameters (lambda) and the model's (theta), and an estimate of the largest
absolute error of any of those numbers.

* **Enumeration** (a Bernoulli or categorical q): the ELBO (seed eq. 4) is the sum over every
  outcome b of q(b) [log p(x, b) - log q(b)], and the K-sample bound the sum over every K-tuple
  of outcomes; autograd of those sums gives the gradients.
* **Gaussian grids** (q a diagonal Gaussian, or a mixture of them, in D <= 2 dimensions): an
  expectation under q is sum_c pi_c E_e f(loc_c + scale_c e), e ~ N(0, I), done by the trapezoidal
  rule on a grid of e (step h, |e_d| <= 8.5). For integrands analytic in a strip about the real
  axis and decaying like the Gaussian, that rule converges geometrically in 1/h (Trefethen &
  Weideman 2014, "The exponentially convergent trapezoidal rule", SIAM Review 56), and it gives
  every expectation of a grid at once; its error is estimated by the same rule at step 2h (every
  other node). Gradients are expectations of gradients taken by autograd at each node, each node
  with its own copy of the parameters (the replicate trick of :mod:`estimators.diagnostics`).
* **The K-sample bound by Frullani's integral**: for S > 0, log S = int_0^inf (e^-t - e^-tS) dt/t.
  With S = (1/K) sum_k w_k and w_k = p(x, z_k) / q(z_k) independent under q,
  E e^{-tS} = phi(t/K)^K with phi(s) = E_q e^{-s w}, so

      E log S = int (e^{-K s} - phi(s)^K) ds / s,

  one integral over s (as v = log s, by the trapezoidal rule) of a D-dimensional expectation,
  for every K at once. Its gradient is -int K phi^{K-1} grad phi ds/s, and grad phi(s) =
  E[e^{-s w} (grad log pi_c - s w grad log w)] over the grid. The weights are scaled by e^{-c}
  (c the ELBO) so that log w is centred; the bound is c plus the integral.
* **Quadratic log-weights** (the conjugate Gaussian, any D): log w = sum_d (a0_d + a1_d e_d +
  a2_d e_d^2) with e ~ N(0, I), whose moment generating function is closed form, so phi comes
  from the Mellin-Barnes integral e^{-x} = (1/2 pi i) int Gamma(z) x^{-z} dz along a vertical
  line (Re z > 0 gives phi, -1 < Re z < 0 gives phi - 1), again by the trapezoidal rule, and
  autograd of the whole computation gives the gradients.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from scipy import special
from torch.distributions import (Bernoulli, Categorical, Independent, MixtureSameFamily, Normal,
                                 OneHotCategorical)

from ..base import EstimatorError

__all__ = ["Exact", "EnumerationExact", "GaussianGridExact", "QuadraticLogWeightExact",
           "MAX_TUPLES"]

F64 = torch.float64
HALF_WIDTH = 8.5  # |e_d| <= 8.5 holds all but 2e-17 of the Gaussian mass in each direction
GRID_STEP = {1: 0.05, 2: 0.125}  # h of the e-grid by dimension
V_STEP = 0.2  # step in v = log s of Frullani's integral
MAX_TUPLES = 1_000_000  # outcome tuples an exact K-sample bound by enumeration may sum over
_TAIL = 45.0  # integrands are cut where they fall below e^-45 (3e-20) of their scale


class Exact(NamedTuple):
    """An exact objective: ``value``, ``gradient`` = {"lambda": {...}, "theta": {...}} (tensors
    of the parameters' shapes) and ``error``, an estimate of the largest absolute error of the
    value and of any gradient coordinate (the quadrature's; rounding is left to the caller)."""

    value: float
    gradient: dict
    error: float


def _leaves(params: Mapping[str, torch.Tensor], copies: int | None) -> dict:
    """Each parameter as a float64 leaf that requires grad, with a leading dimension of
    ``copies`` (one copy per node or per replicate), or of 1 when ``copies`` is None."""
    out = {}
    for name, value in params.items():
        value = torch.as_tensor(value, dtype=F64).detach()
        out[name] = value.unsqueeze(0).expand(copies or 1, *value.shape).clone().requires_grad_(True)
    return out


def _split(grads: Sequence, lam: Mapping, theta: Mapping, reduce) -> dict:
    names = list(lam) + list(theta)
    by_name = {}
    for name, grad, leaf in zip(names, grads, list(lam.values()) + list(theta.values())):
        by_name[name] = reduce(torch.zeros_like(leaf) if grad is None else grad)
    return {"lambda": {n: by_name[n] for n in lam}, "theta": {n: by_name[n] for n in theta}}


def _max_difference(first: dict, second: dict) -> float:
    worst = 0.0
    for group in ("lambda", "theta"):
        for name, value in first[group].items():
            if value.numel():
                worst = max(worst, float((value - second[group][name]).abs().max()))
    return worst


def _require_finite(what: str, value: torch.Tensor) -> None:
    if not torch.isfinite(value).all():
        raise EstimatorError(f"{what} is not finite at some point the exact integral needs; "
                             "the reference problem's model or q is ill-defined there")


# --------------------------------------------------------------------------------------------
# Enumeration
# --------------------------------------------------------------------------------------------


def _outcomes(q) -> torch.Tensor:
    """Every value of a discrete q of batch shape (1,), as (N, *event)."""
    base = q.base_dist if isinstance(q, Independent) else q
    if isinstance(base, Bernoulli) and isinstance(q, Independent):
        dim = q.event_shape[0]
        return torch.tensor(list(itertools.product([0.0, 1.0], repeat=dim)), dtype=F64)
    if isinstance(q, OneHotCategorical):
        return torch.eye(q.event_shape[0], dtype=F64)
    if isinstance(base, OneHotCategorical) and isinstance(q, Independent):
        latents, classes = q.event_shape
        eye = torch.eye(classes, dtype=F64)
        index = torch.cartesian_prod(*[torch.arange(classes)] * latents).reshape(-1, latents)
        return eye[index]
    if isinstance(base, Categorical) and isinstance(q, Independent):
        latents, classes = q.event_shape[0], base.logits.shape[-1]
        return torch.cartesian_prod(*[torch.arange(classes)] * latents).reshape(-1, latents)
    raise EstimatorError(f"exact by enumeration needs a Bernoulli or categorical q, got "
                         f"{type(q).__name__}")


class EnumerationExact:
    """The ELBO and the K-sample bound of a discrete q as sums over its outcomes (and K-tuples
    of them), differentiated by autograd. ``build(lam, theta) -> (model, q)`` as in
    :func:`estimators.diagnostics.replicate_gradients`: parameters arrive with a leading
    dimension 1, so q has batch shape (1,)."""

    def __init__(self, build: Callable):
        self.build = build

    def _log_weights(self, lam, theta):
        model, q = self.build(lam, theta)
        if tuple(q.batch_shape) != (1,):
            raise EstimatorError(f"build returned q with batch shape {tuple(q.batch_shape)} for "
                                 "parameters with a leading dimension 1; expected (1,)")
        values = _outcomes(q)
        z = values.unsqueeze(1)  # (N, 1, *event)
        log_q = q.log_prob(z)[:, 0]
        log_joint = model.log_joint(z)
        if tuple(log_joint.shape) != (values.shape[0], 1):
            raise EstimatorError(f"model.log_joint returned shape {tuple(log_joint.shape)} for "
                                 f"outcomes of shape {tuple(z.shape)}; expected "
                                 f"{(values.shape[0], 1)}")
        _require_finite("log p(x, z)", log_joint)
        return log_q, log_joint[:, 0] - log_q

    def count(self, lam, theta) -> int:
        _, q = self.build(_leaves(lam, None), _leaves(theta, None))
        return _outcomes(q).shape[0]

    def __call__(self, lam, theta, target: str, num_samples: int, gradient: bool = True) -> Exact:
        lam_leaves, theta_leaves = _leaves(lam, None), _leaves(theta, None)
        with torch.enable_grad():
            log_q, log_w = self._log_weights(lam_leaves, theta_leaves)
            if target == "elbo" or num_samples == 1:
                value = (log_q.exp() * log_w).sum()
            else:
                value = _tuple_sum(log_q, log_w, num_samples)
            leaves = list(lam_leaves.values()) + list(theta_leaves.values())
            grads = (torch.autograd.grad(value, leaves, allow_unused=True) if gradient
                     else [None] * len(leaves))
        return Exact(float(value.detach()), _split(grads, lam_leaves, theta_leaves, lambda g: g[0]), 0.0)


def _tuple_sum(log_q: torch.Tensor, log_w: torch.Tensor, num_samples: int) -> torch.Tensor:
    """sum over all K-tuples (b_1..b_K) of prod_k q(b_k) log (1/K) sum_k w(b_k), by broadcasting
    the N outcomes along K axes (N^K terms)."""
    count = log_q.shape[0]
    if count ** num_samples > MAX_TUPLES:
        raise EstimatorError(
            f"the exact K-sample bound sums over {count}^{num_samples} = "
            f"{count ** num_samples:.3g} outcome tuples, more than {MAX_TUPLES:.0e}; use "
            f"num_samples <= {int(math.log(MAX_TUPLES) / math.log(count))} on this problem")
    shapes = [[1] * num_samples for _ in range(num_samples)]
    for axis in range(num_samples):
        shapes[axis][axis] = count
    weights = torch.stack(torch.broadcast_tensors(*[log_w.reshape(s) for s in shapes]), -1)
    probability = sum(log_q.reshape(s) for s in shapes).exp()
    bound = torch.logsumexp(weights, -1) - math.log(num_samples)
    return (probability * bound).sum()


# --------------------------------------------------------------------------------------------
# Gaussian grids and Frullani's integral
# --------------------------------------------------------------------------------------------


def _nodes(dim: int, step: float):
    """Trapezoidal nodes of N(0, I_dim): points (N, dim), weights (N,), and the mask of the
    nodes of the rule at step 2h (every other node, the centre included)."""
    count = int(round(HALF_WIDTH / step))
    index = torch.arange(-count, count + 1)
    line = index.to(F64) * step
    weight = torch.exp(-0.5 * line ** 2) / math.sqrt(2 * math.pi) * step
    coarse = index % 2 == 0
    if dim == 1:
        points, weights, mask = line[:, None], weight, coarse
    else:
        points = torch.cartesian_prod(line, line)
        weights = torch.outer(weight, weight).reshape(-1)
        mask = torch.outer(coarse, coarse).reshape(-1)
    keep = weights > 1e-40  # the corners of the square carry nothing
    return points[keep], weights[keep], mask[keep]


def _gaussian_parts(q):
    """(loc, scale, log mixture weights) of a diagonal Gaussian q or a mixture of them, as
    (N, C, D), (N, C, D), (N, C)."""
    if isinstance(q, MixtureSameFamily):
        components = q.component_distribution
        if not (isinstance(components, Independent) and isinstance(components.base_dist, Normal)
                and components.reinterpreted_batch_ndims == 1):
            raise EstimatorError("exact by quadrature needs a mixture of "
                                 "Independent(Normal(loc, scale), 1) components, got "
                                 f"{type(components).__name__}")
        base = components.base_dist
        return base.loc, base.scale, torch.log_softmax(q.mixture_distribution.logits, -1)
    if (isinstance(q, Independent) and isinstance(q.base_dist, Normal)
            and q.reinterpreted_batch_ndims == 1):
        loc, scale = q.base_dist.loc, q.base_dist.scale
        return loc.unsqueeze(1), scale.unsqueeze(1), None
    raise EstimatorError("exact by quadrature needs q = Independent(Normal(loc, scale), 1) or a "
                         f"MixtureSameFamily of those, got {type(q).__name__}")


class GaussianGridExact:
    """The ELBO and the K-sample bound of a (mixture of) diagonal Gaussian q in D <= 2
    dimensions, by the trapezoidal rule over the reparameterization noise (module docstring)."""

    def __init__(self, build: Callable, dim: int, step: float | None = None):
        if dim not in GRID_STEP:
            raise EstimatorError(f"exact by quadrature grids covers D = 1 or 2, got D = {dim}")
        self.build, self.dim = build, dim
        self.step = step or GRID_STEP[dim]

    def pointwise(self, lam, theta, points: torch.Tensor, components: bool):
        """At each node e: log w_c = log p(x, z_c) - log q(z_c), z_c = loc_c + scale_c e, and
        log pi_c, as (C, N); with ``components``, also their gradients at each node, one
        parameter copy per node: lists over c of {"lambda":..., "theta":...} of (N, *shape)."""
        count = points.shape[0]
        lam_leaves, theta_leaves = _leaves(lam, count), _leaves(theta, count)
        leaves = list(lam_leaves.values()) + list(theta_leaves.values())
        with torch.enable_grad():
            model, q = self.build(lam_leaves, theta_leaves)
            loc, scale, log_pi = _gaussian_parts(q)
            z = (loc + scale * points[:, None, :]).movedim(1, 0)  # (C, N, D)
            log_joint = model.log_joint(z)
            if tuple(log_joint.shape) != tuple(z.shape[:-1]):
                raise EstimatorError(f"model.log_joint returned shape {tuple(log_joint.shape)} "
                                     f"for points of shape {tuple(z.shape)}; expected "
                                     f"{tuple(z.shape[:-1])}")
            log_w = log_joint - q.log_prob(z)  # (C, N)
            _require_finite("log w = log p(x, z) - log q(z)", log_w)
            log_pi = (torch.zeros_like(log_w) if log_pi is None else log_pi.T)  # (C, N)
            objective = (log_pi.exp() * log_w).sum(0)  # the ELBO's integrand at each node
            per_node = torch.autograd.grad(objective.sum(), leaves, allow_unused=True,
                                           retain_graph=components)
            out = {"log_w": log_w.detach(), "log_pi": log_pi.detach(),
                   "objective": objective.detach(),
                   "grad_objective": _split(per_node, lam_leaves, theta_leaves, lambda g: g)}
            if components:
                out["grad_log_w"], out["grad_log_pi"] = [], []
                for c in range(log_w.shape[0]):
                    grads = torch.autograd.grad(log_w[c].sum(), leaves, allow_unused=True,
                                                retain_graph=True)
                    out["grad_log_w"].append(_split(grads, lam_leaves, theta_leaves, lambda g: g))
                    if log_pi.requires_grad:
                        grads = torch.autograd.grad(log_pi[c].sum(), leaves, allow_unused=True,
                                                    retain_graph=True)
                    else:
                        grads = [None] * len(leaves)
                    out["grad_log_pi"].append(_split(grads, lam_leaves, theta_leaves,
                                                     lambda g: g))
        return out

    def elbo(self, lam, theta, gradient: bool = True) -> Exact:
        points, weights, coarse = _nodes(self.dim, self.step)
        values = self.pointwise(lam, theta, points, components=False)
        coarse_weights = torch.where(coarse, weights * 2 ** self.dim, torch.zeros_like(weights))
        fine = _weighted(values["grad_objective"], weights)
        rough = _weighted(values["grad_objective"], coarse_weights)
        value = float(weights @ values["objective"])
        error = max(abs(value - float(coarse_weights @ values["objective"])),
                    _max_difference(fine, rough))
        return Exact(value, fine, error)

    def bounds(self, lam, theta, num_samples: Sequence[int], gradient: bool = True) -> dict:
        """The K-sample bound for each K of ``num_samples``: {K: Exact} (without ``gradient``,
        the values alone, and the gradient an empty dict)."""
        points, weights, coarse = _nodes(self.dim, self.step)
        values = self.pointwise(lam, theta, points, components=gradient)
        coarse_weights = torch.where(coarse, weights * 2 ** self.dim, torch.zeros_like(weights))
        elbo = float(weights @ values["objective"])
        names = _flat_names(values["grad_objective"]) if gradient else []
        components = values["log_w"].shape[0]
        if gradient:
            grad_log_w = torch.stack([_flatten(g, names) for g in values["grad_log_w"]])
            grad_log_pi = torch.stack([_flatten(g, names) for g in values["grad_log_pi"]])
        else:  # no parameters to differentiate: (C, N, 0)
            grad_log_w = grad_log_pi = torch.zeros(components, len(weights), 0, dtype=F64)
        centred = values["log_w"] - elbo  # (C, N)
        v = _v_grid(centred, values["log_pi"], weights, max(num_samples))
        results = {}
        psi, phi, dphi = _phi_on_grid(v, centred, values["log_pi"],
                                      torch.stack([weights, coarse_weights], 1), grad_log_w,
                                      grad_log_pi)
        grids = {"fine": (psi[0], phi[0], dphi[0]), "coarse": (psi[1], phi[1], dphi[1])}
        elbo_gradient = _weighted(values["grad_objective"], weights)
        for k in num_samples:
            estimates = {}
            for label in ("fine", "coarse"):
                psi, phi, dphi = grids[label]
                for step_label, stride in (("", 1), ("-v", 2)):
                    if label == "coarse" and stride == 2:
                        continue
                    value, grad = _frullani(v[::stride], psi[::stride], phi[::stride],
                                            dphi[::stride], k)
                    estimates[label + step_label] = (elbo + value, grad)
            value, grad = estimates["fine"]
            error = 0.0
            for other in ("coarse", "fine-v"):
                difference = (grad - estimates[other][1]).abs()
                error = max(error, abs(value - estimates[other][0]),
                            float(difference.max()) if difference.numel() else 0.0)
            found = _unflatten(grad, names, elbo_gradient) if gradient else {}
            results[k] = Exact(value, found, error)
        return results


def _weighted(per_node: dict, weights: torch.Tensor) -> dict:
    return {group: {name: torch.tensordot(weights, g, dims=([0], [0]))
                    for name, g in grads.items()} for group, grads in per_node.items()}


def _flat_names(per_node: dict) -> list:
    return [(group, name) for group in ("lambda", "theta") for name in per_node[group]]


def _flatten(per_node: dict, names) -> torch.Tensor:
    parts = [per_node[group][name].reshape(per_node[group][name].shape[0], -1)
             for group, name in names]
    return torch.cat(parts, -1) if parts else torch.zeros(0, dtype=F64)


def _unflatten(flat: torch.Tensor, names, like: dict) -> dict:
    out, start = {"lambda": {}, "theta": {}}, 0
    for group, name in names:
        shape = like[group][name].shape
        size = int(np.prod(shape, dtype=int))
        out[group][name] = flat[start:start + size].reshape(shape)
        start += size
    return out


def _v_grid(centred: torch.Tensor, log_pi: torch.Tensor, weights: torch.Tensor,
            largest_k: int) -> torch.Tensor:
    """Nodes in v = log s that hold all of Frullani's integrand: below v_min, e^{-Ks} - phi^K is
    K s (E w - 1) to first order, under e^-45 for every K asked; above v_max, s w >= 45 at every
    node of weight above 1e-22 (the others hold less than 1e-18 of phi in all), so that
    phi < e^-45 there."""
    log_mass = torch.logsumexp(torch.log(weights)[None] + log_pi + centred, (0, 1))
    low = -_TAIL - math.log(largest_k) - max(0.0, float(log_mass))
    counted = (weights[None] * log_pi.exp()) > 1e-22
    high = max(4.0, float((-centred)[counted].max()) + math.log(_TAIL))
    start, stop = math.floor(low / V_STEP), math.ceil(high / V_STEP)
    if (stop - start) % 2:  # an even number of intervals, so that the 2H rule spans them too
        stop += 1
    return torch.arange(start, stop + 1, dtype=F64) * V_STEP


def _phi_on_grid(v, centred, log_pi, weights, grad_log_w, grad_log_pi, chunk: int = 2048):
    """For each column of ``weights`` (N, W), one quadrature rule: psi = phi - 1 and phi at
    every v, each computed directly so that neither loses digits where it is small, (W, M), and
    grad phi, (W, M, P). The exponentials are shared by the rules."""
    rules = weights.shape[1]
    psi = torch.zeros(rules, v.shape[0], dtype=F64)
    phi = torch.zeros(rules, v.shape[0], dtype=F64)
    params = grad_log_w.shape[-1]
    dphi = torch.zeros(v.shape[0], rules * params, dtype=F64)
    mixture = bool(grad_log_pi.abs().max() > 0) if grad_log_pi.numel() else False
    components, count = centred.shape
    for c in range(components):
        node_weights = weights * log_pi[c].exp()[:, None]  # (N, W)
        for start in range(0, count, chunk):
            part = slice(start, start + chunk)
            log_sw = v[None, :] + centred[c, part, None]  # log(s w), (n, M)
            sw = log_sw.exp()
            decay = torch.exp(-sw)
            weight = node_weights[part]  # (n, W)
            psi += weight.T @ torch.expm1(-sw)
            phi += weight.T @ decay
            # d e^{-s w} = e^{-s w} (-s w) d log w; x e^{-x} as exp(log x - x) stays finite
            slope = log_sw.sub_(sw).exp_()
            # every rule's weights times the gradients, side by side: (n, W P)
            if not params:
                continue
            rows = weight.shape[0]
            weighted = (weight[:, :, None] * grad_log_w[c, part, None, :]).reshape(
                rows, rules * params)
            dphi -= slope.T @ weighted
            if mixture:
                weighted = (weight[:, :, None] * grad_log_pi[c, part, None, :]).reshape(
                    rows, rules * params)
                dphi += decay.T @ weighted
    dphi = dphi.reshape(v.shape[0], rules, params).movedim(1, 0)
    return psi, phi, dphi


def _frullani(v, psi, phi, dphi, num_samples: int):
    """int (e^{-K s} - phi(s)^K) dv and its gradient, by the trapezoidal rule in v = log s."""
    k = num_samples
    s = v.exp()
    low = v < 0
    integrand = torch.where(low, torch.expm1(-k * s) - torch.expm1(k * torch.log1p(psi)),
                            torch.exp(-k * s) - phi.clamp_min(0).pow(k))
    factor = -k * torch.where(low, 1 + psi, phi).clamp_min(0).pow(k - 1)
    step = float(v[1] - v[0])
    value = float(torch.trapezoid(integrand, dx=step))
    grad = torch.trapezoid(factor[:, None] * dphi, dx=step, dim=0)
    return value, grad


# --------------------------------------------------------------------------------------------
# Quadratic log-weights: the Mellin-Barnes route
# --------------------------------------------------------------------------------------------


def _log_moment(z: torch.Tensor, a0, a1, a2, centre: float) -> torch.Tensor:
    """log E[w'^{-z}] for log w' = sum_d (a0 + a1 e + a2 e^2) - centre, e ~ N(0, I): the
    moment generating function of a non-central chi-square at t = -z, summed over d."""
    z = z[:, None]
    inner = 1 + 2 * z * a2
    terms = -z * a0 - 0.5 * torch.log(inner) + z ** 2 * a1 ** 2 / (2 * inner)
    return z[:, 0] * centre + terms.sum(-1)


def _mellin(a0, a1, a2, centre: float, real_part: float, width: float, v: torch.Tensor,
            stride: int = 1) -> torch.Tensor:
    """(1/2 pi) int Gamma(a + iy) s^{-(a + iy)} E[w'^{-(a + iy)}] dy at s = e^v: phi(s) for
    a > 0, phi(s) - 1 for -1 < a < 0. Trapezoidal in y; ``width`` is the half-width of the strip
    free of singularities about the line (error ~ e^{-2 pi width / step})."""
    step = 2 * math.pi * width / _TAIL
    at_zero = _log_moment(torch.tensor([real_part], dtype=torch.complex128), a0, a1, a2,
                          centre).real
    # |Gamma(a + iy)| < sqrt(2 pi) e^{-pi |y| / 2} for |y| >= 1 and |a| <= 1/2
    reach = (2 / math.pi) * (_TAIL + 1 + max(0.0, float(at_zero.detach())))
    count = int(math.ceil(reach / step))
    y = torch.arange(-count, count + 1, stride, dtype=F64) * step
    z = torch.complex(torch.full_like(y, real_part), y)
    gamma = torch.from_numpy(special.gamma(z.numpy()))
    terms = gamma * torch.exp(_log_moment(z, a0, a1, a2, centre)) * (stride * step / (2 * math.pi))
    # s^{-z} = e^{-v a} e^{-i v y}
    phase = torch.exp(-v[:, None].to(torch.complex128) * z[None, :])
    return (phase @ terms).real


class QuadraticLogWeightExact:
    """The K-sample bound when log w is a sum of independent quadratics of Gaussian noise:
    ``coefficients(lam, theta) -> (a0, a1, a2, log_evidence)`` gives log w = sum_d (a0_d + a1_d
    e_d + a2_d e_d^2), e ~ N(0, I), and log E w (which sets the range of v), as differentiable
    functions of the parameters (leading dimension 1)."""

    def __init__(self, coefficients: Callable):
        self.coefficients = coefficients

    def bounds(self, lam, theta, num_samples: Sequence[int], gradient: bool = True) -> dict:
        lam_leaves, theta_leaves = _leaves(lam, None), _leaves(theta, None)
        leaves = list(lam_leaves.values()) + list(theta_leaves.values())
        with torch.enable_grad():
            a0, a1, a2, log_evidence = self.coefficients(lam_leaves, theta_leaves)
            variants = _quadratic_bound_variants(a0.reshape(-1), a1.reshape(-1), a2.reshape(-1),
                                                 num_samples, float(log_evidence))
            results = {}
            for k, values in variants.items():
                found = {}
                for label, value in values.items():
                    grads = (torch.autograd.grad(value, leaves, allow_unused=True,
                                                 retain_graph=True) if gradient
                             else [None] * len(leaves))
                    found[label] = (float(value.detach()),
                                    _split(grads, lam_leaves, theta_leaves, lambda g: g[0]))
                value, grad = found["fine"]
                error = max(max(abs(value - other[0]), _max_difference(grad, other[1]))
                            for label, other in found.items() if label != "fine")
                results[k] = Exact(value, grad, error)
        return results


def _quadratic_bound_variants(a0, a1, a2, num_samples: Sequence[int], log_evidence: float):
    """{K: {"fine": bound, "y": bound with every other y node, "v": with every other v node}},
    each a tensor that carries autograd to the coefficients."""
    centre = float((a0 + a2).sum().detach())  # E log w: the ELBO, the weights' centre
    most_negative = float((-a2.detach()).clamp_min(0).max())
    most_positive = float(a2.detach().clamp_min(0).max())
    # The line Re z = a > 0 needs 1 + 2 a a2 > 0 (the moment exists), -1 < a' < 0 needs
    # 1 + 2 a' a2 > 0; each line sits halfway between its nearest singularities (Gamma's poles
    # at 0 and -1, the moment's at z = -1 / (2 a2)).
    limit = 1 / (2 * most_negative) if most_negative > 0 else math.inf
    right = min(0.5, limit / 2)
    right_width = min(right, limit - right)
    limit = 1 / (2 * most_positive) if most_positive > 0 else math.inf
    left = -min(0.5, limit / 2)
    left_width = min(-left, 1 + left, limit + left)
    low = -_TAIL - math.log(max(num_samples)) - max(0.0, log_evidence - centre)
    # Above v_max, s w' >= 45 wherever |e_d| <= 8.5: log w' is at least the sum over d of each
    # quadratic's minimum on that interval.
    b0, b1, b2 = a0.detach(), a1.detach(), a2.detach()
    edge = torch.tensor([-HALF_WIDTH, HALF_WIDTH], dtype=F64)
    at_edges = (b0[:, None] + b1[:, None] * edge + b2[:, None] * edge ** 2).min(-1).values
    vertex = torch.where(b2 > 0, -b1 / (2 * b2.clamp_min(1e-300)), torch.zeros_like(b2))
    vertex = vertex.clamp(-HALF_WIDTH, HALF_WIDTH)
    at_vertex = b0 + b1 * vertex + b2 * vertex ** 2
    smallest = float(torch.minimum(at_edges, at_vertex).sum()) - centre
    high = max(4.0, -smallest + math.log(_TAIL))
    start, stop = math.floor(low / V_STEP), math.ceil(high / V_STEP)
    if (stop - start) % 2:  # an even number of intervals, so that the 2H rule spans them too
        stop += 1
    v = torch.arange(start, stop + 1, dtype=F64) * V_STEP
    below = v < 0
    s_low, s_high = v[below].exp(), v[~below].exp()
    parts = {label: (_mellin(a0, a1, a2, centre, left, left_width, v[below], stride),
                     _mellin(a0, a1, a2, centre, right, right_width, v[~below], stride))
             for label, stride in (("fine", 1), ("y", 2))}
    out = {}
    for k in num_samples:
        values = {}
        for label, (psi_low, phi_high) in parts.items():
            integrand = torch.cat([
                torch.expm1(-k * s_low) - torch.expm1(k * torch.log1p(psi_low)),
                torch.exp(-k * s_high) - phi_high.clamp_min(0).pow(k)])
            values[label] = centre + torch.trapezoid(integrand, dx=V_STEP)
            if label == "fine":
                values["v"] = centre + torch.trapezoid(integrand[::2], dx=2 * V_STEP)
        out[k] = values
    return out
