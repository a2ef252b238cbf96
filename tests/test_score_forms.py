"""The score-forms study: the seed's score function and the autodiff form, exact and measured.

Closed forms: on the conjugate model z ~ N(0, 1), x | z ~ N(z, 1) with q = N(mu, sigma^2), the
learning signal f = log p(x, z) - log q(z) is a quadratic polynomial in the standard noise e of
z = mu + sigma e, and the scores are e / sigma and (e^2 - 1) / sigma; every moment the exact
variances need is the Gaussian expectation of a polynomial in e (E e^n = (n - 1)!! for even n),
an independent computation of the study's quadrature.

Statistical checks run with fixed seeds; each test spends a 1/STATISTICAL_BUDGET share of the
suite's FALSE_POSITIVE_RATE (conftest.z_threshold, Bonferroni across its comparisons), and each has
a wrong twin that the same check rejects.
"""

import math

import numpy as np
import pytest
import torch
from numpy.polynomial import Polynomial

from conftest import z_threshold
from estimators import ESTIMATORS
from experiments import score_forms as sf
from experiments.__main__ import main
from experiments.quadrature import score_function_moments


def gaussian_expectation(poly: Polynomial) -> float:
    """E[poly(e)], e ~ N(0, 1): sum_n c_n (n - 1)!! over even n."""
    return sum(c * math.prod(range(n - 1, 0, -2)) for n, c in enumerate(poly.coef) if n % 2 == 0)


def closed_form_moments(x, mu, sigma, score_of_scale=None):
    """(g, fs2, f_s2, s2), each (d/dmu, d/dsigma), by polynomials in e."""
    e = Polynomial([0.0, 1.0])
    z = mu + sigma * e
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    f = (-half_log_2pi - z ** 2 / 2) + (-half_log_2pi - (x - z) ** 2 / 2) \
        + (half_log_2pi + math.log(sigma) + e ** 2 / 2)
    scores = [e / sigma, score_of_scale or (e ** 2 - 1) / sigma]
    moments = {"g": [f * s for s in scores], "fs2": [(f * s) ** 2 for s in scores],
               "f_s2": [f * s ** 2 for s in scores], "s2": [s ** 2 for s in scores]}
    return {key: np.array([gaussian_expectation(p) for p in polys]) for key, polys in moments.items()}


@pytest.mark.parametrize("x, mu, sigma", [(0.8, 0.2, 0.6), (0.8, -1.5, 1.3), (-2.0, 0.4, 0.3)])
def test_quadrature_moments_equal_closed_forms(x, mu, sigma):
    model = sf.conjugate_model(sf.Config(x=x))
    quadrature = score_function_moments(model.log_joint, mu, sigma)
    closed = closed_form_moments(x, mu, sigma)
    for key in closed:
        np.testing.assert_allclose(quadrature[key][0], closed[key], rtol=1e-9, atol=1e-10,
                                   err_msg=key)
    # twin: the scale's score without its -1 (e^2 / sigma) is caught at the same tolerance
    wrong = closed_form_moments(x, mu, sigma, score_of_scale=Polynomial([0.0, 0.0, 1.0 / sigma]))
    assert not np.allclose(quadrature["fs2"][0], wrong["fs2"], rtol=1e-9, atol=1e-10)


def test_the_forms_differ_by_a_baseline_of_one_and_the_gradient_is_the_elbos():
    # E[f s] is the ELBO gradient (the conjugate model's closed form); the autodiff form's
    # variance is the seed's with b = 1, and a shift c of log p is a baseline of -c.
    config = sf.Config()
    model = sf.conjugate_model(config)
    loc = torch.tensor([0.2], requires_grad=True)
    scale = torch.tensor([0.6], requires_grad=True)
    exact = torch.autograd.grad(model.exact_elbo(loc, scale), [loc, scale])
    variances = sf.exact_variances(model.log_joint, 0.2, 0.6, shifts=(0.0, 1.0))
    np.testing.assert_allclose(variances["gradient"][0], [g.item() for g in exact], rtol=1e-9)
    # log p + 1 with the autodiff form's baseline 1 is the seed's form on log p
    np.testing.assert_allclose(variances["score_function_autodiff"][1],
                               variances["score_function"][0], rtol=1e-12)
    assert not np.allclose(variances["score_function_autodiff"][0],
                           variances["score_function"][0], rtol=1e-3)


STAT_CONFIG = sf.Config(num_replicates=100_000)


@pytest.fixture(scope="module")
def measured():
    """Both forms at q = N(0.2, 0.6^2), x = 0.8, K = 1, R = 100,000; seed 5."""
    model = sf.conjugate_model(STAT_CONFIG)
    exact = sf.exact_variances(model.log_joint, 0.2, 0.6)
    torch.manual_seed(5)
    rows = {name: sf.measure(name, model, np.array([0.2]), 0.6, STAT_CONFIG, exact["gradient"])
            for name in sf.FORMS}
    return rows, exact


def _z(measured, swap=False):
    rows, exact = measured
    out = []
    for name in sf.FORMS:
        other = [n for n in sf.FORMS if n != name][0] if swap else name
        for i, p in enumerate(sf.PARAMETERS):
            out.append(sf.agreement({k: np.asarray(v) for k, v in rows[name][p].items()},
                                    exact[other][:, i]))
    return np.concatenate(out)


@pytest.mark.statistical
def test_per_replicate_variances_equal_their_quadrature_values(measured):
    # 2 forms x 2 parameters: the single-sample variance of each against its exact value.
    z = _z(measured)
    assert np.abs(z).max() < z_threshold(z.size), z


@pytest.mark.statistical
def test_the_variance_check_tells_the_two_forms_apart(measured):
    # twin: each form's variance against the other form's exact value (3 times larger or smaller)
    z = _z(measured, swap=True)
    assert np.abs(z).min() > z_threshold(z.size), z


def test_the_study_measures_the_registry_entries():
    assert set(sf.FORMS) <= set(ESTIMATORS)


TINY = ["--set", "num_replicates=300", "--set", "num_points=3", "--set", "num_curve_points=7",
        "--set", "num_shift_points=2"]


def test_end_to_end_writes_results_and_figures(tmp_path, capsys):
    assert main(["score-forms", "--quick", "--out", str(tmp_path), *TINY]) == 0
    results = tmp_path / "results" / "score-forms-quick.json"
    from experiments.common import load_results

    text = sf.summary(load_results(results))
    assert "score_function_autodiff" in text and "largest |z|" in text
    capsys.readouterr()
    assert sf.main([str(results)]) == 0
    assert capsys.readouterr().out.strip() == text
    for suffix in ("png", "pdf"):
        assert (tmp_path / "figures" / f"score-forms-quick.{suffix}").stat().st_size > 0


def test_bad_config_fails_with_one_line_naming_the_field(tmp_path):
    with pytest.raises(SystemExit, match="narrow_scale must be > 0") as info:
        main(["score-forms", "--quick", "--out", str(tmp_path), "--set", "narrow_scale=0"])
    assert "\n" not in str(info.value.code)
