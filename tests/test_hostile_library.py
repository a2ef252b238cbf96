"""Misuse of the library (estimators/), as a careless or hostile user would try it: each case is
refused before the work starts, in one line that names the argument and what to do; and every
registry entry runs on every kind of q it declares.

No statistical checks here: every number compared is exact (to rounding) by construction.
"""

import math

import pytest
import torch
from torch import nn
from torch.distributions import (Bernoulli, Categorical, Independent, MixtureSameFamily, Normal,
                                  OneHotCategorical)

from estimators import ESTIMATORS, EstimatorError, set_validation
from estimators.base import validation_enabled


def _one_line(info) -> str:
    text = str(info.value)
    assert "\n" not in text, text
    return text


def _refused(call, *fragments, error=EstimatorError) -> str:
    with pytest.raises(error) as info:
        call()
    text = _one_line(info)
    for fragment in fragments:
        assert fragment in text, text
    return text


class _Returns:
    """A model whose log_joint is ``value(z)``."""

    def __init__(self, value):
        self.value = value

    def log_joint(self, z):
        return self.value(z)


def _gaussian(dim=2, dtype=torch.float64, batch=()):
    loc = torch.zeros(*batch, dim, dtype=dtype, requires_grad=True)
    return Independent(Normal(loc, torch.ones(*batch, dim, dtype=dtype)), 1)


def _bernoulli(dim=3, batch=()):
    return Independent(Bernoulli(logits=torch.zeros(*batch, dim, requires_grad=True)), 1)


QUADRATIC = _Returns(lambda z: -((z - 0.3) ** 2).sum(-1))
CONTINUOUS = [n for n, e in ESTIMATORS.items() if "continuous" in e.q_kinds]
BERNOULLI = [n for n, e in ESTIMATORS.items() if "bernoulli" in e.q_kinds]


def _call(name, model, q, **options):
    return ESTIMATORS[name](model, q, max(2, ESTIMATORS[name].min_samples), **options)


# ------------------------------------------------------------------------------------------------
# What the model returns
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, found", [(math.inf, "+inf"), (-math.inf, "-inf")])
@pytest.mark.parametrize("name", ["pathwise", "score_function", "iwae", "measure_valued"])
def test_an_infinite_log_joint_is_named_not_passed_on_as_an_infinite_or_nan_gradient(name, value,
                                                                                     found):
    model = _Returns(lambda z: torch.full(z.shape[:-1], value))
    _refused(lambda: _call(name, model, _gaussian()), f"{name}: model.log_joint returned {found}",
             "set_validation(False) skips this scan")
    set_validation(False)  # a scan of values: it follows the switch
    try:
        _call(name, model, _gaussian())
    finally:
        set_validation(True)


@pytest.mark.parametrize("name", [n for n in ESTIMATORS if n != "relax"])
def test_an_integer_log_joint_is_refused_by_every_estimator_alike(name):
    # Some estimators failed deep in torch (the mean of a Long), others promoted it silently.
    class Model:
        prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)

        def log_joint(self, z):
            return torch.ones(z.shape[:-1], dtype=torch.int64)

        log_likelihood = log_joint

    what = "log_likelihood" if ESTIMATORS[name].needs_factorised else "log_joint"
    q = _gaussian() if name in CONTINUOUS else _bernoulli() if name in BERNOULLI else \
        OneHotCategorical(logits=torch.zeros(3, requires_grad=True))
    set_validation(False)  # a check of the dtype, which costs nothing: on whatever the switch
    try:
        _refused(lambda: _call(name, Model(), q), f"{name}: model.{what} returned a tensor of "
                 "dtype torch.int64; a log density must be floating point")
    finally:
        set_validation(True)


class _Network(nn.Module):
    """log p(x, z) through a linear layer: torch refuses to multiply float32 by float64."""

    def __init__(self, dim):
        super().__init__()
        self.layer = nn.Linear(dim, 1)

    def log_joint(self, z):
        return self.layer(z).squeeze(-1) - z.pow(2).sum(-1)


@pytest.mark.parametrize("model_dtype, q_dtype", [(torch.float32, torch.float64),
                                                  (torch.float64, torch.float32)])
@pytest.mark.parametrize("name", ["pathwise", "score_function", "enumeration"])
def test_a_model_and_a_q_of_different_dtypes_are_named_in_one_line(name, model_dtype, q_dtype):
    model = _Network(3).to(model_dtype)
    if name == "enumeration":
        q = Independent(Bernoulli(logits=torch.zeros(3, dtype=q_dtype)), 1)
    else:
        q = _gaussian(3, q_dtype)
    _refused(lambda: _call(name, model, q),
             f"{name}: model.log_joint cannot take q's {q_dtype} samples with its {model_dtype} "
             "parameters (mat1 and mat2 must have the same dtype",
             "give the model and q one dtype")


def test_an_error_of_the_model_that_is_not_about_dtypes_is_left_as_torch_raised_it():
    model = _Network(5)  # a width that is not q's: the model's own bug, its own traceback
    with pytest.raises(RuntimeError, match="cannot be multiplied"):
        _call("pathwise", model, _gaussian(3))


@pytest.mark.parametrize("name", ["measure_valued", "pathwise", "score_function"])
def test_a_q_without_latent_variables_is_refused(name):
    _refused(lambda: _call(name, QUADRATIC, _gaussian(0)),
             f"{name}: q has no latent variables (event shape (0,))")


def test_enumeration_of_no_latent_variables_is_refused():
    _refused(lambda: _call("enumeration", QUADRATIC, _bernoulli(0)),
             "enumeration: q has no latent variables (event shape (0,))")
