"""Reparameterizable families for q that torch lacks: the ones seed section 6 names.

Seed section 6: "Beyond members of the location-scale family, in theory we can select other
distributions like the chi-square with k degrees of freedom (which can be decomposed into the sum
of the square of k Gaussian variables) or any distribution that can be expressed using the
inverse CDF method (which decomposes into a uniform distribution on [0,1])."

Every family here has ``rsample`` (``has_rsample = True``) and a ``log_prob`` differentiable in
its parameters, so it works with both the pathwise (seed section 5.2) and the score-function
(seed section 5.1) estimators. Densities torch already has are reused, never rewritten.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Callable, Mapping

import torch
from torch.distributions import (AffineTransform, Chi2, Distribution, Independent,
                                 MultivariateNormal, Normal, TransformedDistribution, constraints)
from torch.distributions.utils import clamp_probs

__all__ = ["LocationScale", "InverseCDF", "ChiSquare", "full_covariance_gaussian", "NormalWithNoise"]


def _tensor(value) -> torch.Tensor:
    """Tensors pass through untouched (their graph is the point); numbers get the default dtype."""
    return value if torch.is_tensor(value) else torch.as_tensor(value,
                                                                dtype=torch.get_default_dtype())


class LocationScale(TransformedDistribution):
    """``loc + scale * e`` with ``e`` drawn coordinatewise from a standard base distribution.

    Approximates:  q(z) = prod_d f((z_d - loc_d) / scale_d) / scale_d, f the base density
    With:          z = loc + scale * e, e ~ base   (the location-scale family, seed sections 5.2, 6)
    Requires:      a *standard* base (location 0, scale 1, e.g. Normal(0, 1), StudentT(df),
                   Laplace(0, 1)) with rsample and scalar event shape; scale > 0.

    Event shape ``(D,)`` with ``D = loc.shape[-1]`` after broadcasting ``loc`` with ``scale``;
    the leading dimensions are the batch shape.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    has_rsample = True

    def __init__(self, base: Distribution, loc, scale, validate_args=None):
        if not base.has_rsample:
            raise ValueError(f"LocationScale: base {type(base).__name__} has no rsample, so "
                             "loc + scale * e cannot be reparameterized")
        if base.event_shape != torch.Size():
            raise ValueError(f"LocationScale: base must have event shape (), got "
                             f"{tuple(base.event_shape)}; the family adds the event dimension")
        self.loc, self.scale = torch.broadcast_tensors(_tensor(loc), _tensor(scale))
        if self.loc.dim() == 0:
            raise ValueError("LocationScale: loc and scale need a last dimension D (the event)")
        super().__init__(Independent(base.expand(self.loc.shape), 1),
                         AffineTransform(self.loc, self.scale, event_dim=1),
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        # TransformedDistribution.expand cannot rebuild a subclass with its own __init__.
        shape = torch.Size(batch_shape) + self.event_shape
        return LocationScale(self.base_dist.base_dist, self.loc.expand(shape),
                             self.scale.expand(shape), validate_args=self._validate_args)

    @property
    def mean(self):
        return self.loc + self.scale * self.base_dist.base_dist.mean

    @property
    def variance(self):
        return self.scale.pow(2) * self.base_dist.base_dist.variance

    def entropy(self):
        return self.base_dist.entropy() + self.scale.log().sum(-1)


class InverseCDF(Distribution):
    """The law of ``Q(u; params)``, ``u ~ Uniform(0, 1)``, for a quantile function ``Q``.

    Approximates:  q(x) = 1 / Q'(F(x)), F the inverse of Q in u   (inverse CDF method, seed 6)
    With:          x = Q(u; params), u ~ Uniform(0, 1) clamped to [eps, 1 - eps];
                   log_prob(x) = -log Q'(u) at u = F(x), Q' by autograd; F is ``cdf`` when given,
                   otherwise bisection over the floats in (0, 1) plus one Newton step whose
                   derivative with respect to params is -dQ/dparams / Q' = dF/dparams
                   (the implicit function theorem).
    Requires:      ``quantile(u, **params)`` elementwise in u, strictly increasing, differentiable
                   in u and params; ``cdf(x, **params)`` its inverse if given. log_prob is -inf
                   outside ``support`` and where F(x) rounds to 0 or 1; in the upper tail it
                   loses about -log10(1 - F(x)) digits, the float spacing below 1.

    Scalar event; the batch shape is the broadcast shape of the params. Each param is also
    an attribute (``q.rate``), so code that looks for a distribution's tensors finds them.
    Wrap in ``Independent(..., 1)`` for an event shape ``(D,)``.
    """

    arg_constraints = {}
    has_rsample = True

    def __init__(self, quantile: Callable[..., torch.Tensor], params: dict,
                 cdf: Callable[..., torch.Tensor] | None = None,
                 support: constraints.Constraint = constraints.real, validate_args=None):
        if not callable(quantile):
            raise ValueError(f"InverseCDF: quantile must be a function Q(u, **params), got "
                             f"{type(quantile).__name__}")
        if cdf is not None and not callable(cdf):
            raise ValueError(f"InverseCDF: cdf must be a function F(x, **params) or None, got "
                             f"{type(cdf).__name__}")
        if not isinstance(params, Mapping):
            raise ValueError(f"InverseCDF: params must be a dict of name -> tensor (the keyword "
                             f"arguments of quantile), got {type(params).__name__}")
        converted = {}
        for name, value in params.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise ValueError(f"InverseCDF: parameter names must be identifiers (quantile's "
                                 f"keywords), got {name!r}")
            try:
                if isinstance(value, (bool, str, bytes)):
                    raise TypeError
                converted[name] = _tensor(value)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"InverseCDF: params[{name!r}] must be a tensor or a number, "
                                 f"got {type(value).__name__}") from None
        self.quantile, self._cdf_fn, self._support = quantile, cdf, support
        self.params = converted
        for name, value in self.params.items():
            if hasattr(type(self), name) or name in ("quantile", "params") or name[:1] == "_":
                raise ValueError(f"InverseCDF: parameter name {name!r} clashes with an attribute")
            setattr(self, name, value)
        floats = [v.dtype for v in self.params.values() if v.is_floating_point()]
        self._dtype = (functools.reduce(torch.promote_types, floats) if floats
                       else torch.get_default_dtype())
        batch_shape = torch.broadcast_shapes(*(v.shape for v in self.params.values()))
        super().__init__(batch_shape, torch.Size(), validate_args=validate_args)

    @property
    def support(self):
        return self._support

    def expand(self, batch_shape, _instance=None):
        params = {k: v.expand(batch_shape) for k, v in self.params.items()}
        return InverseCDF(self.quantile, params, self._cdf_fn, self._support,
                          validate_args=self._validate_args)

    def _device(self):
        return next(iter(self.params.values())).device if self.params else None

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        u = clamp_probs(torch.rand(shape, dtype=self._dtype, device=self._device()))
        return self.quantile(u, **self.params).expand(shape)

    def icdf(self, value):
        return self.quantile(value, **self.params)

    def _quantile_derivative(self, u):
        """Q'(u), keeping the graph so that gradients with respect to u and params flow."""
        if not u.requires_grad:
            u = u.detach().requires_grad_()
        x = self.quantile(u, **self.params)
        # Q is elementwise in u, so the gradient of the sum is the vector of derivatives.
        return torch.autograd.grad(x.sum(), u, create_graph=True)[0]

    @torch.no_grad()
    def _bisect(self, x):
        """The smallest float u in (0, 1] with Q(u) >= x, exactly.

        Nonnegative floats are ordered as their bit patterns read as integers, so bisecting the
        integers finds adjacent floats in a fixed number of steps (62 for float64) with
        relative precision near 0, where an absolute bisection in u would stall.
        """
        int_dtype = {torch.float64: torch.int64, torch.float32: torch.int32,
                     torch.float16: torch.int16, torch.bfloat16: torch.int16}[x.dtype]
        one = torch.tensor(1.0, dtype=x.dtype).view(int_dtype).item()
        low = torch.zeros(x.shape, dtype=int_dtype, device=x.device)  # the bits of 0.0
        high = torch.full_like(low, one)
        for _ in range(one.bit_length()):
            middle = (low + high) // 2
            below = self.quantile(middle.view(x.dtype), **self.params) < x
            low, high = torch.where(below, middle, low), torch.where(below, high, middle)
        return high.view(x.dtype)

    def _cdf_and_valid(self, value):
        """F(value) with its gradient in params, and where -log Q'(F(value)) is meaningful."""
        value = torch.as_tensor(value, dtype=self._dtype, device=self._device())
        value = value.expand(torch.broadcast_shapes(value.shape, self.batch_shape))
        inside = self.support.check(value)
        # Evaluate at a point inside the support where value is outside, so that no inf or NaN
        # reaches the graph (a masked NaN still poisons the gradient through torch.where).
        with torch.no_grad():
            median = self.quantile(torch.full_like(value, 0.5), **self.params).expand_as(value)
        x = torch.where(inside, value, median)
        if self._cdf_fn is not None:
            u = self._cdf_fn(x, **self.params).expand_as(x)
            u0 = u.detach()
        else:
            u0 = self._bisect(x.detach())
            start = torch.where(u0 < 1, u0, 0.5)  # u0 = 1 only when x is beyond Q(1 - ulp)
            # A Newton step with a constant slope: value ~ u0, derivative dF/dparams.
            slope = self._quantile_derivative(start).detach()
            u = start - (self.quantile(start, **self.params) - x) / slope
        valid = inside & (u0 > 0) & (u0 < 1) & (u.detach() > 0) & (u.detach() < 1)
        return u, valid

    def log_prob(self, value):
        # Outside the support the density is zero (-inf here) rather than an error, so that
        # importance weights of foreign samples are well defined.
        grad_enabled = torch.is_grad_enabled()
        with torch.enable_grad():  # Q' needs autograd even when the caller is in no_grad
            u, valid = self._cdf_and_valid(value)
            u = torch.where(valid, u, 0.5)
            log_density = -self._quantile_derivative(u).log()
            log_density = torch.where(valid, log_density, -math.inf)
        return log_density if grad_enabled else log_density.detach()


class ChiSquare(Distribution):
    """``scale`` times a chi-square variable with ``df`` degrees of freedom.

    Approximates:  q(x) = chi2_df(x / scale) / scale, the chi2 density from torch's Chi2
    With:          x = scale * sum_{i=1}^{df} e_i^2, e_i ~ N(0, 1)   (seed section 6)
    Requires:      df a positive int; scale > 0. Gradients reach scale only: df is discrete.
    """

    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative  # as torch's Chi2
    has_rsample = True

    def __init__(self, df: int, scale=1.0, validate_args=None):
        if isinstance(df, bool) or not isinstance(df, numbers.Integral) or df < 1:
            raise ValueError(f"ChiSquare: df must be a positive int (the number of squared "
                             f"normals summed), got {df!r}")
        self.df = int(df)
        self.scale = _tensor(scale)
        self._chi2 = Chi2(torch.tensor(float(self.df), dtype=self.scale.dtype,
                                       device=self.scale.device), validate_args=False)
        super().__init__(self.scale.shape, torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return ChiSquare(self.df, self.scale.expand(batch_shape), self._validate_args)

    @property
    def mean(self):
        return self.df * self.scale

    @property
    def variance(self):
        return 2 * self.df * self.scale.pow(2)

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        normals = torch.randn(shape + (self.df,), dtype=self.scale.dtype, device=self.scale.device)
        return self.scale * normals.square().sum(-1)

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        return self._chi2.log_prob(value / self.scale) - self.scale.log()

    def cdf(self, value):
        return self._chi2.cdf(value / self.scale)

    def entropy(self):
        return self._chi2.entropy() + self.scale.log()


def full_covariance_gaussian(loc, scale_tril, validate_args=None) -> MultivariateNormal:
    """N(loc, L L^T) with a full covariance, reparameterized as loc + L e, e ~ N(0, I).

    Approximates:  q(z) = N(z; loc, Sigma), Sigma = L L^T   (seed sections 5.2 and 6:
                   Y = mu + Sigma^{1/2} X, X ~ N(0, I))
    Requires:      scale_tril square, lower triangular, with a positive diagonal. Checked here
                   whatever the global validation setting, since a wrong L silently changes q.
    """
    scale_tril, loc = _tensor(scale_tril), _tensor(loc)
    if scale_tril.dim() < 2 or scale_tril.shape[-1] != scale_tril.shape[-2]:
        raise ValueError(f"full_covariance_gaussian: scale_tril must be square (..., D, D), "
                         f"got {tuple(scale_tril.shape)}")
    # torch accepts a loc (3,) with a scale_tril (2, 2), and fails only when sampled.
    if loc.dim() < 1 or loc.shape[-1] != scale_tril.shape[-1]:
        raise ValueError(f"full_covariance_gaussian: loc of shape {tuple(loc.shape)} and "
                         f"scale_tril of shape {tuple(scale_tril.shape)} disagree on D; loc "
                         "must be (..., D) for a scale_tril (..., D, D)")
    try:
        torch.broadcast_shapes(loc.shape[:-1], scale_tril.shape[:-2])
    except RuntimeError:
        raise ValueError(f"full_covariance_gaussian: the batch shapes of loc "
                         f"{tuple(loc.shape[:-1])} and scale_tril {tuple(scale_tril.shape[:-2])} "
                         "do not broadcast") from None
    for what, value in (("loc", loc), ("scale_tril", scale_tril)):
        if not torch.isfinite(value.detach()).all():  # NaN made "must be lower triangular"
            raise ValueError(f"full_covariance_gaussian: {what} contains NaN or an infinite "
                             "value")
    matrix = scale_tril.detach()
    if not torch.equal(matrix, matrix.tril()):
        raise ValueError("full_covariance_gaussian: scale_tril must be lower triangular "
                         "(a Cholesky factor); use torch.linalg.cholesky on a covariance")
    if not (matrix.diagonal(dim1=-2, dim2=-1) > 0).all():
        raise ValueError("full_covariance_gaussian: scale_tril needs a positive diagonal")
    return MultivariateNormal(loc, scale_tril=scale_tril, validate_args=validate_args)


class NormalWithNoise(Normal):
    """torch's Normal, whose standard noise the caller drew: ``rsample(shape) = loc + noise * scale``.

    Approximates:  the same q as ``Normal(loc, scale)``: densities, entropy and the KL registry's
                   (Normal, Normal) pair are torch's own
    With:          z = loc + scale * e, e = ``noise``, given (seed section 5.2)
    Requires:      ``noise`` of the shape of the one draw it serves, ``sample_shape + batch_shape``;
                   each instance gives its noise once (a second draw would repeat it, so it raises).

    For code that must say where a sample's randomness comes from: R training runs that each draw
    from their own generator (so that run r of a group is the solo run of seed s + r), and a CUDA
    graph, whose replay cannot advance a random stream that its capture did not record.
    ``sample`` is ``rsample`` under ``no_grad``, as torch.distributions defines it, so the
    score-function estimators see the same z as the pathwise ones would.
    """

    def __init__(self, loc, scale, noise: torch.Tensor, validate_args=None):
        super().__init__(loc, scale, validate_args=validate_args)
        if not torch.is_tensor(noise):
            raise ValueError(f"NormalWithNoise: noise must be a tensor, got {type(noise).__name__}")
        self.noise = noise
        self._drawn = False

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        if self.noise.shape != shape:
            raise ValueError(f"NormalWithNoise: a draw of shape {tuple(shape)} (sample_shape "
                             f"{tuple(sample_shape)} + batch_shape {tuple(self.batch_shape)}) "
                             f"needs noise of that shape, got {tuple(self.noise.shape)}")
        if self._drawn:
            raise RuntimeError("NormalWithNoise: its noise was drawn already; a second draw "
                               "needs a second NormalWithNoise with noise of its own")
        self._drawn = True
        return self.loc + self.noise * self.scale

    def sample(self, sample_shape=torch.Size()):
        with torch.no_grad():
            return self.rsample(sample_shape)
