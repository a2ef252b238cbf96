"""Tutorial 1's exact curves against direct computation."""

import math

import numpy as np
from scipy import integrate, stats

from experiments.explore import maximum_likelihood as ml


def test_kl_to_a_gaussian_in_closed_form_equals_the_kl_by_quadrature():
    for mu, sigma in ((0.1, 1.6), (-1.0, 0.7), (2.0, 3.0)):
        direct, _ = integrate.quad(
            lambda x: math.exp(ml.log_p(np.array(x)))
            * (ml.log_p(np.array(x)) - stats.norm.logpdf(x, mu, sigma)), -np.inf, np.inf)
        assert abs(ml.kl_to_gaussian(mu, sigma) - direct) < 1e-8


def test_the_best_gaussian_matches_the_moments_of_p():
    mean, var = ml.moments()
    grid = np.linspace(mean - 1, mean + 1, 201)
    values = ml.kl_to_gaussian(grid[:, None], np.sqrt(var) * np.linspace(0.8, 1.2, 201)[None, :])
    i, j = np.unravel_index(np.argmin(values), values.shape)
    assert i == 100 and j == 100


def test_the_average_log_ratio_by_sufficient_statistics_equals_the_direct_average():
    x = ml.sample_p(40, np.random.default_rng(3))
    mus = np.array([-1.0, 0.2, 1.5])
    direct = [np.mean(stats.norm.logpdf(x, mu, 1.3) - ml.log_p(x)) for mu in mus]
    np.testing.assert_allclose(ml.average_log_ratio(x, mus, 1.3), direct, rtol=1e-12)


def test_the_excess_constant_is_one_for_a_gaussian_p(monkeypatch):
    monkeypatch.setattr(ml, "TRUE_P", {"weights": (1.0,), "locs": (0.5,), "scales": (2.0,)})
    assert abs(ml.excess_constant() - 1.0) < 1e-8
