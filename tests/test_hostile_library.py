"""Misuse of the library (estimators/), as a careless or hostile user would try it: each case is
refused before the work starts, in one line that names the argument and what to do; and every
registry entry runs on every kind of q it declares.

No statistical checks here: every number compared is exact (to rounding) by construction.
"""

import importlib
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


# ------------------------------------------------------------------------------------------------
# Every registry entry on every kind of q it declares (Estimator.q_kinds)
# ------------------------------------------------------------------------------------------------
#
# The model is q itself times e^c: log p(x, z) = c + log q_theta(z), theta a copy of q's
# parameters (its continuous extension at relaxed z, so that the relaxations see the same
# function). Then log p(x, z) - log q(z) = c at every z, relaxed or not: every estimate of the
# ELBO or of the K-sample bound is c exactly, and d estimate / dc = 1 exactly, whatever the draw.
# A wrong scale, a lost theta term or a misread event would show to rounding.

BATCH = 2


def _relaxable(kind, logits):
    """log q_theta at (relaxed) values: Bernoulli's y . l - softplus(l) and the categorical's
    sum_c y_c log pi_c, summed over the event."""
    if kind == "bernoulli":
        return lambda z: (z * logits - nn.functional.softplus(logits)).sum(-1)
    log_pi = torch.log_softmax(logits, -1)
    return lambda z: (z * log_pi).sum(tuple(range(-(logits.dim() - 1), 0)))


class _PosteriorTimesConstant:
    def __init__(self, c, log_q):
        self.c, self.log_q = c, log_q

    def log_joint(self, z):
        return self.c + self.log_q(z)

    # The factorised form, for the analytic KL: prior = q_theta, likelihood e^c.
    def log_likelihood(self, z):
        return self.c.expand(z.shape[:-1])


def _case(form, lam, theta):
    """(q, model) of one form of q: q from lam, the model from theta (a detached copy)."""
    c = theta["c"]
    if form == "gaussian":
        q = Independent(Normal(lam["loc"], lam["log_scale"].exp()), 1)
        prior = Independent(Normal(theta["loc"], theta["log_scale"].exp()), 1)
        model = _PosteriorTimesConstant(c, prior.log_prob)
        model.prior = prior
        return q, model
    if form == "bernoulli":
        return (Independent(Bernoulli(logits=lam["logits"]), 1),
                _PosteriorTimesConstant(c, _relaxable("bernoulli", theta["logits"])))
    if form == "one-hot":
        return (OneHotCategorical(logits=lam["logits"]),
                _PosteriorTimesConstant(c, _relaxable("categorical", theta["logits"])))
    if form == "one-hot latents":
        return (Independent(OneHotCategorical(logits=lam["logits"]), 1),
                _PosteriorTimesConstant(c, _relaxable("categorical", theta["logits"])))
    if form == "index latents":
        return (Independent(Categorical(logits=lam["logits"]), 1),
                _PosteriorTimesConstant(c, Independent(Categorical(logits=theta["logits"]),
                                                       1).log_prob))
    assert form == "mixture"

    def mixture(params):
        return MixtureSameFamily(Categorical(logits=params["logits"]), Independent(
            Normal(params["locs"], params["log_scales"].exp()), 1))

    return mixture(lam), _PosteriorTimesConstant(c, mixture(theta).log_prob)


GENERATOR = torch.Generator().manual_seed(0)


def _values(*shape):
    return torch.randn(*shape, generator=GENERATOR, dtype=torch.float64)


PARAMETERS = {  # batch (2,); the latent dimensions small
    "gaussian": {"loc": _values(BATCH, 3), "log_scale": 0.3 * _values(BATCH, 3)},
    "bernoulli": {"logits": _values(BATCH, 3)},
    "one-hot": {"logits": _values(BATCH, 4)},
    "one-hot latents": {"logits": _values(BATCH, 2, 3)},
    "index latents": {"logits": _values(BATCH, 2, 3)},
    "mixture": {"logits": _values(BATCH, 3), "locs": _values(BATCH, 3, 2),
                "log_scales": 0.3 * _values(BATCH, 3, 2)},
}
FORMS = {"continuous": ["gaussian"], "bernoulli": ["bernoulli"],
         "categorical": ["one-hot", "one-hot latents", "index latents"], "mixture": ["mixture"]}


def _cases():
    for name, entry in ESTIMATORS.items():
        for kind in entry.q_kinds:
            for form in FORMS[kind]:
                if form == "index latents" and entry.needs_logits:
                    continue  # a relaxation needs one-hot values: refused, tested elsewhere
                yield name, form


def test_every_declared_kind_has_a_case():
    covered = {(n, k) for n, form in _cases() for k, forms in FORMS.items() if form in forms}
    assert covered == {(n, k) for n, e in ESTIMATORS.items() for k in e.q_kinds}


@pytest.mark.parametrize("name, form", list(_cases()))
def test_every_entry_runs_on_every_kind_of_q_it_declares(name, form):
    # Issue: the score functions and vimco refused Independent(OneHotCategorical(logits (D, C)),
    # 1), a q their entries declared, saying "q must have event shape (D,)".
    entry = ESTIMATORS[name]
    lam = {n: v.clone().requires_grad_(True) for n, v in PARAMETERS[form].items()}
    theta = {n: v.clone().requires_grad_(True) for n, v in PARAMETERS[form].items()}
    theta["c"] = torch.tensor(-1.7, requires_grad=True)
    q, model = _case(form, lam, theta)
    torch.manual_seed(1)
    estimate = entry(model, q, max(2, entry.min_samples))
    assert estimate.elbo.shape == estimate.surrogate.shape == q.batch_shape == (BATCH,)
    assert estimate.elbo.dtype == estimate.surrogate.dtype == torch.float64
    assert torch.equal(estimate.surrogate.detach(), estimate.elbo.detach())
    # The value: c, for the ELBO and the K-sample bound alike.
    torch.testing.assert_close(estimate.elbo.detach(), torch.full((BATCH,), -1.7),
                               rtol=1e-12, atol=1e-12)
    leaves = [*lam.values(), *theta.values()]
    grads = torch.autograd.grad(estimate.surrogate.sum(), leaves, allow_unused=True)
    by_name = dict(zip([f"lambda {n}" for n in lam] + [f"theta {n}" for n in theta], grads))
    # The gradient: d/dc of each batch entry's estimate is 1, so of their sum BATCH.
    torch.testing.assert_close(by_name.pop("theta c"), torch.tensor(float(BATCH)), rtol=1e-12,
                               atol=1e-12)
    # lambda's: finite, of its parameter's shape. (Its value is not fixed: most estimators are
    # exactly zero here, f being constant, but the plain score function is c grad log q.)
    for label, grad in by_name.items():
        assert grad is None or (grad.shape == PARAMETERS[form][label.split(" ", 1)[1]].shape
                                and torch.isfinite(grad).all()), label


def test_the_parameters_inside_a_one_hot_categorical_and_a_mixture_are_q_s_parameters():
    # They live under private names (OneHotCategorical._categorical, MixtureSameFamily.
    # _mixture_distribution, ._component_distribution): score_function_optimal found none there
    # and fell back to leave-one-out, and the NaN scan passed NaN logits.
    from estimators.base import distribution_parameters

    logits = torch.zeros(2, 3, requires_grad=True)
    assert [p.shape for p in distribution_parameters(OneHotCategorical(logits=logits))] == [
        (2, 3)]
    assert [p.shape for p in distribution_parameters(
        Independent(OneHotCategorical(logits=logits), 1))] == [(2, 3)]
    locs = torch.zeros(3, 2, requires_grad=True)
    mixture = MixtureSameFamily(Categorical(logits=logits[0]),
                                Independent(Normal(locs, torch.ones(3, 2)), 1))
    assert [p.shape for p in distribution_parameters(mixture)] == [(3,), (3, 2)]
    nan = MixtureSameFamily(Categorical(logits=torch.zeros(3)), Independent(Normal(
        torch.tensor([[0.0, 1.0], [math.nan, 0.0], [1.0, 1.0]]), torch.ones(3, 2),
        validate_args=False), 1), validate_args=False)
    _refused(lambda: _call("score_function", QUADRATIC, nan), "score_function: q's parameter "
             "'_component_distribution.base_dist.loc' contains NaN")


# ------------------------------------------------------------------------------------------------
# Baselines
# ------------------------------------------------------------------------------------------------


def test_a_baseline_that_broadcasts_with_the_batch_but_not_to_it_is_refused():
    # A (3, 1) baseline against a batch (4,) made a (3, 4) estimate.
    q = _gaussian(batch=(4,))
    _refused(lambda: _call("score_function", QUADRATIC, q, baseline=torch.zeros(3, 1)),
             "score_function: baseline of shape (3, 1) does not broadcast to q.batch_shape (4,)")
    for fits in (torch.zeros(()), torch.zeros(1), torch.zeros(4)):
        assert _call("score_function", QUADRATIC, q, baseline=fits).elbo.shape == (4,)


def test_a_nan_baseline_is_named_while_validation_is_on():
    q = _gaussian(batch=(4,))
    for value in (math.nan, math.inf):
        _refused(lambda: _call("score_function", QUADRATIC, q, baseline=torch.full((4,), value)),
                 "score_function: baseline contains NaN or an infinite value")
    set_validation(False)
    try:
        _call("score_function", QUADRATIC, q, baseline=torch.full((4,), math.nan))
    finally:
        set_validation(True)


def test_an_ema_baseline_kept_for_one_batch_is_refused_on_another():
    from estimators import EmaBaseline

    state = EmaBaseline(batch_dims=1)  # one average per entry of the batch's first dimension
    _call("score_function_ema", QUADRATIC, _gaussian(batch=(4,)), state=state)
    _refused(lambda: _call("score_function_ema", QUADRATIC, _gaussian(batch=(3,)), state=state),
             "score_function_ema: the EmaBaseline (batch_dims=1) holds averages of shape (4,) "
             "from a batch that was not q.batch_shape (3,)", "batch_dims=0")
    shared = EmaBaseline()  # one average for every batch: any batch may follow
    _call("score_function", QUADRATIC, _gaussian(batch=(4,)), baseline=shared)
    _call("score_function", QUADRATIC, _gaussian(batch=(3,)), baseline=shared)
    runs = EmaBaseline(batch_dims=1)  # (R, B) with B changing: the (R, 1) averages still fit
    _call("score_function", QUADRATIC, _gaussian(batch=(2, 5)), baseline=runs)
    _call("score_function", QUADRATIC, _gaussian(batch=(2, 3)), baseline=runs)


# ------------------------------------------------------------------------------------------------
# The options of the estimators of discrete latents
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [-0.5, 0, 0.0, math.inf, math.nan, "a", None, True])
@pytest.mark.parametrize("name", ["gumbel_softmax", "straight_through", "rebar"])
def test_a_temperature_that_is_not_a_positive_finite_number_is_refused(name, temperature):
    # -0.5 flipped the sign of the gradient silently; 0 and NaN gave NaN blamed on the model.
    set_validation(False)  # a Python number: checked whatever the switch
    try:
        _refused(lambda: _call(name, QUADRATIC, _bernoulli(), temperature=temperature),
                 f"{name}: temperature must be a finite number > 0, got {temperature!r}")
    finally:
        set_validation(True)


def test_a_tensor_temperature_is_scanned_while_validation_is_on():
    temperature = torch.tensor([0.5, -0.5])
    _refused(lambda: _call("gumbel_softmax", QUADRATIC, _bernoulli(), temperature=temperature),
             "gumbel_softmax: temperature must be a finite number > 0, got -0.5")
    _call("gumbel_softmax", QUADRATIC, _bernoulli(), temperature=torch.tensor([[0.5], [1.0]]))


@pytest.mark.parametrize("eta", [math.nan, math.inf, -math.inf, "a"])
def test_an_eta_that_is_not_a_finite_number_is_refused(eta):
    _refused(lambda: _call("rebar", QUADRATIC, _bernoulli(), eta=eta),
             f"rebar: eta must be a finite number, got {eta!r}")
    _call("rebar", QUADRATIC, _bernoulli(), eta=-0.5)  # any finite eta keeps rebar unbiased


def test_relax_refuses_a_state_whose_eta_or_temperature_is_not_finite():
    from estimators import RelaxControlVariate

    for what, value in (("temperature", math.inf), ("temperature", math.nan),
                        ("temperature", 0.0), ("temperature", "a"), ("eta", math.nan),
                        ("eta", math.inf)):
        _refused(lambda: RelaxControlVariate(**{what: value}),
                 f"RelaxControlVariate: {what} must be a finite number", error=ValueError)
    state = RelaxControlVariate()
    with torch.no_grad():
        state.eta.fill_(math.nan)  # where a training step too far leaves it
    _refused(lambda: _call("relax", QUADRATIC, _bernoulli(), state=state),
             "relax: state.eta must be a finite number, got nan")
    state = RelaxControlVariate()
    with torch.no_grad():
        state.log_temperature.fill_(1e4)
    _refused(lambda: _call("relax", QUADRATIC, _bernoulli(), state=state),
             "relax: state's temperature (exp of state.log_temperature) must be a finite number "
             "> 0, got inf")


@pytest.mark.parametrize("name", ["gumbel_softmax", "rebar", "relax", "arm"])
@pytest.mark.parametrize("value", [1.5, -0.25, math.nan])
def test_a_uniform_option_that_draws_outside_the_unit_interval_is_refused(name, value):
    # Values above 1 were clamped silently; NaN was blamed on the model.
    def uniform(shape):
        return torch.full(shape, value)

    _refused(lambda: _call(name, QUADRATIC, _bernoulli(), uniform=uniform),
             f"{name}: uniform(", "returned values outside [0, 1] or NaN",
             "it must draw uniforms in (0, 1)")
    _call(name, QUADRATIC, _bernoulli(), uniform=lambda shape: torch.zeros(shape))  # [0, 1): ok
    _refused(lambda: _call(name, QUADRATIC, _bernoulli(), uniform=0.5),
             f"{name}: uniform must be a function shape -> tensor of uniforms, got float")


def test_relax_refuses_a_network_of_another_input_width_naming_the_width_it_needs():
    from estimators import RelaxControlVariate

    q = _bernoulli(3)
    _refused(lambda: _call("relax", QUADRATIC, q, state=RelaxControlVariate.with_network(5)),
             "relax: state's network takes 5 inputs, but its inputs here have width 3 (q's event "
             "(3,) flattened)", "RelaxControlVariate.with_network(3)")
    context = torch.zeros(4)
    _refused(lambda: _call("relax", QUADRATIC, q, state=RelaxControlVariate.with_network(3),
                           context=context),
             "width 7 (q's event (3,) flattened and the context's 4 columns)")

    class Custom(nn.Module):  # no first Linear to read the width from: found when it fails
        def __init__(self, inputs, outputs=1):
            super().__init__()
            self.inner = nn.Linear(inputs, outputs)

        def forward(self, x):
            return self.inner(x)

    _refused(lambda: _call("relax", QUADRATIC, q, state=RelaxControlVariate(Custom(5))),
             "relax: state's network failed (mat1 and mat2 shapes cannot be multiplied",
             "with_network(3)")
    _refused(lambda: _call("relax", QUADRATIC, q, state=RelaxControlVariate(Custom(3, 2))),
             "relax: state's network must map (..., 3) to (..., 1)")
    _refused(lambda: _call("relax", QUADRATIC, q,
                           state=RelaxControlVariate.with_network(3).to(torch.float32)),
             "relax: state's network cannot take q's torch.float64 values",
             "state.to(torch.float64)")


@pytest.mark.parametrize("max_outcomes, shown", [
    ("x", "'x'"), (2.5, "2.5"), (0, "0"), (True, "True"), (10**400, "10000000000000000000...")])
def test_max_outcomes_that_is_not_a_usable_int_is_refused(max_outcomes, shown):
    _refused(lambda: _call("enumeration", QUADRATIC, _bernoulli(), max_outcomes=max_outcomes),
             "enumeration: max_outcomes must be an int in 1..2147483647", f"got {shown}")


def test_enumeration_of_far_too_many_outcomes_says_how_many():
    # 2^2000 overflowed the float that formatted the message; 2^70 with max_outcomes 10^30
    # overflowed torch's element count.
    _refused(lambda: _call("enumeration", QUADRATIC, _bernoulli(2000)),
             "enumeration: q has 2^2000 = about 1e602 outcomes per batch entry, more than "
             "max_outcomes=4096")
    _refused(lambda: _call("enumeration", QUADRATIC, _bernoulli(70), max_outcomes=2**31 - 1),
             "q has 2^70 = 1.18e+21 outcomes")


# ------------------------------------------------------------------------------------------------
# measure_valued
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["measure_valued", "measure_valued_coupled"])
def test_measure_valued_takes_a_half_precision_q(name, dtype):
    # torch has no half-precision Gamma sampler on the CPU: "gamma_cpu not implemented for
    # 'Half'" came from inside the Maxwell draw. The variates are drawn in float32 and rounded.
    q = _gaussian(2, dtype)
    torch.manual_seed(0)
    estimate = _call(name, QUADRATIC, q)
    (grad,) = torch.autograd.grad(estimate.surrogate, q.base_dist.loc)
    assert estimate.elbo.dtype == grad.dtype == dtype
    assert torch.isfinite(estimate.elbo) and torch.isfinite(grad).all()
    # The draws are float32's, rounded: the same seed, the same points to half precision.
    module = importlib.import_module("estimators.measure_valued")  # the package re-exports
    # a function of that name
    torch.manual_seed(0)
    narrow = module.standard_weak_derivative_pairs((3, 2), dtype)
    torch.manual_seed(0)
    wide = module.standard_weak_derivative_pairs((3, 2), torch.float32)
    assert torch.equal(narrow, wide.to(dtype))


# ------------------------------------------------------------------------------------------------
# diagnose and replicate_gradients
# ------------------------------------------------------------------------------------------------


def _conjugate_build(lam, theta):
    from estimators.targets import ConjugateGaussian

    prior_loc = theta.get("prior_loc", theta.get("loc"))
    return (ConjugateGaussian(torch.tensor([0.5, -1.0]), prior_loc),
            Independent(Normal(lam["loc"], lam["log_scale"].exp()), 1))


LAMBDA = {"loc": torch.zeros(2), "log_scale": torch.zeros(2)}


def _diagnose(lambda_params=LAMBDA, theta_params=None, **options):
    from estimators.diagnostics import diagnose

    options = {"num_replicates": 4, "num_samples": 1, **options}
    return diagnose(ESTIMATORS["score_function"], _conjugate_build, lambda_params,
                    {"prior_loc": torch.zeros(2)} if theta_params is None else theta_params,
                    **options)


def test_a_name_in_both_lambda_and_theta_is_refused():
    # The README's example with theta {"loc": ...}: lambda's loc came out as theta's gradient.
    from estimators.diagnostics import replicate_gradients

    _refused(lambda: _diagnose(theta_params={"loc": torch.zeros(2)}),
             "lambda_params and theta_params both name 'loc'; give each parameter one name")
    _refused(lambda: replicate_gradients(ESTIMATORS["pathwise"], _conjugate_build, LAMBDA,
                                         {"loc": torch.zeros(2)}, num_replicates=4,
                                         num_samples=1), "both name 'loc'")


@pytest.mark.parametrize("options, message", [
    ({"num_replicates": 2.5}, "num_replicates must be an int >= 2, got 2.5"),
    ({"num_replicates": "10"}, "num_replicates must be an int >= 2, got '10'"),
    ({"num_replicates": True}, "num_replicates must be an int >= 2, got True"),
    ({"num_replicates": 1}, "num_replicates must be >= 2 to estimate a variance, got 1"),
    ({"num_samples": "1"}, "num_samples must be an int >= 1, got '1'"),
    ({"chunk": "2"}, "chunk must be an int (or None), got '2'"),
    ({"lambda_params": {"loc": "a", "log_scale": torch.zeros(2)}},
     "lambda_params['loc'] must be a floating tensor (a parameter to differentiate), got str"),
    ({"lambda_params": {"loc": [0.0, 0.0], "log_scale": torch.zeros(2)}},
     "lambda_params['loc'] must be a floating tensor"),
    ({"lambda_params": {"loc": torch.zeros(2, dtype=torch.long), "log_scale": torch.zeros(2)}},
     "lambda_params['loc'] must be a floating tensor (a parameter to differentiate), got dtype "
     "torch.int64"),
    ({"lambda_params": [torch.zeros(2)]}, "lambda_params must be a dict of name -> tensor, got "
                                          "list"),
    ({"exact_lambda": {"loc": torch.zeros(3)}},
     "exact_lambda['loc'] has shape (3,), which does not broadcast to the parameter's shape (2,)"),
    ({"exact_lambda": {"lco": torch.zeros(2)}},
     "exact_lambda names 'lco', which is not a parameter of the group (its names: 'loc', "
     "'log_scale')"),
    ({"exact_theta": {"prior": torch.zeros(2)}}, "exact_theta names 'prior'"),
    ({"exact_lambda": {"loc": "x"}}, "exact_lambda['loc'] must be a tensor or a number, got str"),
    ({"exact_lambda": [0.0]}, "exact_lambda must be a dict of name -> exact gradient, got list"),
])
def test_diagnose_refuses_what_it_cannot_use_before_replicating(options, message, monkeypatch):
    import estimators.diagnostics as diagnostics

    passes = []
    real = diagnostics._one_pass
    monkeypatch.setattr(diagnostics, "_one_pass", lambda *a: passes.append(1) or real(*a))
    _refused(lambda: _diagnose(**options), message, error=ValueError)
    assert not passes  # before any replicate was drawn


def test_diagnose_takes_exact_gradients_that_broadcast():
    report = _diagnose(exact_lambda={"loc": 0.0, "log_scale": torch.zeros(1)},
                       exact_theta={"prior_loc": [0.0, 0.0]})
    assert report["lambda"]["loc"].z.shape == report["theta"]["prior_loc"].z.shape == (2,)


# ------------------------------------------------------------------------------------------------
# The families of seed section 6
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loc, scale_tril, message", [
    (torch.zeros(2), torch.tensor([[math.nan, 0.0], [0.0, 1.0]]),
     "scale_tril contains NaN or an infinite value"),  # was "must be lower triangular"
    (torch.zeros(2), torch.tensor([[1.0, 0.0], [math.inf, 1.0]]),
     "scale_tril contains NaN or an infinite value"),
    (torch.tensor([math.nan, 0.0]), torch.eye(2), "loc contains NaN or an infinite value"),
    (torch.zeros(3), torch.eye(2), "loc of shape (3,) and scale_tril of shape (2, 2) disagree "
                                   "on D"),  # was accepted, to fail when sampled
    (torch.zeros(()), torch.eye(2), "loc of shape () and scale_tril of shape (2, 2)"),
    (torch.zeros(3, 2), torch.eye(2).expand(4, 2, 2), "the batch shapes of loc (3,) and "
                                                      "scale_tril (4,) do not broadcast"),
])
def test_full_covariance_gaussian_names_what_is_wrong_with_its_arguments(loc, scale_tril,
                                                                          message):
    from estimators import full_covariance_gaussian

    _refused(lambda: full_covariance_gaussian(loc, scale_tril),
             f"full_covariance_gaussian: {message}", error=ValueError)


def _exponential_quantile(u, rate):
    return -torch.log1p(-u) / rate


@pytest.mark.parametrize("arguments, message", [
    ((_exponential_quantile, [1.0]), "params must be a dict of name -> tensor (the keyword "
                                     "arguments of quantile), got list"),
    ((_exponential_quantile, [("rate", 1.0)]), "params must be a dict of name -> tensor"),
    ((_exponential_quantile, {"rate": "a"}), "params['rate'] must be a tensor or a number, got "
                                             "str"),
    ((_exponential_quantile, {1: 1.0}), "parameter names must be identifiers"),
    ((3, {"rate": 1.0}), "quantile must be a function Q(u, **params), got int"),
])
def test_inverse_cdf_names_what_is_wrong_with_its_arguments(arguments, message):
    from estimators import InverseCDF

    _refused(lambda: InverseCDF(*arguments), f"InverseCDF: {message}", error=ValueError)
    InverseCDF(_exponential_quantile, {"rate": [1.0, 2.0]})  # what torch.as_tensor takes
