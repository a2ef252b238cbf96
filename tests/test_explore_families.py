"""Tutorial 6's exact numbers (the chi-square control) against scipy's quadrature."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from conftest import z_threshold
from experiments.explore import families

CASES = [(2, 1.0), (10, families.best_log_scale(10)), (40, -1.0)]


def _by_quadrature(df, log_scale):
    """Both estimators' one-sample gradients in log s, integrated over c ~ chi2_df directly."""
    scale = math.exp(log_scale)
    alpha, beta = families.TARGET["concentration"], families.TARGET["rate"]

    def score_function(c):
        signal = (stats.gamma.logpdf(scale * c, alpha, scale=1 / beta)
                  - stats.chi2.logpdf(c, df) + log_scale)
        return signal * (c - df) / 2

    def pathwise(c):
        return alpha - beta * scale * c

    law = stats.chi2(df)
    out = {}
    for name, gradient in (("pathwise", pathwise), ("score_function", score_function)):
        first = law.expect(gradient, epsabs=1e-11, epsrel=1e-10)
        second = law.expect(lambda c: gradient(c) ** 2, epsabs=1e-11, epsrel=1e-10)
        out[name] = (first, second - first ** 2)
    return out


@pytest.mark.parametrize("df, log_scale", CASES)
def test_closed_form_variances_and_means_match_quadrature(df, log_scale):
    exact = families.exact_variances(df, log_scale)
    quadrature = _by_quadrature(df, log_scale)
    for name in ("pathwise", "score_function"):
        mean, variance = quadrature[name]
        assert abs(mean - families.exact_gradient(df, log_scale)) < 1e-8
        assert abs(exact[name] - variance) < 1e-8 * max(1.0, variance)
    assert abs(exact["score_function_mean"] - families.exact_gradient(df, log_scale)) < 1e-9


def test_exact_elbo_is_minus_kl_by_quadrature_and_zero_where_q_is_p():
    for df, log_scale in ((3, 0.5), (40, -1.0)):
        scale = math.exp(log_scale)
        q = stats.chi2(df, scale=scale)
        alpha, beta = families.TARGET["concentration"], families.TARGET["rate"]
        elbo, _ = integrate.quad(
            lambda z: q.pdf(z) * (stats.gamma.logpdf(z, alpha, scale=1 / beta) - q.logpdf(z)),
            0, np.inf, epsabs=1e-12, epsrel=1e-11, limit=200)
        assert abs(families.exact_elbo(df, log_scale) - elbo) < 1e-8
    # 0.5 chi2_6 is Gamma(3, 1): no gap, and the score function has nothing left to vary.
    assert abs(families.exact_elbo(6, math.log(0.5))) < 1e-12
    assert families.exact_variances(6, math.log(0.5))["score_function"] == 0.0
    assert families.exact_variances(5, families.best_log_scale(5))["score_function"] > 0.1


def test_the_best_scale_is_the_maximum_of_the_elbo():
    for df in (1, 4, 20):
        best = families.best_log_scale(df)
        assert families.exact_gradient(df, best) == pytest.approx(0, abs=1e-12)
        step = 1e-4
        slope = (families.exact_elbo(df, best + step)
                 - families.exact_elbo(df, best - step)) / (2 * step)
        assert abs(slope) < 1e-6
        assert families.exact_elbo(df, best) > families.exact_elbo(df, best + 0.1)


def test_the_curves_are_the_closed_forms_at_every_integer_df():
    curves = families._exact_curves(tuple(families.DEGREES), (3.0, 1.0))
    for df in (1, 7, 40):
        exact = families.exact_variances(df, families.best_log_scale(df))
        assert curves["score_function"][df - 1] == pytest.approx(exact["score_function"])
        assert curves["pathwise"][df - 1] == pytest.approx(18 / df)


@pytest.mark.statistical
def test_measured_gradients_match_the_exact_mean_and_variance_and_a_wrong_variance_fails():
    # Seed fixed; the threshold spends this test's share of the suite's false-positive rate over
    # 2 estimators x (mean, variance) at one df.
    threshold = z_threshold(4)
    df, log_scale = 3, 0.5
    exact = families.exact_variances(df, log_scale)
    measured = families.measured_variances(df, log_scale, 40000, seed=11)
    for name, stat in measured.items():
        assert abs(stat.z.item()) < threshold  # the mean is the exact gradient
        assert abs(stat.variance.item() - exact[name]) / stat.variance_se.item() < threshold
    # The same check rejects the variance of another df (the pathwise one's at df = 4).
    wrong = families.exact_variances(4, log_scale)["pathwise"]
    stat = measured["pathwise"]
    assert abs(stat.variance.item() - wrong) / stat.variance_se.item() > threshold
