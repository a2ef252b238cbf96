"""The estimator contract, written once: the result type, the model protocol, the shape rules.

Shapes
------
``q`` is a :class:`torch.distributions.Distribution` with event shape ``(D,)``. Its batch
dimensions are independent problems. Samples are drawn with shape
``(num_samples, *q.batch_shape, D)`` and ``model.log_joint`` maps them to
``(num_samples, *q.batch_shape)``. Every estimator returns tensors of shape ``q.batch_shape``.

Because batch entries are independent, giving each of R replicates its own copy of the
parameters (a leading dimension R) yields R independent gradient estimates from one backward
pass; :mod:`estimators.diagnostics` is built on that.

The surrogate
-------------
An estimator returns ``ElboEstimate(elbo, surrogate)``. ``surrogate`` has the value of ``elbo``
and its gradient (``surrogate.sum().backward()``) is the estimator's estimate of the gradient of
the objective with respect to every parameter that ``q`` (lambda in the seed) and ``model``
(theta) depend on. The value is kept by adding ``term - term.detach()``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Protocol, runtime_checkable

import torch
from torch.distributions import Distribution, Independent, OneHotCategorical
from torch.distributions.utils import lazy_property

__all__ = [
    "ElboEstimate",
    "Model",
    "FactorisedModel",
    "Estimator",
    "EstimatorError",
    "attach_gradient",
    "check_inputs",
    "check_log_joint",
    "evaluate_model",
    "set_validation",
    "validation_enabled",
]


class ElboEstimate(NamedTuple):
    """An estimate of the objective and a tensor that carries the estimator's gradient.

    Both have shape ``q.batch_shape``; ``surrogate`` equals ``elbo`` in value.
    """

    elbo: torch.Tensor
    surrogate: torch.Tensor


@runtime_checkable
class Model(Protocol):
    """A model p(x, z) with x fixed: all an estimator of seed eq. (4) needs."""

    def log_joint(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x, z), vectorised over every leading dimension of ``z``."""
        ...


@runtime_checkable
class FactorisedModel(Model, Protocol):
    """A model written as prior times likelihood, for seed eq. (6)."""

    prior: Distribution

    def log_likelihood(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z), vectorised over every leading dimension of ``z``."""
        ...


class EstimatorError(ValueError):
    """Raised when an estimator is used in a way it cannot support."""


_VALIDATE = True


def set_validation(enabled: bool) -> None:
    """Turn the scans of values on or off for speed-critical loops: each reads a value back from
    the device. They look for NaN or infinite values in q's parameters, in what the model
    returns, in a tensor baseline, in a tensor temperature or eta and RELAX's state, and for
    values outside [0, 1] from a ``uniform=`` option. The checks of types, shapes and Python
    numbers, which cost nothing, always run."""
    global _VALIDATE
    _VALIDATE = bool(enabled)


def validation_enabled() -> bool:
    return _VALIDATE


def attach_gradient(value: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
    """The value of ``value`` with the gradient of ``term`` alone (Pyro's surrogate trick)."""
    return value.detach() + (term - term.detach())


def _distribution_tensors(q: Distribution):
    """(name, tensor) for every tensor a distribution stores, nested distributions included.

    Nested distributions are followed under private names too: OneHotCategorical keeps its
    logits in ``_categorical`` and MixtureSameFamily its parts in ``_mixture_distribution`` and
    ``_component_distribution``, and their parameters are q's parameters all the same. Of a
    family given either logits or probs (``_param``), the other, cached once computed, is left
    out: it is a function of the one given, not a parameter of its own."""
    given = vars(q).get("_param")
    for name, value in vars(q).items():
        if isinstance(value, Distribution):
            for inner_name, inner in _distribution_tensors(value):
                yield f"{name}.{inner_name}", inner
        elif name.startswith("_") and name != "_unbroadcasted_scale_tril":
            continue
        elif torch.is_tensor(value):
            if (given is not None and value is not given
                    and isinstance(getattr(type(q), name, None), lazy_property)):
                continue
            yield name, value


def distribution_parameters(q: Distribution) -> list[torch.Tensor]:
    """The tensors of ``q`` that require grad: its parameters lambda, as far as q knows them."""
    seen, params = set(), []
    for _, tensor in _distribution_tensors(q):
        if tensor.requires_grad and id(tensor) not in seen:
            seen.add(id(tensor))
            params.append(tensor)
    return params


def check_inputs(
    name: str,
    model,
    q,
    num_samples,
    *,
    min_samples: int = 1,
    needs_rsample: bool = False,
    needs_factorised: bool = False,
) -> None:
    """Fail early, with a message that says what to do, on input an estimator cannot use."""
    if not isinstance(q, Distribution):
        raise EstimatorError(
            f"{name}: q must be a torch.distributions.Distribution, got {type(q).__name__}"
        )
    if len(q.event_shape) != 1 and not _one_hot_latents(q):
        raise EstimatorError(
            f"{name}: q must have event shape (D,), got {tuple(q.event_shape)}; "
            "wrap a scalar family in torch.distributions.Independent(..., 1)"
        )
    if q.event_shape[0] == 0:
        raise EstimatorError(f"{name}: q has no latent variables (event shape "
                             f"{tuple(q.event_shape)}); give it at least one (D >= 1)")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int):
        raise EstimatorError(f"{name}: num_samples must be an int, got {num_samples!r}")
    if num_samples < min_samples:
        hint = " (the leave-one-out baseline needs another sample)" if min_samples > 1 else ""
        raise EstimatorError(
            f"{name}: needs num_samples >= {min_samples}, got {num_samples}{hint}"
        )
    if not callable(getattr(model, "log_joint", None)) and not needs_factorised:
        raise EstimatorError(f"{name}: model must have a log_joint(z) method")
    if needs_rsample and not q.has_rsample:
        raise EstimatorError(
            f"{name}: q ({type(q).__name__}) has no rsample, so it cannot be reparameterized; "
            "use a score-function estimator (score_function, score_function_loo, ...) "
            "or a reparameterizable family"
        )
    if needs_factorised:
        missing = [a for a in ("prior", "log_likelihood") if not hasattr(model, a)]
        if missing:
            raise EstimatorError(
                f"{name}: model must expose prior and log_likelihood(z) (seed eq. 6); "
                f"missing {', '.join(missing)}. Use 'pathwise', which needs only log_joint"
            )
    if _VALIDATE:
        for pname, tensor in _distribution_tensors(q):
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                what = "NaN" if torch.isnan(tensor).any() else "an infinite value"
                raise EstimatorError(f"{name}: q's parameter {pname!r} contains {what}")


def _one_hot_latents(q) -> bool:
    """D one-hot categorical latents, Independent(OneHotCategorical(logits (..., D, C)), 1):
    event shape (D, C), log_prob summed over the D latents, so any estimator that only samples
    and scores q takes it as it takes an event (D,)."""
    return (isinstance(q, Independent) and q.reinterpreted_batch_ndims == 1
            and isinstance(q.base_dist, OneHotCategorical))


def check_log_joint(name: str, log_joint: torch.Tensor, z: torch.Tensor, q: Distribution,
                    what: str = "log_joint") -> None:
    """The model must map (S, *batch, *event) samples to (S, *batch) log densities: a floating
    tensor of that shape always (cheap checks); with validation on, finite."""
    if not torch.is_tensor(log_joint):
        raise EstimatorError(f"{name}: model.{what} must return a torch tensor, got "
                             f"{type(log_joint).__name__}")
    expected = z.shape[:z.dim() - len(q.event_shape)]
    if log_joint.shape != expected:
        raise EstimatorError(
            f"{name}: model.{what} returned shape {tuple(log_joint.shape)} for samples of "
            f"shape {tuple(z.shape)}; expected (num_samples, *q.batch_shape) = "
            f"{tuple(expected)}"
        )
    # Some estimators would refuse an integer tensor deep inside torch (mean of a Long) and
    # others would promote it: refused here by all alike.
    if not log_joint.is_floating_point():
        raise EstimatorError(f"{name}: model.{what} returned a tensor of dtype "
                             f"{log_joint.dtype}; a log density must be floating point "
                             f"(return it in q's dtype, {z.dtype})")
    if _VALIDATE and not torch.isfinite(log_joint).all():
        # -inf (z outside the model's support) or +inf: the estimate is infinite and its
        # gradient NaN or infinite, with nothing to say why.
        found = "NaN" if torch.isnan(log_joint).any() else (
            "+inf" if (log_joint == math.inf).any() else "-inf")
        raise EstimatorError(f"{name}: model.{what} returned {found} for some samples; check "
                             "the model at those z (its support must hold every z that q "
                             "draws; set_validation(False) skips this scan)")


# The words of torch's errors when two operands of a matrix product, a convolution or an
# indexed update have different floating dtypes.
_DTYPE_ERROR = re.compile(r"dtype|scalar type")


def _model_dtype(model) -> str:
    parameters = getattr(model, "parameters", None)
    if callable(parameters):
        try:
            for parameter in parameters():
                if torch.is_tensor(parameter) and parameter.is_floating_point():
                    return f" with its {parameter.dtype} parameters"
        except Exception:  # noqa: BLE001 - only a hint for the message
            pass
    return ""


def evaluate_model(name: str, model, z: torch.Tensor, q: Distribution,
                   what: str = "log_joint") -> torch.Tensor:
    """``model.<what>(z)`` checked by :func:`check_log_joint`; a model whose dtype is not q's
    (a float32 network given float64 samples, or the reverse) is named in one line instead of
    torch's error from deep inside the model."""
    function = getattr(model, what)
    if torch.compiler.is_compiling():  # no exception handling inside a compiled graph
        value = function(z)
    else:
        try:
            value = function(z)
        except RuntimeError as error:
            first = (str(error).strip().splitlines() or [""])[0]
            if not _DTYPE_ERROR.search(first):
                raise
            raise EstimatorError(
                f"{name}: model.{what} cannot take q's {z.dtype} samples{_model_dtype(model)} "
                f"({first}); give the model and q one dtype (q's parameters with .to(dtype), "
                "or model.to(dtype))") from None
    check_log_joint(name, value, z, q, what)
    return value


@dataclass(frozen=True)
class Estimator:
    """A named gradient estimator with the facts a user needs to choose it.

    Calling it is calling ``fn(model, q, num_samples, **options)``.
    """

    name: str
    fn: Callable[..., ElboEstimate] = field(repr=False)
    equation: str
    requires: str
    objective: str  # "elbo" (seed eq. 4) or "iwae" (the importance-weighted bound)
    unbiased: bool
    reference: str
    min_samples: int = 1
    needs_rsample: bool = False
    needs_factorised: bool = False
    needs_diagonal_gaussian: bool = False  # q must be Independent(Normal(loc, scale), 1)
    # Draws random variates of its own besides q's samples, from torch's global stream: giving q
    # its noise (NormalWithNoise) does not fix the estimate.
    extra_randomness: bool = False
    # The kinds of q it takes (estimators.discrete.q_kind): "continuous" (a real-valued q: the
    # Gaussian, the families of seed section 6), "bernoulli", "categorical", "mixture". Code that
    # iterates the registry with a Gaussian q keeps the entries whose q_kinds hold "continuous".
    q_kinds: tuple = ("continuous",)
    # A relaxation: q must carry logits (a Bernoulli or one-hot categorical q), and log p(x, z)
    # must be defined and differentiable at relaxed z (in [0, 1], on the simplex).
    needs_logits: bool = False
    options: dict = field(default_factory=dict, repr=False)

    def __call__(self, model, q, num_samples: int, **options) -> ElboEstimate:
        return self.fn(model, q, num_samples, **{**self.options, **options})


def log_mean_exp(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    return torch.logsumexp(x, dim) - math.log(x.shape[dim])
