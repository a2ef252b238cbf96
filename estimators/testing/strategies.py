"""Hypothesis strategies that draw reference problems, each with its exact gradients::

    from hypothesis import given, settings
    from estimators.testing import check_unbiased
    from estimators.testing.strategies import problems

    EXAMPLES = 10

    @settings(max_examples=EXAMPLES, deadline=None)
    @given(problem=problems(kind="continuous"))
    def test_my_estimator_is_unbiased(problem):
        report = check_unbiased(my_estimator, problem, seed=0,
                                false_positive_rate=1e-3 / EXAMPLES)
        assert report.passed, str(report)

Hypothesis draws the parameters of q (lambda) and of the model (theta), and the dimension; the
Monte Carlo seed is the check's own, fixed by the caller: hypothesis never chooses it (a search
over seeds would find the one in a thousand that rejects a correct estimator). Each example is a
check at its own false-positive rate, so split the rate over ``max_examples`` as above.

The problems drawn, by ``kind``:

* "continuous": the conjugate Gaussian of :func:`~estimators.testing.conjugate_gaussian` in
  ``dims`` (default 1 to 5) dimensions, or a two-component Gaussian mixture as log p in 1-D
  (:func:`~estimators.testing.gaussian_mixture_target`);
* "bernoulli": one to three bits under :class:`~estimators.testing.problems.BernoulliBitsModel`;
* "categorical": two latents of two or three classes (:func:`~estimators.testing.categorical_latents`), with a drawn
  interaction;
* "mixture": a mixture of two 1-D Gaussians as q against a bimodal log p
  (:func:`~estimators.testing.mixture_choice`).

The parameters stay in ranges where every registry estimator has a moderate variance (q's
scales between e^-1 and e^0.3 of the unit, means within a few units of the model's mass).
"""

from __future__ import annotations

from hypothesis import strategies as st

from ..base import EstimatorError
from .problems import (KINDS, bernoulli_bits, categorical_latents, conjugate_gaussian,
                       gaussian_mixture_target, mixture_choice)

__all__ = ["problems"]


def _numbers(low: float, high: float, count: int | None = None):
    number = st.floats(low, high, allow_nan=False, allow_infinity=False, width=64)
    return number if count is None else st.lists(number, min_size=count, max_size=count)


def _grid(rows: int, columns: int, low: float, high: float):
    return st.lists(_numbers(low, high, columns), min_size=rows, max_size=rows)


@st.composite
def _conjugate(draw, dims):
    dim = draw(st.sampled_from(dims))
    return conjugate_gaussian(
        dim, x=draw(_numbers(-2.0, 2.0, dim)), prior_loc=draw(_numbers(-1.0, 1.0, dim)),
        log_noise_scale=draw(_numbers(-0.7, 0.5)), prior_scale=draw(_numbers(0.5, 2.0)),
        loc=draw(_numbers(-1.5, 1.5, dim)), log_scale=draw(_numbers(-1.0, 0.3, dim)),
        name=f"conjugate_gaussian_{dim}d (drawn)")


@st.composite
def _mixture_target(draw):
    return gaussian_mixture_target(
        1, logits=draw(_numbers(-1.0, 1.0, 2)), locs=draw(_grid(2, 1, -2.0, 2.0)),
        loc=draw(_numbers(-1.0, 1.0, 1)), log_scale=draw(_numbers(-0.7, 0.3, 1)),
        name="gaussian_mixture_1d (drawn)")


@st.composite
def _bernoulli(draw):
    bits = draw(st.integers(1, 3))
    return bernoulli_bits(logits=draw(_numbers(-2.0, 2.0, bits)),
                          weights=draw(_numbers(-1.5, 1.5, bits)),
                          name=f"bernoulli_bits_{bits} (drawn)")


@st.composite
def _categorical(draw):
    classes = draw(st.integers(2, 3))
    return categorical_latents(logits=draw(_grid(2, classes, -1.5, 1.5)),
                               table=draw(_grid(2, classes, -2.0, 2.0)),
                               interaction=draw(_grid(classes, classes, -1.0, 1.0)),
                               name=f"categorical_latents_2x{classes} (drawn)")


@st.composite
def _mixture(draw):
    return mixture_choice(logits=draw(_numbers(-1.0, 1.0, 2)), locs=draw(_grid(2, 1, -1.5, 1.5)),
                          log_scales=draw(_grid(2, 1, -0.8, 0.0)),
                          target_logits=draw(_numbers(-1.0, 1.0, 2)),
                          target_locs=draw(_grid(2, 1, -1.5, 1.5)),
                          name="mixture_choice (drawn)")


def problems(kind: str | None = "continuous", *, dims=range(1, 6)) -> st.SearchStrategy:
    """A strategy for :class:`~estimators.testing.ReferenceProblem` instances of ``kind``
    ("continuous", "bernoulli", "categorical", "mixture", or None for any), the conjugate
    Gaussian's dimension drawn from ``dims``. Exact gradients are computed on first use."""
    dims = tuple(dims)
    if not dims or any(not isinstance(d, int) or d < 1 for d in dims):
        raise EstimatorError(f"problems: dims must be positive ints, got {dims!r}")
    by_kind = {
        "continuous": st.one_of(_conjugate(dims), _mixture_target()),
        "bernoulli": _bernoulli(),
        "categorical": _categorical(),
        "mixture": _mixture(),
    }
    if kind is None:
        return st.one_of(*by_kind.values())
    if kind not in by_kind:
        raise EstimatorError(f"problems: kind must be one of {', '.join(KINDS)} or None, got "
                             f"{kind!r}")
    return by_kind[kind]
