"""The estimators of discrete latents (estimators.discrete) and the discrete study.

Ground truth is exact: the ELBO of a Bernoulli q over 3 latents and of categorical q's is a sum
over all outcomes, written out here with itertools (not with the library's enumeration, which is
itself checked against it), and autograd of that sum gives the exact gradient with respect to q's
logits (lambda) and the model's parameters (theta).

Statistical checks: fixed seeds, each marked ``statistical``; each test spends a
1/STATISTICAL_BUDGET share of the suite's FALSE_POSITIVE_RATE = 1e-3 (conftest), split evenly
(Bonferroni) across its coordinates (by ``z_threshold``, or by ``estimators.testing.
check_unbiased``, which the unbiasedness checks go through): a correct estimator fails one with
probability at most 1e-6. Each check has a deliberately wrong twin that must fail it: REBAR with
z~ = z (a control variate that sees its own sample; the other twins of the unbiasedness checks
are in tests/test_unbiased.py), a relaxation whose temperature is stuck (its bias cannot shrink),
REBAR held to be biased.
"""

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from torch.distributions import (Bernoulli, Categorical, Independent, MixtureSameFamily, Normal,
                                 OneHotCategorical)

from conftest import FALSE_POSITIVE_RATE, STATISTICAL_BUDGET, z_threshold
from estimators import (ESTIMATORS, BernoulliWithNoise, EmaBaseline, EstimatorError,
                        RelaxControlVariate, q_kind, score_function)
from estimators import discrete
from estimators.diagnostics import gradient_statistics, replicate_gradients
from estimators.testing import check_unbiased, enumerated_problem

F64 = torch.float64  # module constants are made at import, before conftest's float64 default
NUM_REPLICATES = 4000

# --------------------------------------------------------------------------------------------
# Toys with exact answers
# --------------------------------------------------------------------------------------------

COUPLING = torch.tensor([[0.0, 0.8, -0.5], [0.8, 0.0, 0.6], [-0.5, 0.6, 0.0]], dtype=F64)
TABLE_COUPLING = torch.tensor([[0.0, 1.0, -0.5, 0.3], [1.0, 0.0, 0.4, -0.8],
                               [-0.5, 0.4, 0.0, 0.6], [0.3, -0.8, 0.6, 0.0]], dtype=F64)


class CubicModel:
    """log p(x, b) = b . w + b' C b - 0.7 sum b^3: any pseudo-Boolean function at binary b, smooth
    (and not quadratic) at relaxed b; theta is w."""

    def __init__(self, weights):
        self.weights = weights

    def log_joint(self, z):
        pairs = (z.unsqueeze(-1) * z.unsqueeze(-2) * COUPLING.to(z.dtype)).sum((-1, -2))
        return (z * self.weights).sum(-1) + pairs - 0.7 * z.pow(3).sum(-1)


class TableModel:
    """log p(x, y) = sum over latents of y . t + y' M y for one-hot y: a table at one-hot y, a
    quadratic on the simplex; theta is the table t. Event (C,) or (D, C)."""

    def __init__(self, table, latents: int = 0):
        self.table, self.latents = table, latents

    def log_joint(self, z):
        table = self.table.unsqueeze(-2) if self.latents else self.table
        values = (z * table).sum(-1) + (z.unsqueeze(-1) * z.unsqueeze(-2)
                                        * TABLE_COUPLING[:z.shape[-1], :z.shape[-1]].to(z.dtype)
                                        ).sum((-1, -2))
        return values.sum(-1) if self.latents else values


# name -> (build(lam, theta) -> (model, q), lambda, theta, outcomes as a list of value tensors)
TOYS = {
    "bernoulli": (lambda lam, theta: (CubicModel(theta["w"]),
                                      Independent(Bernoulli(logits=lam["logits"]), 1)),
                  {"logits": torch.tensor([0.3, -0.8, 1.2], dtype=F64)},
                  {"w": torch.tensor([0.5, -1.0, 0.2], dtype=F64)}),
    "categorical": (lambda lam, theta: (TableModel(theta["t"]),
                                        OneHotCategorical(logits=lam["logits"])),
                    {"logits": torch.tensor([0.3, -0.6, 0.1, 0.5], dtype=F64)},
                    {"t": torch.tensor([-1.0, 0.5, -2.0, 0.3], dtype=F64)}),
    "two-categoricals": (lambda lam, theta: (TableModel(theta["t"], latents=2),
                                             Independent(OneHotCategorical(logits=lam["logits"]), 1)),
                         {"logits": torch.tensor([[0.3, -0.6, 0.1], [-0.4, 0.2, 0.7]], dtype=F64)},
                         {"t": torch.tensor([-1.0, 0.5, -2.0], dtype=F64)}),
}


def outcomes(toy):
    """Every value the toy's q can take, (N, *event)."""
    if toy == "bernoulli":
        return torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=F64)
    if toy == "categorical":
        return torch.eye(4, dtype=F64)
    eye = torch.eye(3, dtype=F64)
    return torch.stack([torch.stack([eye[i], eye[j]]) for i in range(3) for j in range(3)])


def log_q_table(toy, logits, values):
    """log q of each outcome, written out: Bernoulli log-sigmoids, categorical log-softmaxes."""
    if toy == "bernoulli":
        return (values * torch.nn.functional.logsigmoid(logits)
                + (1 - values) * torch.nn.functional.logsigmoid(-logits)).sum(-1)
    terms = values * torch.log_softmax(logits, -1)
    return terms.sum(-1) if toy == "categorical" else terms.sum((-1, -2))


def exact_elbo(toy, lam, theta):
    build, _, _ = TOYS[toy]
    model, _ = build(lam, theta)
    values = outcomes(toy)
    log_q = log_q_table(toy, lam["logits"], values)
    return (log_q.exp() * (model.log_joint(values) - log_q)).sum()


def exact_gradient(toy):
    _, lam, theta = TOYS[toy]
    lam = {n: v.clone().requires_grad_(True) for n, v in lam.items()}
    theta = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    grads = torch.autograd.grad(exact_elbo(toy, lam, theta), [*lam.values(), *theta.values()])
    return dict(zip([*lam, *theta], grads))


def replicate(estimator, toy, num_samples, seed, **options):
    build, lam, theta = TOYS[toy]
    torch.manual_seed(seed)
    grads = replicate_gradients(estimator, build, lam, theta, num_replicates=NUM_REPLICATES,
                                num_samples=num_samples, **options)
    return {**grads.lambda_, **grads.theta}


def options_for(name, toy, num_samples, seed):
    """score_function_ema with a state carried from an earlier step; relax with a state."""
    build, lam, theta = TOYS[toy]
    if name == "score_function_ema":
        state = EmaBaseline()
        model, q = build(lam, theta)
        torch.manual_seed(seed)
        ESTIMATORS[name](model, q, num_samples, state=state)
        return {"state": state}
    if name == "relax":  # a network of its own (seeded), untrained: unbiased all the same
        _, q = build(lam, theta)
        return {"state": RelaxControlVariate.with_network(q.event_shape.numel(), hidden=16,
                                                          seed=seed)}
    return {}


def unbiased_cases(kind):
    return [(n, max(2, e.min_samples)) for n, e in ESTIMATORS.items()
            if kind in e.q_kinds and e.unbiased and e.objective == "elbo" and n != "enumeration"]


# --------------------------------------------------------------------------------------------
# Exact: enumeration against the sum written out
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("toy", list(TOYS))
def test_enumeration_is_the_exact_sum_in_value_and_gradient(toy):
    build, lam, theta = TOYS[toy]
    lam = {n: v.clone().requires_grad_(True) for n, v in lam.items()}
    theta = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    model, q = build(lam, theta)
    estimate = ESTIMATORS["enumeration"](model, q, 1)
    leaves = [*lam.values(), *theta.values()]
    got = torch.autograd.grad(estimate.surrogate, leaves)
    expected = exact_elbo(toy, lam, theta)
    assert torch.allclose(estimate.elbo, expected, rtol=1e-12, atol=1e-12)
    for a, b in zip(got, torch.autograd.grad(expected, leaves)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_enumeration_of_index_values_equals_that_of_one_hot_values():
    logits = torch.tensor([[0.3, -0.6, 0.1], [-0.4, 0.2, 0.7]])
    table = torch.tensor([-1.0, 0.5, -2.0])

    class IndexModel:
        def log_joint(self, z):
            return TableModel(table, latents=2).log_joint(
                torch.nn.functional.one_hot(z, 3).to(logits.dtype))

    by_index = ESTIMATORS["enumeration"](IndexModel(), Independent(Categorical(logits=logits), 1), 1)
    by_one_hot = ESTIMATORS["enumeration"](TableModel(table, 2),
                                           Independent(OneHotCategorical(logits=logits), 1), 1)
    assert torch.allclose(by_index.elbo, by_one_hot.elbo, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# Unbiasedness against the exact gradient, through estimators.testing
# --------------------------------------------------------------------------------------------
# Every unbiased entry on the reference problems of estimators.testing (three Bernoulli bits,
# two categorical latents of three classes, a mixture's component choice), and the wrong twins
# (REBAR's control variate seeing its own sample, DisARM with sigma of the logits for sigma of
# their size, ARM with its weight reversed, VIMCO held to the ELBO's gradient), are checked in
# tests/test_unbiased.py. Here: one latent of four classes, a OneHotCategorical of event (C,),
# which those problems do not have, as a reference problem made from this file's toy.

CATEGORICAL_TOY = enumerated_problem("categorical-toy", *TOYS["categorical"],
                                     description="one latent of four classes")
CHECK_SHARE = FALSE_POSITIVE_RATE / STATISTICAL_BUDGET  # what each statistical test may spend


def test_the_categorical_toy_problem_is_the_sum_written_out():
    exact = CATEGORICAL_TOY.exact_gradient()
    expected = exact_gradient("categorical")
    assert torch.allclose(exact["lambda"]["logits"], expected["logits"], rtol=1e-12, atol=1e-14)
    assert torch.allclose(exact["theta"]["t"], expected["t"], rtol=1e-12, atol=1e-14)


@pytest.mark.statistical
@pytest.mark.parametrize("name,num_samples", unbiased_cases("categorical") + [("vimco", 5)])
def test_unbiased_on_the_categorical_toy(name, num_samples):
    report = check_unbiased(ESTIMATORS[name], CATEGORICAL_TOY, num_samples=num_samples,
                            num_replicates=2000, false_positive_rate=CHECK_SHARE, seed=3,
                            **options_for(name, "categorical", num_samples, seed=4))
    assert len(report.coordinates) == 8
    assert report.passed, str(report)


@pytest.mark.statistical
def test_the_check_rejects_rebar_whose_control_variate_sees_its_own_sample_on_the_toy():
    report = check_unbiased(rebar_without_the_conditional, CATEGORICAL_TOY, num_samples=1,
                            num_replicates=2000, false_positive_rate=CHECK_SHARE, seed=3)
    assert not report.passed, str(report)


def test_every_unbiased_discrete_entry_is_checked():
    assert {n for n, _ in unbiased_cases("bernoulli")} == {
        "score_function", "score_function_ema", "score_function_loo", "score_function_optimal",
        "score_function_autodiff", "rebar", "relax", "arm", "disarm"}
    assert {n for n, _ in unbiased_cases("categorical")} == {
        "score_function", "score_function_ema", "score_function_loo", "score_function_optimal",
        "score_function_autodiff", "rebar", "relax"}


def rebar_without_the_conditional(model, q, num_samples):
    """A wrong REBAR: z~ = z, so the control variate c(z~) depends on the sample it corrects."""
    return discrete._relaxed_control("rebar_wrong", model, q, num_samples, temperature=0.5,
                                     eta=1.0, uniform=None,
                                     conditional=lambda parts, b, noise, z: z)


# --------------------------------------------------------------------------------------------
# The relaxations' bias against the exact gradient
# --------------------------------------------------------------------------------------------

TEMPERATURES = (2.0, 1.0, 0.5)


def squared_bias(estimator, toy, temperature, seed):
    """||E g - exact||^2 over q's logits, unbiased (the replicate means' variance taken off), with
    its standard error (delta method)."""
    exact = exact_gradient(toy)["logits"]
    grads = replicate(estimator, toy, 1, seed, temperature=temperature)["logits"]
    stats = gradient_statistics(grads, exact)
    bias, se = stats.bias.flatten(), stats.mean_se.flatten()
    value = (bias.pow(2) - se.pow(2)).sum()
    error = (4 * (bias * se).pow(2).sum() + 2 * se.pow(4).sum()).sqrt()
    return value.item(), error.item(), stats.z.abs().max().item()


def bias_shrinks_z(estimator, toy, seed):
    """z of each fall of the squared bias from one temperature of TEMPERATURES to the next."""
    rows = [squared_bias(estimator, toy, t, seed + i) for i, t in enumerate(TEMPERATURES)]
    return [(a[0] - b[0]) / math.hypot(a[1], b[1]) for a, b in zip(rows, rows[1:])]


@pytest.mark.statistical
@pytest.mark.parametrize("toy", ["bernoulli", "categorical"])
def test_the_gumbel_softmax_bias_shrinks_as_the_temperature_falls(toy):
    falls = bias_shrinks_z(ESTIMATORS["gumbel_softmax"], toy, seed=30)
    assert min(falls) > z_threshold(len(falls)), falls


@pytest.mark.statistical
def test_the_shrink_check_rejects_a_relaxation_whose_temperature_is_stuck():
    def stuck(model, q, num_samples, temperature):
        return ESTIMATORS["gumbel_softmax"](model, q, num_samples, temperature=2.0)

    falls = bias_shrinks_z(stuck, "bernoulli", seed=30)
    assert min(falls) < z_threshold(len(falls)), falls


def biased_at_every_temperature(estimator, seed) -> list[float]:
    """The largest |z| of the bias at each temperature of (1, 0.5, 0.25), on the cubic toy."""
    return [squared_bias(estimator, "bernoulli", t, seed + i)[2]
            for i, t in enumerate((1.0, 0.5, 0.25))]


@pytest.mark.statistical
def test_straight_through_is_biased_at_every_temperature_on_a_cubic_model():
    # Its tau -> 0 limit is the trapezoid rule on f' (estimators.discrete.straight_through),
    # wrong for the cubic term: the bias does not vanish (squared bias 0.0065 at tau = 1 and
    # 0.018 at tau = 0.25 on this toy).
    z = biased_at_every_temperature(ESTIMATORS["straight_through"], seed=40)
    assert min(z) > z_threshold(3 * 3), z


@pytest.mark.statistical
def test_the_biased_check_rejects_rebar():
    z = biased_at_every_temperature(ESTIMATORS["rebar"], seed=40)
    assert min(z) < z_threshold(3 * 3), z


# --------------------------------------------------------------------------------------------
# RELAX: the control variate trained by the same backward pass
# --------------------------------------------------------------------------------------------


def _fixed_uniforms(seed, count=2):
    generator = torch.Generator().manual_seed(seed)
    draws = []

    def uniform(shape):
        if not draws:
            draws.extend(torch.rand((count, *shape), generator=generator, dtype=F64).unbind(0))
        return draws.pop(0)

    return uniform


def relax_gradients(state, seed, train=True):
    """(d surrogate / d logits, w) and d/d (eta, log_temperature) on fixed uniforms."""
    build, lam, theta = TOYS["bernoulli"]
    lam = {n: v.expand(4, -1).clone().requires_grad_(True) for n, v in lam.items()}
    theta = {n: v.clone().requires_grad_(True) for n, v in theta.items()}
    model, q = build(lam, theta)
    estimate = ESTIMATORS["relax"](model, q, 2, state=state, uniform=_fixed_uniforms(seed),
                                   train=train)
    leaves = [lam["logits"], theta["w"], state.eta, state.log_temperature]
    return torch.autograd.grad(estimate.surrogate.sum(), leaves, allow_unused=True)


def test_relax_trains_eta_and_the_temperature_down_the_gradient_of_the_variance():
    # The surrogate's gradient in the control variate's scalars is minus that of the sum over
    # batch entries of ||g||^2, g the entry's logits-gradient (central differences), and training
    # leaves the gradients of lambda and theta as they are.
    state = RelaxControlVariate.with_network(3, hidden=8, seed=1, temperature=0.7, eta=0.8)
    grad_logits, grad_w, grad_eta, grad_log_temperature = relax_gradients(state, seed=9)
    untrained = relax_gradients(state, seed=9, train=False)
    assert torch.equal(untrained[0], grad_logits) and torch.equal(untrained[1], grad_w)
    assert untrained[2] is None and untrained[3] is None

    def variance_objective(shift_eta=0.0, shift_temperature=0.0):
        moved = copy.deepcopy(state)
        with torch.no_grad():
            moved.eta += shift_eta
            moved.log_temperature += shift_temperature
        return relax_gradients(moved, seed=9, train=False)[0].pow(2).sum().item()

    step = 1e-5
    for got, shift in ((grad_eta, {"shift_eta": step}), (grad_log_temperature,
                                                          {"shift_temperature": step})):
        minus = {k: -v for k, v in shift.items()}
        derivative = (variance_objective(**shift) - variance_objective(**minus)) / (2 * step)
        assert abs(got.item() + derivative) < 1e-6 * (1 + abs(derivative)), (got, derivative)
        assert abs(derivative) > 1e-3  # the check can tell the sign


# --------------------------------------------------------------------------------------------
# The contract, the noise, and misuse
# --------------------------------------------------------------------------------------------

DISCRETE = [n for n, e in ESTIMATORS.items() if "continuous" not in e.q_kinds]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("toy", ["bernoulli", "categorical", "two-categoricals"])
def test_surrogate_value_is_the_estimate_with_batch_shape_and_dtype(toy, dtype):
    build, lam, theta = TOYS[toy]
    lam = {n: v.to(dtype).expand(2, *v.shape).clone().requires_grad_(True) for n, v in lam.items()}
    theta = {n: v.to(dtype) for n, v in theta.items()}
    model, q = build(lam, theta)
    kind = q_kind(q)
    names = [n for n, e in ESTIMATORS.items() if kind in e.q_kinds]
    assert set(DISCRETE) - {"arm", "disarm"} <= set(names)
    for name in names:
        torch.manual_seed(0)
        estimate = ESTIMATORS[name](model, q, 2)
        assert estimate.elbo.shape == estimate.surrogate.shape == (2,), name
        assert estimate.elbo.dtype == estimate.surrogate.dtype == dtype, name
        assert torch.equal(estimate.surrogate.detach(), estimate.elbo.detach()), name
        assert estimate.surrogate.requires_grad, name


@pytest.mark.parametrize("name", [n for n in DISCRETE if n != "enumeration"])
def test_noise_from_a_generator_is_the_global_stream_s_noise_and_each_run_can_have_its_own(name):
    build, lam, theta = TOYS["bernoulli"]
    lam = {n: v.expand(3, -1).clone().requires_grad_(True) for n, v in lam.items()}
    model, q = build(lam, theta)
    torch.manual_seed(5)
    by_default = ESTIMATORS[name](model, q, 2).surrogate
    generator = torch.Generator().manual_seed(5)
    by_generator = ESTIMATORS[name](model, q, 2, uniform=lambda shape: torch.rand(
        shape, generator=generator, dtype=F64)).surrogate
    assert torch.equal(by_default, by_generator)
    # Batch entry 1 alone, with its own stream: its estimate is entry 1's of a batch in which it
    # draws from that stream and the others from theirs.
    streams = [torch.Generator().manual_seed(s) for s in (11, 12, 13)]

    def per_entry(shape):  # (K, 3, D): entry r's (K, D) from stream r
        return torch.stack([torch.rand((shape[0], *shape[2:]), generator=g, dtype=F64)
                            for g in streams], 1)

    together = ESTIMATORS[name](model, q, 2, uniform=per_entry).surrogate
    alone_q = Independent(Bernoulli(logits=lam["logits"][1:2]), 1)
    own = torch.Generator().manual_seed(12)
    alone = ESTIMATORS[name](model, alone_q, 2, uniform=lambda shape: torch.rand(
        shape, generator=own, dtype=F64)).surrogate
    assert torch.allclose(together[1:2], alone, rtol=1e-12, atol=1e-12)


def test_bernoulli_with_noise_draws_h_of_logits_plus_logistic_noise():
    logits = torch.tensor([0.4, -1.0, 2.0])
    noise = torch.tensor([[0.5, 0.8, 0.05], [0.7, 0.2, 0.2]])
    q = Independent(BernoulliWithNoise(logits, noise), 1)
    b = q.sample((2,))
    assert torch.equal(b, (noise > 1 - torch.sigmoid(logits)).to(b.dtype))
    with pytest.raises(RuntimeError, match="drawn already"):
        q.sample((2,))
    # The score function through it: the seed's f * grad log q at those b.
    logits = logits.clone().requires_grad_(True)
    model = CubicModel(torch.tensor([0.5, -1.0, 0.2]))
    estimate = score_function(model, Independent(BernoulliWithNoise(logits, noise), 1), 2)
    (got,) = torch.autograd.grad(estimate.surrogate, logits)
    signal = model.log_joint(b) - Independent(Bernoulli(logits=logits.detach()), 1).log_prob(b)
    expected = (signal.unsqueeze(-1) * (b - torch.sigmoid(logits.detach()))).mean(0)
    assert torch.allclose(got, expected, rtol=1e-12)


def _raises(name, q, num_samples, *fragments, **options):
    model = CubicModel(torch.zeros(3))
    with pytest.raises(EstimatorError) as info:
        ESTIMATORS[name](model, q, num_samples, **options)
    message = str(info.value)
    assert "\n" not in message and name in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_misuse_fails_in_one_line_saying_what_to_do():
    one_hot = OneHotCategorical(logits=torch.zeros(3))
    gaussian = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)
    bernoulli = Independent(Bernoulli(logits=torch.zeros(3)), 1)
    for name in ("arm", "disarm"):
        _raises(name, one_hot, 2, "is for Bernoulli latents", "Independent(Bernoulli", "rebar")
        _raises(name, bernoulli, 3, "even num_samples", "got 3")
    for name in ("gumbel_softmax", "straight_through", "rebar", "relax"):
        _raises(name, gaussian, 2, "needs its logits", "pathwise", "score_function")
        _raises(name, Independent(Categorical(logits=torch.zeros(2, 3)), 1), 2, "one-hot",
                "OneHotCategorical")
    _raises("enumeration", Independent(Bernoulli(logits=torch.zeros(13)), 1), 1,
            "2^13 = 8.19e+03 outcomes", "max_outcomes=4096", "disarm")
    _raises("enumeration", gaussian, 1, "bernoulli, categorical, mixture", "score_function")
    _raises("rebar", Bernoulli(logits=torch.zeros(3)), 1, "wrap q", "Independent(..., 1)")
    _raises("relax", bernoulli, 1, "RelaxControlVariate", state=EmaBaseline())
    _raises("disarm", Independent(Bernoulli(logits=torch.tensor([0.0, float("nan"), 0.0]),
                                            validate_args=False), 1), 2, "contains NaN")
    class Sum:
        def log_joint(self, z):
            return z.sum(-1)

    ESTIMATORS["enumeration"](Sum(), Independent(Bernoulli(logits=torch.zeros(13)), 1), 1,
                              max_outcomes=8192)  # the fix it names works


def test_the_kinds_of_q():
    assert q_kind(Independent(Bernoulli(logits=torch.zeros(3)), 1)) == "bernoulli"
    assert q_kind(OneHotCategorical(logits=torch.zeros(3))) == "categorical"
    assert q_kind(Independent(OneHotCategorical(logits=torch.zeros(2, 3)), 1)) == "categorical"
    assert q_kind(Independent(Categorical(logits=torch.zeros(2, 3)), 1)) == "categorical"
    assert q_kind(MixtureSameFamily(Categorical(logits=torch.zeros(2)),
                                    Independent(Normal(torch.zeros(2, 1), torch.ones(2, 1)), 1))
                  ) == "mixture"
    assert q_kind(Independent(Normal(torch.zeros(2), torch.ones(2)), 1)) == "continuous"
    # Every entry says what it takes; the ones that take a Gaussian q are what the Gaussian
    # studies iterate.
    from experiments.replicated import NVIL, estimator_names
    assert estimator_names() == [n for n, e in ESTIMATORS.items() if "continuous" in e.q_kinds] + [NVIL]
    assert not set(DISCRETE) & set(estimator_names())
    assert all(ESTIMATORS[n].needs_logits for n in ("gumbel_softmax", "straight_through",
                                                     "rebar", "relax"))
    assert {n for n, e in ESTIMATORS.items() if not e.unbiased} == {"gumbel_softmax",
                                                                    "straight_through"}
