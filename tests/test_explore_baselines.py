"""Tutorial 4's exact variances against independent computations.

On the conjugate model the learning signal f and the scores are polynomials in the standard
noise of each sample, so Gauss-Hermite rules integrate them exactly: one-dimensional for the
moments, a tensor product over the K samples for the variance of the leave-one-out estimator
itself (no formula involved). The statistical check spends a 1/STATISTICAL_BUDGET share of the
suite's FALSE_POSITIVE_RATE, with a fixed seed and a wrong twin.
"""

import itertools
import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss
from torch.distributions import Independent, Normal

from conftest import z_threshold
from estimators import ESTIMATORS
from estimators.diagnostics import gradient_statistics, replicate_gradients
from experiments.explore import baselines as bx
from experiments.explore import score_function as sfx

X = 0.8
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def signal_and_scores(e, mu, sigma, x=X, shift=0.0):
    """f and the scores (d/dmu, d/dsigma) at z = mu + sigma e, for q = N(mu, sigma^2)."""
    z = mu + sigma * e
    log_joint = (-HALF_LOG_2PI - z ** 2 / 2) + (-HALF_LOG_2PI - (x - z) ** 2 / 2) + shift
    f = log_joint - (-HALF_LOG_2PI - math.log(sigma) - e ** 2 / 2)
    return f, np.stack([e / sigma, (e ** 2 - 1) / sigma], -1)


def hermite(nodes=12):
    e, w = hermegauss(nodes)
    return e, w / math.sqrt(2 * math.pi)


def hermite_moments(mu, sigma, shift=0.0):
    e, w = hermite()
    f, s = signal_and_scores(e, mu, sigma, shift=shift)
    f = f[:, None]
    return {"G": w @ f[:, 0], "B": w @ f[:, 0] ** 2, "g": w @ (f * s), "A": w @ (f * s) ** 2,
            "C": w @ s ** 2, "F": w @ (f * s ** 2)}


POINTS = [(1.5, 0.6), (0.0, 1.0), (-2.0, 1.7)]


@pytest.mark.parametrize("offset, scale", POINTS)
@pytest.mark.parametrize("shift", [0.0, -10.0])
def test_moments_equal_gauss_hermite(offset, scale, shift):
    mu, sigma = (float(v) for v in sfx.q_at(offset, scale))
    moments = bx.shifted(bx.signal_moments(offset, scale), shift)
    for key, value in hermite_moments(mu, sigma, shift).items():
        np.testing.assert_allclose(moments[key], value, rtol=1e-8, atol=1e-9, err_msg=key)


@pytest.mark.parametrize("num_samples", [2, 3])
@pytest.mark.parametrize("offset, scale", [(1.5, 0.6), (-2.0, 1.7)])
def test_the_leave_one_out_variance_equals_the_estimators_own_variance(num_samples, offset,
                                                                       scale):
    # E over K independent noises of the estimate (1/K) sum_k (f_k - mean_{j != k} f_j) s_k, squared
    mu, sigma = (float(v) for v in sfx.q_at(offset, scale))
    e, w = hermite(10)
    first = np.zeros(2)
    second = np.zeros(2)
    for index in itertools.product(range(len(e)), repeat=num_samples):
        f, s = signal_and_scores(e[list(index)], mu, sigma)
        baseline = (f.sum() - f) / (num_samples - 1)
        estimate = ((f - baseline)[:, None] * s).mean(0)
        weight = np.prod(w[list(index)])
        first += weight * estimate
        second += weight * estimate ** 2
    moments = bx.signal_moments(offset, scale)
    np.testing.assert_allclose(first, moments["g"], rtol=1e-8)
    np.testing.assert_allclose(bx.loo_variance(moments, num_samples), second - first ** 2,
                               rtol=1e-8)


def test_leave_one_out_tends_to_the_elbo_as_baseline_and_refuses_one_sample():
    moments = bx.signal_moments(1.5, 0.6)
    big = 10 ** 7
    np.testing.assert_allclose(big * bx.loo_variance(moments, big),
                               big * bx.constant_variance(moments, moments["G"], big), rtol=1e-5)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        bx.loo_variance(moments, 1)


def test_the_trace_optimal_constant_minimises_the_total_variance():
    moments = bx.signal_moments(1.5, 0.6)
    best = bx.trace_optimal_baseline(moments)
    grid = best + np.linspace(-1, 1, 201)
    totals = [bx.constant_variance(moments, b, 1).sum() for b in grid]
    assert int(np.argmin(totals)) == 100


def test_the_amortised_elbo_equals_gauss_hermite():
    x = torch.tensor([-2.0, 0.3, 1.7], dtype=torch.float64)
    weight, bias, log_scale = (torch.tensor([v], dtype=torch.float64)
                               for v in (0.2, 0.3, math.log(0.9)))
    elbo = bx.exact_amortised_elbo(x, weight, bias, log_scale).numpy()
    e, w = hermite()
    for i, xi in enumerate(x.tolist()):
        f, _ = signal_and_scores(e, 0.2 * xi + 0.3, 0.9, x=xi)
        np.testing.assert_allclose(elbo[i], w @ f, rtol=1e-10)


@pytest.fixture(scope="module")
def measured_loo():
    """score_function_loo, K = 3, at q = (offset 1.5, scale 0.6); R = 50,000, seed 7."""
    mu, sigma = (float(v) for v in sfx.q_at(1.5, 0.6))
    start = {"loc": torch.tensor([mu], dtype=torch.float64),
             "scale": torch.tensor([sigma], dtype=torch.float64)}

    def build(lam, theta):
        return sfx.model(), Independent(Normal(lam["loc"], lam["scale"]), 1)

    torch.manual_seed(7)
    grads = replicate_gradients(ESTIMATORS["score_function_loo"], build, start,
                                num_replicates=50_000, num_samples=3)
    return [gradient_statistics(grads.lambda_[p].squeeze(-1)) for p in ("loc", "scale")]


def _z(rows, exact):
    return np.array([(row.variance.item() - value) / row.variance_se.item()
                     for row, value in zip(rows, exact)])


@pytest.mark.statistical
def test_the_measured_leave_one_out_variance_equals_the_formula(measured_loo):
    z = _z(measured_loo, bx.loo_variance(bx.signal_moments(1.5, 0.6), 3))
    assert np.abs(z).max() < z_threshold(z.size), z


@pytest.mark.statistical
def test_the_same_check_rejects_the_variance_without_a_baseline(measured_loo):
    # twin: the plain score function's exact variance at the same K
    z = _z(measured_loo, bx.constant_variance(bx.signal_moments(1.5, 0.6), 0.0, 3))
    assert np.abs(z).max() > z_threshold(z.size), z
