"""estimators.testing: the reference problems' exact gradients, the check, its report, its
refusals of bad input, the hypothesis strategies and the command line.

The exact gradients are checked against finite differences of each problem's exact objective and
against independent routes to the same number (closed form against quadrature, the Mellin-Barnes
route against the grid, the K-sample bound at K = 1 against the ELBO, at the exact posterior
against log p(x), enumeration against the sum written out). The statistical checks here run with
fixed seeds, each spending a 1/STATISTICAL_BUDGET share of the suite's FALSE_POSITIVE_RATE
(conftest) through ``check_unbiased(false_positive_rate=...)``, which splits it evenly over the
coordinates (Bonferroni); each has a wrong twin that must fail it.
"""

import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from scipy import stats

from conftest import FALSE_POSITIVE_RATE, STATISTICAL_BUDGET
from estimators import ESTIMATORS, ElboEstimate, EstimatorError
from estimators.base import log_mean_exp
from estimators.testing import (POWER, REFERENCE_PROBLEMS, applicable_problems, assert_unbiased,
                                check_estimator, check_unbiased, conjugate_gaussian,
                                gaussian_grid_problem, minimum_replicates, threshold)
from estimators.testing.__main__ import main
from estimators.testing.exact import GaussianGridExact, _nodes
from estimators.testing.strategies import problems

ROOT = Path(__file__).resolve().parents[1]
SHARE = FALSE_POSITIVE_RATE / STATISTICAL_BUDGET
GROUPS = ("lambda", "theta")


def flat(gradient: dict) -> torch.Tensor:
    return torch.cat([gradient[g][n].reshape(-1) for g in GROUPS for n in gradient[g]])


def shifted(params: dict, direction: torch.Tensor, start: int, step: float) -> tuple[dict, int]:
    out = {}
    for name, value in params.items():
        size = value.numel()
        out[name] = value + step * direction[start:start + size].reshape(value.shape)
        start += size
    return out, start


def directional_difference(problem, target, ks, direction, step=1e-4) -> dict:
    """Central differences of the exact objective along ``direction``, for each K of ``ks``."""
    values = {}
    for sign in (1, -1):
        lam, used = shifted(problem.lam, direction, 0, sign * step)
        theta, _ = shifted(problem.theta, direction, used, sign * step)
        if target == "elbo":
            found = {1: problem.elbo_method(lam, theta, False)}
        else:
            found = problem.bound_method(lam, theta, ks, False)
        for k in ks:
            values.setdefault(k, []).append(found[k].value)
    return {k: (plus - minus) / (2 * step) for k, (plus, minus) in values.items()}


# --------------------------------------------------------------------------------------------
# Exact gradients
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(REFERENCE_PROBLEMS))
def test_exact_gradients_are_finite_differences_of_the_exact_objective(name):
    # A random direction (fixed generator) through every coordinate of (lambda, theta): a wrong
    # coordinate of the gradient shows in it, at any size above the tolerance.
    problem = REFERENCE_PROBLEMS[name]
    generator = torch.Generator().manual_seed(11)
    direction = torch.randn(problem.num_coordinates, generator=generator, dtype=torch.float64)
    direction /= direction.norm()
    for target, ks in (("elbo", (1,)), ("iwae", (2, 5))):
        differences = directional_difference(problem, target, ks, direction)
        for k in ks:
            exact = problem.exact(target, k)
            along = float(flat(exact.gradient) @ direction)
            assert abs(differences[k] - along) < 2e-6 * (1 + abs(along)), (target, k)


@pytest.mark.parametrize("name", list(REFERENCE_PROBLEMS))
def test_each_problem_has_lambda_and_theta_and_accurate_exact_numbers(name):
    problem = REFERENCE_PROBLEMS[name]
    assert problem.lam and problem.theta and problem.kind in ("continuous", "bernoulli",
                                                              "categorical", "mixture")
    _, q = problem.build(problem.lam, problem.theta)
    from estimators import q_kind
    assert q_kind(q) == problem.kind
    for target, k in (("elbo", 1), ("iwae", 1), ("iwae", 2), ("iwae", 5)):
        exact = problem.exact(target, k)
        assert exact.error < 1e-7, (target, k, exact.error)
        gradient = problem.exact_gradient(target, k)
        assert set(gradient["lambda"]) == set(problem.lam)
        assert set(gradient["theta"]) == set(problem.theta)
        for group, params in (("lambda", problem.lam), ("theta", problem.theta)):
            for n, value in params.items():
                assert gradient[group][n].shape == value.shape
                assert gradient[group][n].dtype == torch.float64
    # the bound grows with K towards log p(x) (Burda et al. 2016, theorem 1)
    values = [problem.exact_objective("iwae", k) for k in (1, 2, 5)]
    assert values[0] < values[1] < values[2]


GRID_PROBLEMS = ["gaussian_mixture_1d", "gaussian_mixture_2d", "logistic_regression",
                 "mixture_choice"]


@pytest.mark.parametrize("name", GRID_PROBLEMS)
def test_frullani_s_integral_at_one_sample_is_the_elbo(name):
    problem = REFERENCE_PROBLEMS[name]
    one = problem.bound_method(problem.lam, problem.theta, [1], True)[1]
    elbo = problem.exact("elbo")
    assert abs(one.value - elbo.value) < 1e-9
    assert torch.allclose(flat(one.gradient), flat(elbo.gradient), rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("dim", [1, 2])
def test_the_mellin_route_agrees_with_the_grid_and_the_closed_form(dim):
    conjugate = conjugate_gaussian(dim)
    grid = gaussian_grid_problem("grid", conjugate.build, conjugate.lam, conjugate.theta)
    # the grid's ELBO against the closed form; the Mellin bound at K = 1 against it too
    assert torch.allclose(flat(grid.exact("elbo").gradient), flat(conjugate.exact("elbo").gradient),
                          rtol=1e-10, atol=1e-12)
    mellin_one = conjugate.bound_method(conjugate.lam, conjugate.theta, [1], True)[1]
    assert abs(mellin_one.value - conjugate.exact("elbo").value) < 1e-9
    for k in (2, 5):
        a, b = conjugate.exact("iwae", k), grid.exact("iwae", k)
        assert abs(a.value - b.value) < 1e-10
        assert torch.allclose(flat(a.gradient), flat(b.gradient), rtol=1e-9, atol=1e-10)


def test_at_the_exact_posterior_every_bound_is_log_evidence_and_lambda_is_stationary():
    problem = REFERENCE_PROBLEMS["conjugate_gaussian_5d"]
    model, _ = problem.build(problem.lam, problem.theta)
    prior_var, noise_var = 1.2 ** 2, math.exp(2 * float(problem.theta["log_noise_scale"]))
    precision = 1 / prior_var + 1 / noise_var
    post_loc = (problem.theta["prior_loc"] / prior_var + model.x / noise_var) / precision
    post = conjugate_gaussian(5, x=model.x, prior_loc=problem.theta["prior_loc"],
                              log_noise_scale=float(problem.theta["log_noise_scale"]),
                              loc=post_loc, log_scale=torch.full((5,), -0.5 * math.log(precision)))
    theta = {n: v.clone().requires_grad_(True) for n, v in post.theta.items()}
    marginal = torch.sqrt(prior_var + (2 * theta["log_noise_scale"]).exp())
    log_evidence = torch.distributions.Normal(theta["prior_loc"], marginal).log_prob(model.x).sum()
    d_evidence = torch.autograd.grad(log_evidence, list(theta.values()))
    for k in (1, 2, 5):
        exact = post.exact("iwae", k)
        assert abs(exact.value - float(log_evidence.detach())) < 1e-10
        assert flat({"lambda": exact.gradient["lambda"], "theta": {}}).abs().max() < 1e-9
        for got, expected in zip(exact.gradient["theta"].values(), d_evidence):
            assert torch.allclose(got, expected, atol=1e-9)


def test_the_logistic_regression_elbo_by_quadrature_per_point_equals_the_2d_grid():
    problem = REFERENCE_PROBLEMS["logistic_regression"]
    grid = gaussian_grid_problem("grid", problem.build, problem.lam, problem.theta)
    a, b = problem.exact("elbo"), grid.exact("elbo")
    assert abs(a.value - b.value) < 1e-9
    assert torch.allclose(flat(a.gradient), flat(b.gradient), rtol=1e-8, atol=1e-9)


def test_the_bound_by_enumeration_is_the_sum_written_out():
    problem = REFERENCE_PROBLEMS["bernoulli_bits"]
    logits = problem.lam["logits"].clone().requires_grad_(True)
    weights = problem.theta["weights"].clone().requires_grad_(True)
    values = torch.tensor(list(itertools.product([0.0, 1.0], repeat=3)), dtype=torch.float64)
    log_q = (values * torch.nn.functional.logsigmoid(logits)
             + (1 - values) * torch.nn.functional.logsigmoid(-logits)).sum(-1)
    model, _ = problem.build({"logits": logits}, {"weights": weights})
    log_w = model.log_joint(values) - log_q
    bound = sum((log_q[i] + log_q[j]).exp() * log_mean_exp(torch.stack([log_w[i], log_w[j]]), 0)
                for i in range(8) for j in range(8))
    expected = torch.autograd.grad(bound, [logits, weights])
    exact = problem.exact("iwae", 2)
    assert abs(exact.value - float(bound.detach())) < 1e-12
    assert torch.allclose(exact.gradient["lambda"]["logits"], expected[0], atol=1e-12)
    assert torch.allclose(exact.gradient["theta"]["weights"], expected[1], atol=1e-12)


def test_the_grid_s_gradients_at_each_node_equal_a_loop_of_single_node_backward_passes():
    # One backward pass with a copy of the parameters per node (the batched path) against the
    # loop it replaces, at a few nodes of the mixture-q problem.
    problem = REFERENCE_PROBLEMS["mixture_choice"]
    grid = GaussianGridExact(problem.build, 1)
    points, _, _ = _nodes(1, 0.05)
    chosen = points[[3, 170, 300]]
    batched = grid.pointwise(problem.lam, problem.theta, chosen, components=True)
    for i in range(len(chosen)):
        alone = grid.pointwise(problem.lam, problem.theta, chosen[i:i + 1], components=True)
        assert torch.allclose(batched["log_w"][:, i], alone["log_w"][:, 0], rtol=1e-13)
        for c in range(2):
            for group in GROUPS:
                for n, value in batched["grad_log_w"][c][group].items():
                    assert torch.allclose(value[i], alone["grad_log_w"][c][group][n][0],
                                          rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------------------------
# The check and its report
# --------------------------------------------------------------------------------------------


def antithetic_pathwise(model, q, num_samples):
    """A user's estimator written from scratch: pathwise gradients averaged over antithetic
    pairs z = loc +- scale e, exact for the mean of a Gaussian model (zero variance)."""
    loc, scale = q.base_dist.loc, q.base_dist.scale
    noise = torch.randn((num_samples, *loc.shape), dtype=loc.dtype)
    z = torch.cat([loc + scale * noise, loc - scale * noise])
    elbo = (model.log_joint(z) - q.log_prob(z)).mean(0)
    return ElboEstimate(elbo, elbo)


def nudged(amount):
    """The antithetic estimator with ``amount`` added to the gradient of q's first mean."""
    def estimator(model, q, num_samples):
        result = antithetic_pathwise(model, q, num_samples)
        loc = q.base_dist.loc[..., 0]
        return ElboEstimate(result.elbo, result.surrogate + amount * (loc - loc.detach()))
    return estimator


@pytest.mark.statistical
def test_zero_variance_coordinates_are_compared_at_a_floating_point_tolerance():
    report = check_unbiased(antithetic_pathwise, "conjugate_gaussian_2d", num_replicates=500,
                            false_positive_rate=SHARE, seed=3)
    exact_ones = {c.name for c in report.coordinates if c.exact_comparison}
    # the means' gradients are linear in z: exact for every antithetic pair
    assert exact_ones == {"lambda.loc[0]", "lambda.loc[1]", "theta.prior_loc[0]",
                          "theta.prior_loc[1]"}
    assert report.passed, str(report)
    for c in report.coordinates:
        if c.exact_comparison:
            assert c.tolerance < 1e-10 and c.detectable_bias < 1e-9
    assert "z = exact" in str(report)
    # a bias of 1e-7 in a zero-variance coordinate is far below any z-test's reach, and caught
    twin = check_unbiased(nudged(1e-7), "conjugate_gaussian_2d", num_replicates=500,
                          false_positive_rate=SHARE, seed=3)
    assert not twin.passed and [c.name for c in twin.coordinates if c.rejected] == ["lambda.loc[0]"]


@pytest.mark.statistical
def test_the_report_gives_each_coordinate_s_estimate_error_z_threshold_and_detectable_bias():
    problem = REFERENCE_PROBLEMS["logistic_regression"]
    report = check_unbiased(ESTIMATORS["pathwise"], problem, num_replicates=1000,
                            false_positive_rate=SHARE, seed=4)
    assert report.passed, str(report)
    n = problem.num_coordinates
    assert len(report.coordinates) == n and report.target == "elbo"
    assert report.threshold == pytest.approx(stats.t.isf(SHARE / (2 * n), 999))
    extra = stats.t.ppf(POWER, 999)
    exact = problem.exact_gradient()
    for c in report.coordinates:
        assert c.threshold == report.threshold
        assert c.exact == pytest.approx(float(exact[c.group][c.parameter].reshape(-1)[
            c.index[0] if c.index else 0]))
        assert c.detectable_bias == pytest.approx((report.threshold + extra) * c.standard_error
                                                  + c.tolerance)
        assert c.z == pytest.approx(c.bias / c.standard_error)
    text = str(report)
    assert "Bonferroni" in text and f"{report.threshold:.2f}" in text
    assert all(c.name in text for c in report.coordinates)
    assert text.splitlines()[-1].startswith("passed")


def test_the_replicates_are_seeded_and_the_caller_s_stream_is_left_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = check_unbiased(ESTIMATORS["disarm"], "bernoulli_bits", num_samples=2,
                           num_replicates=200, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    again = check_unbiased(ESTIMATORS["disarm"], "bernoulli_bits", num_samples=2,
                           num_replicates=200, seed=5)
    other = check_unbiased(ESTIMATORS["disarm"], "bernoulli_bits", num_samples=2,
                           num_replicates=200, seed=6)
    assert [c.estimate for c in first.coordinates] == [c.estimate for c in again.coordinates]
    assert [c.estimate for c in first.coordinates] != [c.estimate for c in other.coordinates]


def test_assert_unbiased_names_the_worst_coordinate_its_z_the_threshold_and_the_rate():
    with pytest.raises(AssertionError) as info:
        assert_unbiased(ESTIMATORS["gumbel_softmax"], "bernoulli_bits", num_samples=2,
                        num_replicates=2000, seed=1)
    message = str(info.value).splitlines()[0]
    report = check_unbiased(ESTIMATORS["gumbel_softmax"], "bernoulli_bits", num_samples=2,
                            num_replicates=2000, seed=1)
    worst = report.worst
    assert worst.name in message and f"z = {worst.z:+.2f}" in message
    assert f"|z| > {report.threshold:.2f}" in message and "false-positive rate 0.001" in message
    passed = assert_unbiased(ESTIMATORS["disarm"], "bernoulli_bits", num_samples=2,
                             num_replicates=500)
    assert passed.passed


def test_minimum_replicates_is_the_smallest_r_that_sees_a_bias_of_one_standard_deviation():
    for n, alpha in ((10, 1e-3), (4, 1e-6), (16, 0.05)):
        least = minimum_replicates(n, alpha)
        for r, ok in ((least, True), (least - 1, False)):
            reach = (threshold(n, alpha, r) + stats.t.ppf(POWER, r - 1)) / math.sqrt(r)
            assert (reach <= 1) == ok
    assert minimum_replicates(10, 1e-3) == 34  # as the docstring of estimators.testing.check says


def test_check_estimator_splits_the_rate_over_problems_and_says_why_it_skips():
    result = check_estimator(ESTIMATORS["disarm"], ["bernoulli_bits", "categorical_latents",
                                                    "conjugate_gaussian_1d"],
                             num_replicates=300, false_positive_rate=0.01)
    assert [r.problem for r in result.reports] == ["bernoulli_bits"]
    assert result.reports[0].false_positive_rate == pytest.approx(0.01)
    assert dict(result.skipped) == {"categorical_latents": "categorical q; disarm takes bernoulli",
                                    "conjugate_gaussian_1d": "continuous q; disarm takes bernoulli"}
    both = check_estimator(ESTIMATORS["score_function_loo"], ["bernoulli_bits", "mixture_choice"],
                           num_replicates=300, false_positive_rate=0.01)
    assert [r.false_positive_rate for r in both.reports] == pytest.approx([0.005, 0.005])
    table = str(both)
    for word in ("problem", "worst |z|", "threshold", "detectable bias", "verdict", "0.005"):
        assert word in table
    # a plain callable takes continuous q's unless told
    applicable, skipped = applicable_problems(antithetic_pathwise)
    assert {p.kind for p in applicable} == {"continuous"} and len(skipped) == 3
    applicable, _ = applicable_problems(antithetic_pathwise, kinds="mixture")
    assert [p.name for p in applicable] == ["mixture_choice"]


# --------------------------------------------------------------------------------------------
# Bad input: one line naming the problem, before any replicate is drawn
# --------------------------------------------------------------------------------------------


class Counting:
    """An estimator that counts its calls, around another."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name = getattr(inner, "name", None) or getattr(inner, "__name__", "counting")

    def __call__(self, model, q, num_samples, **options):
        self.calls += 1
        return self.inner(model, q, num_samples, **options)


def summed(model, q, num_samples):
    elbo = ESTIMATORS["pathwise"](model, q, num_samples).elbo
    return ElboEstimate(elbo.sum(), elbo.sum())


def blind_to_q(model, q, num_samples):
    z = q.rsample((num_samples,)).detach()  # the path to q's parameters is cut
    elbo = (model.log_joint(z) - q.log_prob(z).detach()).mean(0)
    return ElboEstimate(elbo, elbo)


def no_gradient(model, q, num_samples):
    with torch.no_grad():
        elbo = ESTIMATORS["pathwise"](model, q, num_samples).elbo
    return ElboEstimate(elbo, elbo)


def nan_estimate(model, q, num_samples):
    elbo = ESTIMATORS["pathwise"](model, q, num_samples).elbo
    return ElboEstimate(elbo * float("nan"), elbo * float("nan"))


def just_a_tensor(model, q, num_samples):
    return ESTIMATORS["pathwise"](model, q, num_samples).elbo


@pytest.mark.parametrize("estimator,problem,options,fragments", [
    (summed, "conjugate_gaussian_2d", {}, ["surrogate has shape ()", "q.batch_shape is (2,)",
                                           "one value per batch entry"]),
    (blind_to_q, "conjugate_gaussian_2d", {}, ["no gradient with respect to q's parameters",
                                               "loc, log_scale"]),
    (no_gradient, "conjugate_gaussian_2d", {}, ["carries no gradient", "attach_gradient"]),
    (nan_estimate, "conjugate_gaussian_2d", {}, ["NaN"]),
    (just_a_tensor, "conjugate_gaussian_2d", {}, ["must return ElboEstimate(elbo, surrogate)"]),
    (ESTIMATORS["pathwise"], "bernoulli_bits", {}, ["pathwise takes q of kind continuous",
                                                    "bernoulli_bits has a bernoulli q"]),
    (ESTIMATORS["pathwise"], "conjugate_gaussian_2d", {"num_replicates": 20},
     ["num_replicates=20 is too few", "use num_replicates >= 32"]),
    (ESTIMATORS["score_function_loo"], "conjugate_gaussian_2d", {"num_samples": 1},
     ["score_function_loo", "needs num_samples >= 2"]),
    (ESTIMATORS["pathwise"], "no_such_problem", {}, ["no reference problem 'no_such_problem'",
                                                     "conjugate_gaussian_1d"]),
    (ESTIMATORS["pathwise"], "conjugate_gaussian_2d", {"target": "kl"},
     ["target must be 'elbo' or 'iwae'"]),
    (ESTIMATORS["pathwise"], "conjugate_gaussian_2d", {"false_positive_rate": 1.5},
     ["false_positive_rate must be in (0, 1)"]),
    (ESTIMATORS["vimco"], "bernoulli_bits", {"num_samples": 7, "target": "iwae"},
     ["7-sample bound is out of reach", "use num_samples <= 6"]),
])
def test_bad_input_fails_in_one_line_before_any_replicate(estimator, problem, options, fragments):
    counting = Counting(estimator)
    kinds = getattr(estimator, "q_kinds", None)
    with pytest.raises(EstimatorError) as info:
        check_unbiased(counting, problem, **{"num_replicates": 200, "kinds": kinds, **options})
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert counting.calls <= 1  # at most the trial on two replicates


def test_the_smallest_number_of_replicates_it_names_is_accepted():
    least = minimum_replicates(REFERENCE_PROBLEMS["conjugate_gaussian_2d"].num_coordinates, 1e-3)
    assert least == 32
    check_unbiased(ESTIMATORS["pathwise"], "conjugate_gaussian_2d", num_replicates=least)


# --------------------------------------------------------------------------------------------
# Hypothesis strategies
# --------------------------------------------------------------------------------------------

EXAMPLES = 3
CORRECT = {"continuous": ("pathwise", 1), "bernoulli": ("disarm", 2),
           "categorical": ("score_function_loo", 2), "mixture": ("score_function_loo", 2)}


@pytest.mark.statistical
@pytest.mark.parametrize("kind", list(CORRECT))
def test_drawn_problems_have_exact_gradients_and_a_correct_estimator_passes(kind):
    name, num_samples = CORRECT[kind]
    seen = []

    @settings(max_examples=EXAMPLES)
    @given(problem=problems(kind=kind, dims=(1, 3)))
    def check(problem):
        seen.append(problem)
        assert problem.kind == kind
        generator = torch.Generator().manual_seed(0)
        direction = torch.randn(problem.num_coordinates, generator=generator, dtype=torch.float64)
        difference = directional_difference(problem, "elbo", (1,), direction / direction.norm())
        along = float(flat(problem.exact_gradient()) @ direction / direction.norm())
        assert abs(difference[1] - along) < 2e-6 * (1 + abs(along))
        # the Monte Carlo seed is fixed here, never drawn by hypothesis
        report = check_unbiased(ESTIMATORS[name], problem, num_samples=num_samples,
                                num_replicates=1000, false_positive_rate=SHARE / EXAMPLES, seed=0)
        assert report.passed, str(report)

    check()
    assert len(seen) == EXAMPLES


@pytest.mark.statistical
def test_the_strategy_s_check_rejects_a_biased_estimator():
    failures = []

    @settings(max_examples=EXAMPLES)
    @given(problem=problems(kind="bernoulli"))
    def check(problem):
        report = check_unbiased(ESTIMATORS["straight_through"], problem, num_samples=2,
                                num_replicates=4000, false_positive_rate=SHARE / EXAMPLES,
                                seed=0)
        failures.append(not report.passed)

    check()
    assert any(failures)


def test_the_strategies_refuse_an_unknown_kind():
    with pytest.raises(EstimatorError, match="kind must be one of"):
        problems(kind="gaussian")


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------

WRONG_MODULE = '''
import torch
from estimators import ElboEstimate


def folded(model, q, num_samples):
    """A pathwise estimator that folds its noise to e >= 0: biased."""
    loc, scale = q.base_dist.loc, q.base_dist.scale
    noise = torch.randn((num_samples, *loc.shape), dtype=loc.dtype).abs()
    z = loc + scale * noise
    elbo = (model.log_joint(z) - q.log_prob(z)).mean(0)
    return ElboEstimate(elbo, elbo)


NOT_CALLABLE = 3
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_estimators.py").write_text(WRONG_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_estimators"


def test_the_command_prints_the_table_and_exits_0_when_every_check_passes(capsys):
    assert main(["estimators:disarm", "--replicates", "300", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "bernoulli_bits" in out and "pass" in out and "skipped conjugate_gaussian_1d" in out
    assert "worst |z|" in out and "detectable bias" in out


def test_the_command_exits_1_and_prints_the_failing_coordinates(user_module, capsys):
    code = main([f"{user_module}:folded", "--replicates", "300",
                 "--problems", "conjugate_gaussian_1d,bernoulli_bits"])
    out = capsys.readouterr().out
    assert code == 1
    assert "FAIL" in out and "lambda.loc[0]" in out and "REJECTED" in out
    assert "skipped bernoulli_bits" in out


@pytest.mark.parametrize("argv,fragment", [
    (["no_such_module:x"], "cannot import 'no_such_module'"),
    (["estimators:no_such_attribute"], "estimators has no attribute 'no_such_attribute'"),
    (["user_estimators:NOT_CALLABLE"], "is a int, not an estimator"),
    (["estimators"], "is not package.module:attribute"),
    (["estimators:pathwise", "--replicates", "5"], "num_replicates=5 is too few"),
    (["estimators:pathwise", "--problems", "bernoulli_bits"], "no reference problem applies"),
    (["estimators:pathwise", "--kinds", "bernoulli"], "pathwise: q (Independent) has no rsample"),
])
def test_the_command_exits_2_on_bad_input_with_one_line(argv, fragment, user_module, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err, err


def test_the_command_s_own_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["estimators:pathwise", "--kinds", "gaussian"])
    assert info.value.code == 2
    assert "unknown 'gaussian'" in capsys.readouterr().err


@pytest.mark.slow
def test_python_dash_m_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "estimators.testing", "estimators:arm",
                             "--replicates", "200"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "1 passed, 0 failed, 8 skipped" in result.stdout


# --------------------------------------------------------------------------------------------
# The measurement of power and false-positive rate (experiments.testing_power)
# --------------------------------------------------------------------------------------------


def test_the_power_script_judges_as_the_check_and_adds_exactly_the_bias():
    from estimators.diagnostics import replicate_gradients
    from experiments import testing_power

    for rate in (0.2, 0.05):
        for seed in range(3):
            report = check_unbiased(ESTIMATORS["disarm"], "bernoulli_bits", num_samples=2,
                                    num_replicates=100, seed=seed, false_positive_rate=rate)
            assert testing_power.rejected_at(report, rate) == (not report.passed)
    problem = REFERENCE_PROBLEMS["bernoulli_bits"]
    grads = []
    for estimator in (ESTIMATORS["disarm"],
                      testing_power.biased(ESTIMATORS["disarm"], "lambda.logits[1]", 0.25)):
        torch.manual_seed(0)
        grads.append(replicate_gradients(estimator, problem.build, problem.lam, problem.theta,
                                         num_replicates=4, num_samples=2))
    shift = grads[1].lambda_["logits"] - grads[0].lambda_["logits"]
    assert torch.allclose(shift, torch.tensor([0.0, 0.25, 0.0]).expand(4, 3), atol=1e-14)
    assert torch.equal(grads[1].theta["weights"], grads[0].theta["weights"])


def test_the_power_script_saves_its_counts_with_metadata_only_where_told(tmp_path, capsys):
    import json

    from experiments import testing_power

    assert testing_power.main(["--seeds", "2", "--replicates", "100", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "results" / "testing-power.json").read_text())
    assert saved["metadata"]["study"] == "testing-power"
    assert "experiments.testing_power" in saved["metadata"]["command"]
    rows = saved["data"]["rows"]
    assert len(rows) == len(testing_power.CASES)
    assert all(row["seeds"] == 2 and 0 <= row["power_rejections"] <= 2 for row in rows)
    assert "power" in capsys.readouterr().out
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit, match="choose another --out"):
        testing_power.main(["--seeds", "2", "--out", str(blocker)])
    with pytest.raises(SystemExit, match="--replicates 10 is below"):
        testing_power.main(["--seeds", "2", "--replicates", "10", "--out", str(tmp_path)])
