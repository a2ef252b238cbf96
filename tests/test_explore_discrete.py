"""Tutorial 8's exact numbers on REBAR's toy against independent computations."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, special, stats
from torch.distributions import Bernoulli, Independent, RelaxedBernoulli

from estimators import ESTIMATORS
from experiments.discrete import ToyObjective
from experiments.explore import discrete as dx

from conftest import z_threshold


def test_the_closed_form_gradient_equals_enumeration():
    for target in (0.45, 0.499, 0.2):
        logits = torch.tensor([-2.5, -0.3, 0.0, 1.7], requires_grad=True)
        model = ToyObjective(torch.tensor(target), logits, "bernoulli")
        value = ESTIMATORS["enumeration"](model, Independent(Bernoulli(logits=logits), 1), 1)
        (grad,) = torch.autograd.grad(value.surrogate.sum(), logits)
        np.testing.assert_allclose(grad.numpy(), dx.exact_gradient(logits.detach().numpy(), target),
                                   atol=1e-15)
        np.testing.assert_allclose(value.elbo.item(), dx.objective(logits.detach().numpy(),
                                                                   target).sum(), atol=1e-14)


def _relaxed_by_quad(name, theta, tau, target=dx.TARGET):
    """Mean and second moment of one sample's gradient, integrated over z = theta + logistic
    noise with scipy's adaptive quad, from the formulas: d/d theta f(y), y = sigma(z / tau), is
    2 (y - t) y (1 - y) / tau (Gumbel-softmax); straight-through puts b = 1[z > 0] for y."""

    def gradient(z):
        y = special.expit(z / tau)
        value = y if name == "gumbel_softmax" else float(z > 0)
        return 2 * (value - target) * y * (1 - y) / tau

    moments = []
    for power in (1, 2):
        parts = [integrate.quad(lambda z: gradient(z) ** power * stats.logistic.pdf(z, loc=theta),
                                low, high, epsabs=1e-13, epsrel=1e-12, limit=500)[0]
                 for low, high in ((-np.inf, 0.0), (0.0, np.inf))]
        moments.append(sum(parts))
    return moments


@pytest.mark.parametrize("name", dx.RELAXED)
def test_the_relaxations_moments_equal_adaptive_quadrature_of_their_formulas(name):
    for theta in (-2.0, 0.7):
        taus = np.array([0.05, 0.5, 3.0])
        mean, variance = dx.relaxed_moments(name, theta, taus, num_samples=1)
        for i, tau in enumerate(taus):
            first, second = _relaxed_by_quad(name, theta, tau)
            assert abs(mean[i] - first) < 1e-9, (theta, tau)
            assert abs(variance[i] - (second - first ** 2)) < 1e-8 * max(1.0, second), (theta, tau)


def test_the_relaxations_moments_for_many_temperatures_equal_one_at_a_time():
    taus = [0.1, 0.4, 2.0]
    together = dx.relaxed_moments("straight_through", -1.0, taus)
    for i, tau in enumerate(taus):
        alone = dx.relaxed_moments("straight_through", -1.0, [tau])
        np.testing.assert_allclose([together[0][i], together[1][i]], [alone[0][0], alone[1][0]],
                                   rtol=1e-12)
    # K independent samples per estimate: the same mean, 1/K of one sample's variance.
    single = dx.relaxed_moments("straight_through", -1.0, taus, num_samples=1)
    np.testing.assert_allclose(together[0], single[0], rtol=1e-12)
    np.testing.assert_allclose(together[1] * dx.NUM_SAMPLES, single[1], rtol=1e-12)


def test_the_exact_variances_equal_closed_forms():
    """score_function (K = 2 independent samples) and disarm (one antithetic pair) in closed
    form: for disarm the pair disagrees with probability 2 (1 - m), m = max(p, 1 - p), and the
    estimate is then (f(1) - f(0)) m / 2, so Var = (f(1) - f(0))^2 m^2 (1 - m) (m - 1/2)."""
    thetas = np.array([-2.0, -0.5, 0.0, 1.3])
    t = dx.TARGET
    f0, f1, p = t ** 2, (1 - t) ** 2, special.expit(thetas)
    mean = p * (1 - p) * (f1 - f0)
    second = p * (f1 * (1 - p)) ** 2 + (1 - p) * (f0 * p) ** 2
    _, variance = dx.unbiased_moments("score_function", thetas, nodes=20)
    np.testing.assert_allclose(variance, (second - mean ** 2) / 2, rtol=1e-10)
    m = np.maximum(p, 1 - p)
    _, variance = dx.unbiased_moments("disarm", thetas, nodes=20)
    np.testing.assert_allclose(variance, (f1 - f0) ** 2 * m ** 2 * (1 - m) * (m - 0.5),
                               atol=1e-15)


def test_the_relaxed_distribution_function_integrates_torchs_density():
    for theta, tau in ((-2.0, 0.5), (0.5, 2.0)):
        density = RelaxedBernoulli(torch.tensor(tau), logits=torch.tensor(theta))
        for y in (0.2, 0.6):
            mass, _ = integrate.quad(lambda v: density.log_prob(torch.tensor(v)).exp().item(),
                                     0.0, y, epsabs=1e-11, limit=200)
            # The mass below 1e-300 is beyond quad's reach and negligible at these tau.
            assert abs(dx.relaxed_cdf(y, theta, tau) - mass) < 1e-7


def test_the_module_target_is_read_at_call_time(monkeypatch):
    monkeypatch.setattr(dx, "TARGET", 0.499)
    assert abs(dx.exact_gradient(0.0) - 0.25 * 0.002) < 1e-15
    assert abs(dx.relaxed_moments("gumbel_softmax", 0.0, [0.01])[0][0] - 0.0005) < 1e-5


def test_bad_arguments_are_refused_in_one_line():
    with pytest.raises(ValueError, match="name must be one of gumbel_softmax, straight_through"):
        dx.relaxed_moments("rebar", 0.0, [0.5])
    with pytest.raises(ValueError, match="temperatures must be > 0"):
        dx.relaxed_moments("gumbel_softmax", 0.0, [0.5, 0.0])


@pytest.mark.statistical
def test_measured_relaxation_matches_its_exact_mean_not_the_true_gradient():
    """Gumbel-softmax at theta = -2, tau = 0.5, 20000 estimates (seed 3): its mean agrees with the
    quadrature (1 comparison); the true gradient, the wrong target for a biased estimator, is
    rejected by the same test."""
    threshold = z_threshold(1)
    values = dx.measure("gumbel_softmax", -2.0, 20000, seed=3, temperature=0.5)
    se = values.std(ddof=1) / math.sqrt(values.size)
    expected, _ = dx.relaxed_moments("gumbel_softmax", -2.0, [0.5])
    assert abs(values.mean() - expected[0]) / se < threshold
    assert abs(values.mean() - dx.exact_gradient(-2.0)) / se > threshold
