"""Tutorial 10's exact numbers against independent computations: the probit ELBO by Gauss-Hermite
against the library's trapezoidal rule over q's noise and scipy's adaptive quadrature, the grid
posterior against a conjugate model's closed forms, the check's power against scipy's noncentral
t, and the resampled checks against the check itself."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch.distributions import Independent, MultivariateNormal, Normal

from estimators import ESTIMATORS
from estimators.diagnostics import replicate_gradients
from estimators.testing import REFERENCE_PROBLEMS, gaussian_grid_problem, threshold
from experiments.explore import your_own as yo

F64 = torch.float64
COVARIATE = torch.tensor([-0.4, -1.3, 0.8, 0.1, 1.1, -0.7, 0.5], dtype=F64)
DISTRESS = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0], dtype=F64)
PRIOR_SCALE = 1.7


class Probit:
    """The tutorial's model, written again from the formula, for the library's exact route."""

    def log_joint(self, z):
        predictor = z[..., :1] + z[..., 1:] * COVARIATE
        likelihood = torch.special.log_ndtr((2 * DISTRESS - 1) * predictor).sum(-1)
        return Normal(0.0, PRIOR_SCALE).log_prob(z).sum(-1) + likelihood


def _build(lam, theta):
    return Probit(), Independent(Normal(lam["loc"], lam["log_scale"].exp()), 1)


def test_probit_elbo_and_its_gradient_equal_the_trapezoidal_rule_over_q_noise():
    lam = {"loc": torch.tensor([0.3, -0.9], dtype=F64),
           "log_scale": torch.tensor([-0.6, 0.1], dtype=F64)}
    exact = gaussian_grid_problem("probit", _build, lam, {}).exact()
    leaves = {n: v.clone().requires_grad_(True) for n, v in lam.items()}
    value = yo.probit_elbo(leaves["loc"], leaves["log_scale"], COVARIATE, DISTRESS, PRIOR_SCALE)
    grads = torch.autograd.grad(value, list(leaves.values()))
    assert abs(value.item() - exact.value) < 1e-10
    for grad, name in zip(grads, leaves):
        torch.testing.assert_close(grad, exact.gradient["lambda"][name], rtol=0, atol=1e-9)


def test_one_expected_log_phi_equals_adaptive_quadrature():
    # One data point, y = 0, and q's predictor N(m, s^2): E log Phi(-(m + s e)) by scipy.quad.
    loc = torch.tensor([0.4, 0.0], dtype=F64)
    log_scale = torch.tensor([math.log(0.8), -30.0], dtype=F64)
    covariate, distress = torch.tensor([0.0], dtype=F64), torch.tensor([0.0], dtype=F64)
    value = yo.probit_elbo(loc, log_scale, covariate, distress, prior_scale=1.0).item()
    rest = (-math.log(2 * math.pi) - (0.4 ** 2 + 0.8 ** 2 + math.exp(-60)) / 2
            + math.log(2 * math.pi * math.e) + math.log(0.8) - 30.0)
    expected, _ = integrate.quad(lambda e: stats.norm.logcdf(-(0.4 + 0.8 * e)) * stats.norm.pdf(e),
                                 -np.inf, np.inf, epsabs=1e-13)
    assert abs(value - rest - expected) < 1e-10


def test_probit_elbo_on_a_batch_equals_the_loop_over_it():
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(4, 3, 2, generator=generator, dtype=F64)
    log_scale = 0.3 * torch.randn(4, 3, 2, generator=generator, dtype=F64)
    batched = yo.probit_elbo(loc, log_scale, COVARIATE, DISTRESS, PRIOR_SCALE)
    looped = torch.stack([torch.stack([yo.probit_elbo(loc[i, j], log_scale[i, j], COVARIATE,
                                                      DISTRESS, PRIOR_SCALE) for j in range(3)])
                          for i in range(4)])
    torch.testing.assert_close(batched, looped, rtol=0, atol=1e-12)


def test_the_best_gaussian_is_a_stationary_point_below_the_evidence():
    best = yo.best_gaussian(COVARIATE, DISTRESS, PRIOR_SCALE)
    lam = {"loc": torch.tensor(best["loc"], dtype=F64),
           "log_scale": torch.tensor(np.log(best["scale"]), dtype=F64)}
    exact = gaussian_grid_problem("probit_best", _build, lam, {}).exact()  # an independent route
    assert abs(exact.value - best["elbo"]) < 1e-9
    for grad in exact.gradient["lambda"].values():
        assert grad.abs().max() < 1e-6
    evidence = yo.grid_posterior(Probit().log_joint, (-6, -6), (6, 6), points=401)
    assert 0 < evidence["log_evidence"] - best["elbo"] < 1.0


def test_grid_posterior_of_a_conjugate_model_matches_its_closed_forms():
    # z ~ N(0, diag(1.5^2, 0.7^2)), x | z ~ N(z, 0.5^2 I): evidence and posterior in closed form.
    prior_sd, noise_sd = torch.tensor([1.5, 0.7], dtype=F64), 0.5
    x = torch.tensor([0.9, -0.4], dtype=F64)

    def log_joint(z):
        return (Normal(0.0, prior_sd).log_prob(z) + Normal(z, noise_sd).log_prob(x)).sum(-1)

    found = yo.grid_posterior(log_joint, (-4, -4), (4, 4), points=301)
    evidence = MultivariateNormal(torch.zeros(2, dtype=F64),
                                  torch.diag(prior_sd ** 2 + noise_sd ** 2)).log_prob(x)
    precision = 1 / prior_sd ** 2 + 1 / noise_sd ** 2
    assert abs(found["log_evidence"] - evidence.item()) < 1e-9
    np.testing.assert_allclose(found["mean"], (x / noise_sd ** 2 / precision).numpy(), atol=1e-9)
    np.testing.assert_allclose(found["sd"], (1 / precision.sqrt()).numpy(), atol=1e-9)
    assert found["edge"] < 1e-8


def test_grid_posterior_refuses_a_model_that_is_not_vectorised():
    with pytest.raises(ValueError, match="vectorised over the leading dimensions"):
        yo.grid_posterior(lambda z: z.sum(), (-1, -1), (1, 1), points=11)


def test_highest_density_levels_of_a_gaussian_are_its_ellipses():
    axis = np.linspace(-7, 7, 701)
    za, zb = np.meshgrid(axis, axis, indexing="ij")
    density = np.exp(-0.5 * (za ** 2 + zb ** 2))
    one, two = yo.highest_density_levels(density, (1 - math.exp(-0.5), 1 - math.exp(-2.0)))
    assert abs(one - math.exp(-0.5)) < 5e-3 and abs(two - math.exp(-2.0)) < 5e-3


@pytest.mark.parametrize("replicates", [34, 100, 1000])
def test_rejection_probability_equals_the_noncentral_t(replicates):
    count, rate = 6, 1e-3
    cutoff = threshold(count, rate, replicates)
    shift = np.array([0.0, 1.0, 3.0, 4.5, 6.0])
    expected = (stats.nct.sf(cutoff, replicates - 1, shift)
                + stats.nct.cdf(-cutoff, replicates - 1, shift))
    assert np.isfinite(expected).all()  # where scipy's nct answers, it is the reference
    found = yo.rejection_probability(shift / math.sqrt(replicates), replicates, count, rate)
    np.testing.assert_allclose(found, expected, rtol=1e-6, atol=1e-12)
    assert abs(found[0] - rate / count) < 1e-9  # no bias: the per-coordinate false-positive rate


def test_the_detectable_bias_is_detected_nine_times_in_ten():
    for replicates in (100, 4000):
        power = yo.rejection_probability(yo.detectable_bias(replicates), replicates)[0]
        assert 0.88 < power < 0.91


def test_the_pool_is_the_registry_estimators_gradients_standardised():
    pool = yo._pool()
    assert abs(pool.mean()) < 1e-12 and abs(pool.std() - 1) < 1e-12
    problem = REFERENCE_PROBLEMS[yo.POOL_PROBLEM]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        again = replicate_gradients(ESTIMATORS[yo.POOL_ESTIMATOR], problem.build, problem.lam,
                                    problem.theta, num_replicates=yo.POOL_SIZE, num_samples=1)
    values = again.lambda_["loc"][:, yo.POOL_COORDINATE].numpy()
    np.testing.assert_allclose(pool, (values - values.mean()) / values.std(), atol=1e-12)


def test_resampled_checks_never_reject_no_bias_at_r_4000_and_always_reject_a_large_one():
    # At zero bias each check rejects with probability about alpha / n = 1.7e-4, so that 200
    # checks see none (probability 0.97, the resampling seed fixed); five sd at R = 200 is
    # caught always (the detectable bias there is 0.5 sd).
    fraction, se = yo.measured_rejection(4000, [0.0], groups=200)
    assert fraction[0] == 0.0 and se[0] > 0  # the floor keeps an error bar at 0 and 1
    fraction, _ = yo.measured_rejection(200, [5.0], groups=200)
    assert fraction[0] == 1.0
