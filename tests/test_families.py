"""The reparameterizable families of seed section 6 against torch's and scipy's own versions.

Identities (log densities, gradients, shapes, errors) are exact up to rounding; hypothesis draws
their parameters. Goodness-of-fit checks are Kolmogorov-Smirnov tests with fixed seeds, and every
one is shown able to fail: a deliberately wrong family is rejected by the same check.
"""

import math
from typing import Callable, NamedTuple

import pytest
import torch
from hypothesis import given, strategies as st
from scipy import stats
from torch.distributions import (Cauchy, Chi2, Exponential, Gumbel, Independent, Laplace,
                                 Normal, Poisson, SigmoidTransform, StudentT,
                                 TransformedDistribution, Uniform, Weibull, constraints,
                                 kl_divergence)

from estimators.base import distribution_parameters
from estimators.families import (ChiSquare, InverseCDF, LocationScale, NormalWithNoise,
                                 full_covariance_gaussian)
from conftest import FALSE_POSITIVE_RATE, STATISTICAL_BUDGET

# Each goodness-of-fit test below rejects a correct family with probability at most
# ALPHA_PER_TEST: its 1/STATISTICAL_BUDGET share of the suite's FALSE_POSITIVE_RATE (conftest),
# split (Bonferroni) across the columns it tests. Seeds are fixed; if a correct change trips one,
# bump its seed once, never twice.
ALPHA_PER_TEST = FALSE_POSITIVE_RATE / STATISTICAL_BUDGET
NUM_SAMPLES = 5000


def ks_rejects(samples: torch.Tensor, cdf: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """Whether a KS test rejects that the columns of ``samples`` (N, C) follow ``cdf``.

    The cdf maps the samples to probabilities (the probability integral transform), which are
    uniform exactly when the law is right, so each column is tested against Uniform(0, 1).
    """
    probabilities = torch.as_tensor(cdf(samples.detach())).reshape(samples.shape[0], -1)
    pvalues = [stats.kstest(column.numpy(), "uniform").pvalue for column in probabilities.T]
    return min(pvalues) < ALPHA_PER_TEST / len(pvalues)


def log_prob_matches(q, reference, x) -> bool:
    return torch.allclose(q.log_prob(x), reference.log_prob(x), rtol=1e-8, atol=1e-8)


# ------------------------------------------------------------------------------------------
# InverseCDF against four families torch has, each written as a quantile function.


class Family(NamedTuple):
    quantile: Callable
    cdf: Callable
    support: constraints.Constraint
    params: Callable  # (a, b) -> dict of tensors with batch shape (2,)
    reference: Callable  # params -> torch's distribution


FAMILIES = {
    "exponential": Family(
        lambda u, rate: -torch.log1p(-u) / rate,
        lambda x, rate: -torch.expm1(-rate * x),
        constraints.positive,
        lambda a, b: {"rate": torch.tensor([a, b])},
        lambda p: Exponential(p["rate"])),
    "gumbel": Family(
        lambda u, loc, scale: loc - scale * torch.log(-torch.log(u)),
        lambda x, loc, scale: torch.exp(-torch.exp(-(x - loc) / scale)),
        constraints.real,
        lambda a, b: {"loc": torch.tensor([a - 1.0, b]), "scale": torch.tensor([b, a])},
        lambda p: Gumbel(p["loc"], p["scale"])),
    "weibull": Family(
        lambda u, scale, concentration: scale * (-torch.log1p(-u)) ** (1 / concentration),
        lambda x, scale, concentration: -torch.expm1(-(x / scale) ** concentration),
        constraints.positive,
        lambda a, b: {"scale": torch.tensor([a, b]), "concentration": torch.tensor([b, a])},
        lambda p: Weibull(p["scale"], p["concentration"])),
    "cauchy": Family(
        lambda u, loc, scale: loc + scale * torch.tan(math.pi * (u - 0.5)),
        lambda x, loc, scale: 0.5 + torch.atan((x - loc) / scale) / math.pi,
        constraints.real,
        lambda a, b: {"loc": torch.tensor([a, -b]), "scale": torch.tensor([b, a])},
        lambda p: Cauchy(p["loc"], p["scale"])),
}

# Probabilities from deep in the lower tail to 1 - 1e-6; beyond that the upper tail loses
# digits to the float spacing below 1, as InverseCDF documents.
PROBABILITIES = torch.cat([torch.tensor([1e-12, 1e-6]), torch.linspace(0.01, 0.99, 40),
                           torch.tensor([1 - 1e-6])])

parameter = st.floats(0.3, 3.0)


def build(name, a, b, with_cdf, requires_grad=False):
    family = FAMILIES[name]
    params = {k: v.requires_grad_(requires_grad)
              for k, v in family.params(float(a), float(b)).items()}
    q = InverseCDF(family.quantile, params, cdf=family.cdf if with_cdf else None,
                   support=family.support)
    points = family.quantile(PROBABILITIES[:, None], **params).detach()  # (43, 2)
    return q, family.reference(params), params, points


@pytest.mark.parametrize("with_cdf", [True, False], ids=["cdf", "bisection"])
@pytest.mark.parametrize("name", FAMILIES)
@given(a=parameter, b=parameter)
def test_inverse_cdf_log_prob_equals_torch(name, with_cdf, a, b):
    q, reference, _, points = build(name, a, b, with_cdf)
    assert q.batch_shape == (2,) and q.event_shape == ()
    assert log_prob_matches(q, reference, points)


@pytest.mark.parametrize("with_cdf", [True, False], ids=["cdf", "bisection"])
@pytest.mark.parametrize("name", FAMILIES)
@given(a=parameter, b=parameter)
def test_inverse_cdf_log_prob_gradient_equals_torch(name, with_cdf, a, b):
    q, reference, params, points = build(name, a, b, with_cdf, requires_grad=True)
    # The pathwise estimators also differentiate log q in the point itself.
    inputs = [*params.values(), points.requires_grad_()]
    weights = torch.linspace(1.0, 2.0, len(points))[:, None]  # unequal, so no errors cancel
    ours = torch.autograd.grad((weights * q.log_prob(points)).sum(), inputs)
    theirs = torch.autograd.grad((weights * reference.log_prob(points)).sum(), inputs)
    for mine, torchs in zip(ours, theirs):
        torch.testing.assert_close(mine, torchs, rtol=1e-7, atol=1e-8)


def test_inverse_cdf_outside_support_and_under_no_grad():
    q, _, _, _ = build("exponential", 1.0, 2.0, with_cdf=False, requires_grad=True)
    log_prob = q.log_prob(torch.tensor([[-1.0, 0.5]]))
    assert log_prob[0, 0] == -math.inf and torch.isfinite(log_prob[0, 1])
    (gradient,) = torch.autograd.grad(log_prob[0, 1], q.rate)
    assert torch.isfinite(gradient).all()
    with torch.no_grad():
        assert not q.log_prob(torch.tensor(0.5)).requires_grad


def test_inverse_cdf_samples_are_reparameterized_and_params_are_found():
    q, _, params, _ = build("exponential", 0.5, 2.0, with_cdf=False, requires_grad=True)
    torch.manual_seed(0)
    x = q.rsample((7,))
    assert x.shape == (7, 2)
    # x = -log(1 - u) / rate, so dx/drate = -x / rate.
    (gradient,) = torch.autograd.grad(x.sum(), params["rate"])
    torch.testing.assert_close(gradient, (-x / params["rate"]).sum(0).detach())
    assert any(p is params["rate"] for p in distribution_parameters(Independent(q, 1)))
    assert torch.isfinite(q.log_prob(x)).all()  # rsample's clamped u keeps its own tails finite


@pytest.mark.statistical
@pytest.mark.parametrize("name, seed", [("exponential", 0), ("gumbel", 1), ("weibull", 2),
                                        ("cauchy", 3)])
def test_inverse_cdf_samples_pass_ks(name, seed):
    q, reference, _, _ = build(name, 0.7, 1.6, with_cdf=False)
    torch.manual_seed(seed)
    assert not ks_rejects(q.sample((NUM_SAMPLES,)), reference.cdf)


# ------------------------------------------------------------------------------------------
# Deliberately wrong families must fail the same checks.


def test_wrong_cdf_fails_log_prob_check():
    family = FAMILIES["exponential"]
    rate = torch.tensor([0.5, 2.0])
    wrong = InverseCDF(family.quantile, {"rate": rate}, support=family.support,
                       cdf=lambda x, rate: family.cdf(x, 1.5 * rate))
    points = family.quantile(PROBABILITIES[:, None], rate)
    assert not log_prob_matches(wrong, Exponential(rate), points)


@pytest.mark.statistical
def test_wrong_families_fail_ks():
    torch.manual_seed(4)
    # The Gumbel quantile with the sign of the log flipped: the reflected (minimum) Gumbel.
    reflected = InverseCDF(lambda u, loc, scale: loc + scale * torch.log(-torch.log(u)),
                           {"loc": torch.tensor([0.0]), "scale": torch.tensor([1.0])})
    assert ks_rejects(reflected.sample((NUM_SAMPLES,)), Gumbel(0.0, 1.0, validate_args=False).cdf)
    assert ks_rejects(ChiSquare(3).sample((NUM_SAMPLES,)), lambda x: stats.chi2.cdf(x, 4))
    assert ks_rejects(LocationScale(Laplace(0.0, 1.0), torch.zeros(2), torch.ones(2))
                      .sample((NUM_SAMPLES,)), Laplace(0.0, 1.3).cdf)


# ------------------------------------------------------------------------------------------
# LocationScale.


@given(shift=st.floats(-3, 3), spread=st.floats(0.2, 3.0))
def test_location_scale_normal_equals_torch_normal(shift, spread):
    loc = torch.tensor([[shift, 0.0], [1.0, -shift]])
    scale = torch.tensor([spread, 1.5])
    q = LocationScale(Normal(0.0, 1.0), loc, scale)
    reference = Independent(Normal(loc, scale.expand(2, 2)), 1)
    assert q.batch_shape == (2,) and q.event_shape == (2,)
    x = torch.linspace(-4, 4, 30).reshape(-1, 1, 1).expand(30, 2, 2)
    assert log_prob_matches(q, reference, x)
    torch.testing.assert_close(q.entropy(), reference.entropy())
    torch.testing.assert_close(q.mean, reference.mean)
    torch.testing.assert_close(q.variance, reference.variance)
    assert q.expand((3, 2)).sample().shape == (3, 2, 2)


def test_location_scale_logistic_base_equals_scipy():
    # A base torch has only as a transformed uniform: logit(u), u ~ Uniform(0, 1).
    logistic = TransformedDistribution(Uniform(0.0, 1.0), [SigmoidTransform().inv])
    loc, scale = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.3])
    x = torch.linspace(-5, 5, 21)[:, None].expand(21, 2)
    expected = stats.logistic.logpdf(x.numpy(), loc.numpy(), scale.numpy()).sum(-1)
    torch.testing.assert_close(LocationScale(logistic, loc, scale).log_prob(x),
                               torch.from_numpy(expected))


@pytest.mark.statistical
def test_location_scale_student_t_and_laplace_pass_ks():
    loc, scale = torch.tensor([1.0, -2.0, 0.0]), torch.tensor([0.5, 2.0, 1.0])
    torch.manual_seed(5)
    samples = LocationScale(StudentT(3.0), loc, scale).sample((NUM_SAMPLES,))
    assert not ks_rejects(samples, lambda x: stats.t.cdf(x, 3.0, loc, scale))
    torch.manual_seed(6)
    samples = LocationScale(Laplace(0.0, 1.0), loc, scale).sample((NUM_SAMPLES,))
    assert not ks_rejects(samples, Laplace(loc, scale).cdf)


def test_location_scale_gradients_are_the_analytic_ones():
    loc = torch.tensor([1.0, -2.0], requires_grad=True)
    scale = torch.tensor([0.5, 2.0], requires_grad=True)
    torch.manual_seed(7)
    z = LocationScale(StudentT(4.0), loc, scale).rsample((11,))
    d_loc, d_scale = torch.autograd.grad(z.sum(), [loc, scale])
    # z = loc + scale * e: dz/dloc = 1 and dz/dscale = e = (z - loc) / scale.
    torch.testing.assert_close(d_loc, torch.full((2,), 11.0))
    torch.testing.assert_close(d_scale, ((z - loc) / scale).sum(0).detach())


# ------------------------------------------------------------------------------------------
# ChiSquare.


@given(df=st.integers(1, 20))
def test_chi_square_log_prob_equals_torch_and_scipy(df):
    x = torch.linspace(0.05, 40, 50)
    assert log_prob_matches(ChiSquare(df), Chi2(float(df)), x)
    expected = stats.chi2.logpdf(x.numpy(), df, scale=2.5)
    torch.testing.assert_close(ChiSquare(df, torch.tensor(2.5)).log_prob(x),
                               torch.from_numpy(expected))


@pytest.mark.statistical
def test_chi_square_samples_pass_ks():
    scale = torch.tensor([1.0, 2.5])
    torch.manual_seed(8)
    samples = ChiSquare(3, scale).sample((NUM_SAMPLES,))
    assert samples.shape == (NUM_SAMPLES, 2)
    assert not ks_rejects(samples, lambda x: stats.chi2.cdf(x / scale, 3))


def test_chi_square_gradient_flows_into_scale():
    scale = torch.tensor([0.5, 3.0], requires_grad=True)
    q = ChiSquare(4, scale)
    torch.manual_seed(9)
    x = q.rsample((6,))
    # x = scale * sum(e^2), so dx/dscale = sum(e^2) = x / scale.
    (gradient,) = torch.autograd.grad(x.sum(), scale)
    torch.testing.assert_close(gradient, (x / scale).sum(0).detach())
    torch.testing.assert_close(q.mean, 4 * scale)
    assert torch.autograd.grad(q.log_prob(x.detach()).sum(), scale)[0].isfinite().all()


# ------------------------------------------------------------------------------------------
# The full-covariance Gaussian.


@pytest.mark.statistical
def test_full_covariance_gaussian_moments():
    loc = torch.tensor([1.0, -2.0])
    scale_tril = torch.tensor([[1.0, 0.0], [0.5, 0.8]])
    covariance = scale_tril @ scale_tril.T
    torch.manual_seed(10)
    z = full_covariance_gaussian(loc, scale_tril).sample((NUM_SAMPLES,))
    sample_covariance = torch.cov(z.T)
    # z-scores of the two means and the three distinct covariances; for a Gaussian,
    # Var(S_ij) = (S_ii S_jj + S_ij^2) / n to first order.
    mean_z = (z.mean(0) - loc) / (covariance.diagonal() / NUM_SAMPLES).sqrt()
    variances = torch.outer(covariance.diagonal(), covariance.diagonal()) + covariance ** 2
    cov_z = (sample_covariance - covariance) / (variances / NUM_SAMPLES).sqrt()
    scores = torch.cat([mean_z, cov_z[torch.tril_indices(2, 2).unbind()]])
    assert scores.abs().max() < stats.norm.isf(ALPHA_PER_TEST / (2 * len(scores)))
    # The same check rejects a covariance off by 20%.
    wrong_z = (sample_covariance - 1.2 * covariance) / (variances / NUM_SAMPLES).sqrt()
    assert wrong_z.abs().max() > stats.norm.isf(ALPHA_PER_TEST / (2 * len(scores)))


def test_full_covariance_gaussian_gradients_flow_through_rsample():
    loc = torch.tensor([1.0, -2.0], requires_grad=True)
    scale_tril = torch.tensor([[1.0, 0.0], [0.5, 0.8]], requires_grad=True)
    torch.manual_seed(11)
    z = full_covariance_gaussian(loc, scale_tril).rsample((9,))
    d_loc, d_tril = torch.autograd.grad(z.sum(), [loc, scale_tril])
    # z = loc + L e: d sum(z) / dL_ij = sum_samples e_j for every i, j (torch multiplies by the
    # whole matrix, so its zero upper triangle gets a gradient too).
    e = torch.linalg.solve_triangular(scale_tril.detach(), (z - loc).detach().T, upper=False)
    torch.testing.assert_close(d_loc, torch.full((2,), 9.0))
    torch.testing.assert_close(d_tril, e.sum(1).expand(2, 2))


# ------------------------------------------------------------------------------------------
# Misuse.


@pytest.mark.parametrize("df", [2.5, 3.0, 0, -1, True])
def test_chi_square_rejects_non_positive_int_df(df):
    with pytest.raises(ValueError, match="df must be a positive int"):
        ChiSquare(df)


def test_location_scale_rejects_bases_it_cannot_reparameterize():
    with pytest.raises(ValueError, match="has no rsample"):
        LocationScale(Poisson(1.0), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="event shape"):
        LocationScale(Independent(Normal(torch.zeros(2), 1.0), 1), torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="last dimension"):
        LocationScale(Normal(0.0, 1.0), torch.tensor(0.0), torch.tensor(1.0))
    with pytest.raises(ValueError):  # torch's own check of arg_constraints: scale > 0
        LocationScale(Normal(0.0, 1.0), torch.zeros(2), -torch.ones(2))


@pytest.mark.parametrize("scale_tril, message", [
    ([[1.0, 0.3], [0.5, 0.8]], "lower triangular"),
    ([[1.0, 0.0], [0.5, -0.8]], "positive diagonal"),
    ([[1.0, 0.0, 0.0], [0.5, 0.8, 0.0]], "square"),
])
def test_full_covariance_gaussian_rejects_bad_scale_tril(scale_tril, message):
    with pytest.raises(ValueError, match=message):
        full_covariance_gaussian(torch.zeros(2), torch.tensor(scale_tril))


def test_inverse_cdf_rejects_param_names_that_clash():
    with pytest.raises(ValueError, match="clashes"):
        InverseCDF(lambda u, mean: u + mean, {"mean": torch.tensor(0.0)})


# ------------------------------------------------------------------------------------------------
# NormalWithNoise: torch's Normal, its standard noise given by the caller
# ------------------------------------------------------------------------------------------------


def test_normal_with_noise_draws_the_given_noise_and_is_torch_normal_otherwise():
    generator = torch.Generator().manual_seed(11)
    loc = torch.randn(3, 2, generator=generator, requires_grad=True)
    scale = torch.rand(3, 2, generator=generator).add(0.5).requires_grad_()
    noise = torch.randn(4, 3, 2, generator=generator)
    q = Independent(NormalWithNoise(loc, scale, noise), 1)
    z = q.rsample((4,))
    assert torch.equal(z, loc + noise * scale)  # Normal.rsample's own arithmetic
    reference = Independent(Normal(loc, scale), 1)
    assert torch.equal(q.log_prob(z), reference.log_prob(z))
    torch.testing.assert_close(kl_divergence(q, Independent(Normal(0.0, torch.ones(2)), 1)),
                               kl_divergence(reference, Independent(Normal(0.0, torch.ones(2)), 1)))
    grad = torch.autograd.grad(z.sum(), scale)[0]
    assert torch.equal(grad, noise.sum(0))  # reparameterized: dz/dscale = noise
    sampled = Independent(NormalWithNoise(loc, scale, noise), 1).sample((4,))
    assert not sampled.requires_grad and torch.equal(sampled, z.detach())


def test_normal_with_noise_refuses_a_wrong_shape_and_a_second_draw():
    q = NormalWithNoise(torch.zeros(3), torch.ones(3), torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"a draw of shape \(5, 3\).*needs noise of that shape, "
                                         r"got \(2, 3\)"):
        q.rsample((5,))
    q.rsample((2,))
    with pytest.raises(RuntimeError, match="its noise was drawn already"):
        q.sample((2,))
