"""Gradient diagnostics: R independent gradient estimates in one pass, and their statistics.

Each of R replicates gets its own copy of the parameters, a leading dimension R. Because batch
entries of q are independent problems, one backward pass of the summed surrogate then yields R
independent gradient estimates, with no Python loop over replicates. The parameters of q (lambda
in the seed) are reported apart from the model's (theta): section 5 of the seed shows their
gradients are different problems, and their variances differ by orders of magnitude.

A network's parameters are replicated the same way: ``experiments.replicated`` builds R copies of
a VAE for the VAE studies' probes and for their groups of training runs.
"""

from __future__ import annotations

import functools
import math
import numbers
import types
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from .base import ElboEstimate, EstimatorError
from .measure_valued import keep_draws_eager

__all__ = [
    "batch_mean",
    "ReplicateGradients",
    "ParameterStatistics",
    "chunk_sizes",
    "replicate_gradients",
    "compiled_pass",
    "gradient_statistics",
    "group_summary",
    "diagnose",
]

def batch_mean(estimator: Callable) -> Callable:
    """A minibatch estimator from a per-point one: the mean over the last batch dimension.

    For amortised models, where q's batch shape is (R, B) with B data points, so that each
    replicate is one full minibatch gradient, as a training step would take it.
    """

    def estimate(model, q, num_samples, **options) -> ElboEstimate:
        result = estimator(model, q, num_samples, **options)
        return ElboEstimate(result.elbo.mean(-1), result.surrogate.mean(-1))

    return estimate


@dataclass
class ReplicateGradients:
    """R independent gradient estimates: each tensor has a leading dimension R."""

    elbo: torch.Tensor
    lambda_: dict[str, torch.Tensor]
    theta: dict[str, torch.Tensor]


def _replicate(params: Mapping[str, torch.Tensor], num_replicates: int) -> dict[str, torch.Tensor]:
    return {
        name: value.detach().unsqueeze(0).expand(num_replicates, *value.shape).clone()
        .requires_grad_(True)
        for name, value in params.items()
    }


def chunk_sizes(total: int, chunk: int | None) -> list[int]:
    """The replicates of each vectorised pass, in order: ``chunk`` at a time, never one alone.

    Each is ``chunk`` (the last the rest) except where that would leave a single replicate: then
    that pass takes one fewer, or, with ``chunk`` 2, one more (an odd total ends with a 3).
    """
    if chunk is not None and (isinstance(chunk, bool)
                              or not isinstance(chunk, numbers.Integral)):
        raise ValueError(f"chunk must be an int (or None), got {chunk!r}")
    if chunk is not None and chunk < 2:
        raise ValueError(f"chunk must be >= 2 (no pass may hold a single replicate), got {chunk}")
    if chunk is None or chunk >= total:
        return [total]
    sizes, remaining = [], total
    while remaining > 0:
        size = min(chunk, remaining)
        if remaining - size == 1:  # a last pass of one replicate: take it here instead
            size = size - 1 if size > 2 else size + 1
        sizes.append(size)
        remaining -= size
    return sizes


def replicate_gradients(
    estimator: Callable,
    build: Callable,
    lambda_params: Mapping[str, torch.Tensor],
    theta_params: Mapping[str, torch.Tensor] | None = None,
    *,
    num_replicates: int,
    num_samples: int,
    chunk: int | None = None,
    on_chunk: Callable[[int], None] | None = None,
    compile: bool = False,
    **options,
) -> ReplicateGradients:
    """Draw ``num_replicates`` independent gradient estimates in one vectorised pass (or chunks).

    ``build(lambda_params, theta_params) -> (model, q)`` receives each parameter with a leading
    dimension R (one copy per replicate, each a leaf that requires grad) and must return a q whose
    batch shape starts with R and a model that broadcasts its parameters against samples of shape
    (num_samples, R, ..., D).

    ``chunk`` bounds memory: the replicates are then drawn in passes of at most ``chunk`` (sizes
    from :func:`chunk_sizes`), one after the other, and concatenated in order; ``on_chunk(size)``
    is called after each pass (a progress bar's ``update``). The estimator gets the same
    ``options`` in every pass.

    ``compile=True`` runs each pass through :func:`torch.compile` (see :func:`compiled_pass`):
    the same numbers, to rounding, several times faster once compiled, but the first pass of
    each (estimator, build, shape) compiles for seconds. It pays when the same measurement is
    repeated (a benchmark, a long sweep with one build); the eager pass is the default.
    """
    _check_request(lambda_params, theta_params, num_replicates, num_samples)
    one_pass = _compiled_one_pass if compile else _one_pass
    parts = []
    for size in chunk_sizes(num_replicates, chunk):
        parts.append(one_pass(estimator, build, lambda_params, theta_params, size, num_samples,
                              options))
        if on_chunk is not None:
            on_chunk(size)
    if len(parts) == 1:
        return parts[0]
    return ReplicateGradients(
        elbo=torch.cat([p.elbo for p in parts]),
        lambda_={n: torch.cat([p.lambda_[n] for p in parts]) for n in parts[0].lambda_},
        theta={n: torch.cat([p.theta[n] for p in parts]) for n in parts[0].theta},
    )


def _check_request(lambda_params, theta_params, num_replicates, num_samples) -> None:
    """Refuse, in one line and before any pass, what replicate_gradients cannot do."""
    if isinstance(num_replicates, bool) or not isinstance(num_replicates, numbers.Integral):
        raise EstimatorError(f"num_replicates must be an int >= 2, got {num_replicates!r}")
    if num_replicates < 2:
        raise EstimatorError(f"num_replicates must be >= 2 to estimate a variance, got "
                             f"{num_replicates}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise EstimatorError(f"num_samples must be an int >= 1, got {num_samples!r}")
    groups = (("lambda_params", lambda_params), ("theta_params", theta_params or {}))
    for group, params in groups:
        if not isinstance(params, Mapping):
            raise EstimatorError(f"{group} must be a dict of name -> tensor, got "
                                 f"{type(params).__name__}")
        for name, value in params.items():
            if not torch.is_tensor(value) or not value.is_floating_point():
                got = f"dtype {value.dtype}" if torch.is_tensor(value) else type(value).__name__
                raise EstimatorError(f"{group}[{name!r}] must be a floating tensor (a parameter "
                                     f"to differentiate), got {got}")
    # The gradients are reported by name: a name in both would report theta's under lambda's.
    shared = sorted(map(repr, set(lambda_params) & set(theta_params or {})))
    if shared:
        raise EstimatorError(f"lambda_params and theta_params both name {', '.join(shared)}; "
                             "give each parameter one name (the gradients are reported by name, "
                             "so one would be reported as the other)")


def _one_pass(estimator, build, lambda_params, theta_params, num_replicates, num_samples,
              options) -> ReplicateGradients:
    lam = _replicate(lambda_params, num_replicates)
    theta = _replicate(theta_params or {}, num_replicates)
    model, q = build(lam, theta)
    if q.batch_shape[:1] != (num_replicates,):
        raise ValueError(
            f"build must return q with batch shape (R, ...) = ({num_replicates}, ...), "
            f"got {tuple(q.batch_shape)}"
        )
    estimate = estimator(model, q, num_samples, **options)
    leaves = list(lam.values()) + list(theta.values())
    grads = torch.autograd.grad(estimate.surrogate.sum(), leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
    names = list(lam) + list(theta)
    by_name = dict(zip(names, grads))
    return ReplicateGradients(
        elbo=estimate.elbo.detach(),
        lambda_={n: by_name[n] for n in lam},
        theta={n: by_name[n] for n in theta},
    )


# --------------------------------------------------------------------------------------------
# The compiled pass
# --------------------------------------------------------------------------------------------


def _objective(estimator, build, num_samples, options, lambda_names, theta_names, *leaves):
    """The summed surrogate and the estimates of one replicated pass, as a function of its leaves."""
    lam = dict(zip(lambda_names, leaves[:len(lambda_names)]))
    theta = dict(zip(theta_names, leaves[len(lambda_names):]))
    model, q = build(lam, theta)
    estimate = estimator(model, q, num_samples, **options)
    return estimate.surrogate.sum(), estimate.elbo.detach()


_COMPILED: OrderedDict = OrderedDict()  # key -> (estimator, build, options, compiled function)
_CACHE_SIZE = 32
_EAGER: list = []  # compiled functions that failed: their estimators run eagerly from then on


def _mark_eager(function) -> None:
    _EAGER.append(function)
    del _EAGER[:-_CACHE_SIZE]
# Each copy of the function above recompiles for new shapes (chunk sizes); torch's default limit
# of 8 compilations per function would send the later ones back to eager without a word.
_RECOMPILE_LIMIT = 64


def compiled_pass(estimator: Callable, build: Callable, num_samples: int,
                  lambda_names: tuple, theta_names: tuple, options: Mapping) -> Callable:
    """``f(*leaves) -> (surrogate sum, elbo, R)``: one replicated pass under :func:`torch.compile`.

    Compiled once per (estimator, build, num_samples, parameter names, options) and kept; torch
    recompiles it for new shapes. None where it failed to compile before (the pass then runs
    eagerly, with a warning the first time). TorchInductor fuses the forward and backward passes' elementwise
    work, which dominates the replicated pass. Random draws fall back to torch's own kernels
    (``fallback_random``), so a seeded pass draws what the eager pass draws and the two agree to
    rounding. Inside it, the estimators' NaN scan and torch.distributions' argument checks are
    off: their data-dependent branches would split the compiled graph.
    """
    # By identity; the cache holds the objects, so an id is not reused while its entry lives.
    key = (id(estimator), id(build), num_samples, lambda_names, theta_names,
           tuple(sorted((k, id(v)) for k, v in options.items())))
    if key in _COMPILED:
        _COMPILED.move_to_end(key)
        if _COMPILED[key][-1] in _EAGER:
            return None
    else:
        keep_draws_eager()  # the measure-valued draws stay outside the graph, in eager order
        # A copy of _objective with a code object of its own: torch keeps compiled graphs per
        # code object and checks their guards in turn on every call, so one shared code object
        # made each pass slower with every other estimator compiled (8.5 ms against 4.5 ms).
        objective = types.FunctionType(_objective.__code__.replace(), _objective.__globals__,
                                       f"_objective_{len(_COMPILED)}")
        _COMPILED[key] = (estimator, build, dict(options), torch.compile(functools.partial(
            objective, estimator, build, num_samples, dict(options), lambda_names, theta_names),
            dynamic=False))
        if len(_COMPILED) > _CACHE_SIZE:
            _COMPILED.popitem(last=False)
    return _COMPILED[key][-1]


def _compiled_one_pass(estimator, build, lambda_params, theta_params, num_replicates,
                       num_samples, options) -> ReplicateGradients:
    import torch._dynamo
    import torch._inductor.config
    from torch.distributions import Distribution

    from .base import set_validation, validation_enabled

    lam = _replicate(lambda_params, num_replicates)
    theta = _replicate(theta_params or {}, num_replicates)
    leaves = list(lam.values()) + list(theta.values())
    # Read before torch.compile: its first use turns torch.distributions' argument checks off
    # for the whole process (torch._dynamo patches them); the caller's setting is put back below.
    validating, checking_args = validation_enabled(), Distribution._validate_args
    function = compiled_pass(estimator, build, num_samples, tuple(lam), tuple(theta), options)
    if function is None:  # this estimator failed to compile before
        Distribution.set_default_validate_args(checking_args)
        return _one_pass(estimator, build, lambda_params, theta_params, num_replicates,
                         num_samples, options)
    set_validation(False)
    Distribution.set_default_validate_args(False)
    rng = torch.get_rng_state()
    try:
        with torch._dynamo.config.patch(recompile_limit=_RECOMPILE_LIMIT), \
                torch._inductor.config.patch(fallback_random=True):
            total, elbo = function(*leaves)
    except Exception as error:  # noqa: BLE001 - any failure to trace or compile: run eagerly
        _mark_eager(function)
        name = getattr(estimator, "name", getattr(estimator, "__name__", "the estimator"))
        warnings.warn(f"replicate_gradients(compile=True): {name} does not compile "
                      f"({type(error).__name__}: {str(error).splitlines()[0][:120]}); "
                      "it runs eagerly", stacklevel=3)
        torch.set_rng_state(rng)  # the eager pass draws what it would have drawn
        return _one_pass(estimator, build, lambda_params, theta_params, num_replicates,
                         num_samples, options)
    finally:
        set_validation(validating)
        Distribution.set_default_validate_args(checking_args)
    if elbo.shape[:1] != (num_replicates,):
        raise ValueError(f"build must return q with batch shape (R, ...) = ({num_replicates}, ...), "
                         f"got {tuple(elbo.shape)}")
    grads = torch.autograd.grad(total, leaves, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(leaves, grads)]
    by_name = dict(zip(list(lam) + list(theta), grads))
    return ReplicateGradients(elbo=elbo, lambda_={n: by_name[n] for n in lam},
                              theta={n: by_name[n] for n in theta})


@dataclass
class ParameterStatistics:
    """Statistics of R gradient estimates of one parameter, each with its standard error.

    ``mean``, ``variance``, ``snr`` and ``bias`` have the parameter's shape; ``total_variance``
    is the trace of the covariance (a scalar). ``bias`` and ``z`` are None without an exact value.
    """

    num_replicates: int
    mean: torch.Tensor
    mean_se: torch.Tensor
    variance: torch.Tensor
    variance_se: torch.Tensor
    snr: torch.Tensor
    snr_se: torch.Tensor
    total_variance: torch.Tensor
    total_variance_se: torch.Tensor
    bias: torch.Tensor | None = None
    bias_se: torch.Tensor | None = None
    z: torch.Tensor | None = None


def gradient_statistics(grads: torch.Tensor, exact: torch.Tensor | None = None) -> ParameterStatistics:
    """Mean, variance, SNR and bias of replicate gradients ``grads`` (leading dimension R).

    Standard errors: the mean's is sqrt(var / R); a variance is the mean of the squared
    deviations, so its standard error is their standard deviation over sqrt(R); the SNR
    |mean| / sd (Rainforth et al. 2018) gets a delta-method error from the first three moments.
    """
    # The rounding floor below is that of the gradients' own precision, not of the float64 copy.
    eps = torch.finfo(grads.dtype if grads.dtype.is_floating_point else torch.float64).eps
    grads = grads.detach().to(torch.float64)
    count = grads.shape[0]
    mean = grads.mean(0)
    deviation = grads - mean
    squared = deviation.pow(2)
    correction = count / (count - 1)
    variance = squared.mean(0) * correction
    variance_se = squared.std(0) / math.sqrt(count)
    mean_se = (variance / count).sqrt()
    total = squared.reshape(count, -1).sum(1)  # reshape, not flatten(1): scalar parameters too
    total_variance = total.mean() * correction
    total_variance_se = total.std() / math.sqrt(count)

    tiny = torch.finfo(torch.float64).tiny
    safe_var = variance.clamp_min(tiny)
    snr = mean.abs() / safe_var.sqrt()
    third = deviation.pow(3).mean(0)
    snr_var = (1.0 / count + mean.pow(2) * variance_se.pow(2) / (4 * safe_var.pow(3))
               - mean * third / (count * safe_var.pow(2)))
    snr_se = snr_var.clamp_min(0).sqrt()

    stats = ParameterStatistics(count, mean, mean_se, variance, variance_se, snr, snr_se,
                                total_variance, total_variance_se)
    if exact is not None:
        exact = torch.as_tensor(exact, dtype=torch.float64, device=grads.device)
        stats.bias = mean - exact
        stats.bias_se = mean_se
        # A deterministic gradient has se = 0: count a bias within rounding error as zero.
        rounding = 64 * eps * (exact.abs() + mean.abs()) + tiny
        stats.z = stats.bias / torch.maximum(mean_se, rounding)
    return stats


def group_summary(grads: Mapping[str, torch.Tensor]) -> dict:
    """Total variance and mean SNR of one group of parameters, each with its standard error.

    ``grads`` maps names to replicate gradients (leading dimension R), e.g. the encoder's
    (:attr:`ReplicateGradients.lambda_`); they are flattened into one vector per replicate.
    """
    flat = torch.cat([g.reshape(g.shape[0], -1) for g in grads.values()], -1)
    stats = gradient_statistics(flat)
    # A parameter with an exactly zero gradient from every replicate (the weights of an
    # always-blank MNIST pixel) carries no signal and no noise: the SNR averages over the
    # parameters that vary.
    varying = stats.variance > 0
    count = int(varying.sum().item())
    snr = stats.snr[varying]
    snr_se = stats.snr_se[varying]
    return {
        "total_variance": stats.total_variance.item(),
        "total_variance_se": stats.total_variance_se.item(),
        "mean_snr": snr.mean().item() if count else float("nan"),
        "mean_snr_se": (snr_se.pow(2).sum().sqrt() / count).item() if count else float("nan"),
        "squared_norm_of_mean": stats.mean.pow(2).sum().item(),
        "num_parameters": flat.shape[1],
        "num_varying": count,
    }


def _check_exact(group: str, exact, params: Mapping) -> None:
    """An exact gradient for each name given, of a shape that fits: a misspelt name was ignored
    (no bias reported, no error), a wrong shape failed after the whole replication."""
    if exact is None:
        return
    if not isinstance(exact, Mapping):
        raise EstimatorError(f"{group} must be a dict of name -> exact gradient, got "
                             f"{type(exact).__name__}")
    for name, value in exact.items():
        if name not in params:
            known = ", ".join(map(repr, params)) or "none"
            raise EstimatorError(f"{group} names {name!r}, which is not a parameter of the "
                                 f"group (its names: {known})")
        try:
            if isinstance(value, (bool, str, bytes)):
                raise TypeError
            shape = torch.as_tensor(value, dtype=torch.float64).shape
        except (TypeError, ValueError, RuntimeError):
            raise EstimatorError(f"{group}[{name!r}] must be a tensor or a number, got "
                                 f"{type(value).__name__}") from None
        target = params[name].shape
        try:
            fits = torch.broadcast_shapes(shape, target) == target
        except RuntimeError:
            fits = False
        if not fits:
            raise EstimatorError(f"{group}[{name!r}] has shape {tuple(shape)}, which does not "
                                 f"broadcast to the parameter's shape {tuple(target)}")


def diagnose(
    estimator: Callable,
    build: Callable,
    lambda_params: Mapping[str, torch.Tensor],
    theta_params: Mapping[str, torch.Tensor] | None = None,
    *,
    num_replicates: int,
    num_samples: int,
    exact_lambda: Mapping[str, torch.Tensor] | None = None,
    exact_theta: Mapping[str, torch.Tensor] | None = None,
    **options,
) -> dict[str, dict[str, ParameterStatistics]]:
    """Replicate gradients and summarise them: ``{"lambda": {name: stats}, "theta": {...}}``.

    ``exact_lambda`` and ``exact_theta`` map parameter names to their exact gradients (a tensor
    that broadcasts to the parameter's shape, or a number), for the bias and its z-score."""
    _check_request(lambda_params, theta_params, num_replicates, num_samples)
    for group, exact, params in (("exact_lambda", exact_lambda, lambda_params),
                                 ("exact_theta", exact_theta, theta_params or {})):
        _check_exact(group, exact, params)
    grads = replicate_gradients(estimator, build, lambda_params, theta_params,
                                num_replicates=num_replicates, num_samples=num_samples, **options)
    exact_lambda, exact_theta = exact_lambda or {}, exact_theta or {}
    return {
        "lambda": {n: gradient_statistics(g, exact_lambda.get(n)) for n, g in grads.lambda_.items()},
        "theta": {n: gradient_statistics(g, exact_theta.get(n)) for n, g in grads.theta.items()},
    }
