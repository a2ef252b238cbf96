"""The cost-functions study: exact variances against closed forms, Monte Carlo against exact.

Closed forms: for x ~ N(mu, sigma^2) and a cost h with a closed-form mean H(mu, sigma) = E[h(x)],
the score moments follow from derivatives of H (differentiate under the integral):

    E[h s_mu^2]    = d^2H/dmu^2 + H / sigma^2,
    E[h s_sigma^2] = d^2H/dsigma^2 + 3 d^2H/dmu^2 + 2 H / sigma^2,

with s_mu = e / sigma, s_sigma = (e^2 - 1) / sigma, e = (x - mu) / sigma. Autograd of the closed
forms of E[f], E[f^2] and E[f'^2] then gives every exact variance the study computes by quadrature:
an independent computation of the same numbers.

Statistical checks run with fixed seeds; each test spends a 1/STATISTICAL_BUDGET share of the
suite's FALSE_POSITIVE_RATE (conftest.z_threshold, Bonferroni across its comparisons), and each has
a negative twin: a wrong exact value fails the same check.
"""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from estimators.measure_valued import standard_weak_derivative_pairs
from experiments import cost_functions as cf
from experiments.__main__ import main
from conftest import z_threshold

LOC, SCALE = 1.0, 1.0


# --------------------------------------------------------------------------------------------
# Closed forms of E[f], E[f^2], E[f'^2] under N(mu, sigma^2), as torch functions of (mu, sigma)
# --------------------------------------------------------------------------------------------


def _gaussian_bump_mean(mu, sigma, c):
    """E[exp(-c x^2)], x ~ N(mu, sigma^2): a Gaussian integral."""
    spread = 1 + 2 * c * sigma ** 2
    return spread.rsqrt() * torch.exp(-c * mu ** 2 / spread)


def _x_squared_bump_mean(mu, sigma, c):
    """E[x^2 exp(-c x^2)] = -d/dc E[exp(-c x^2)]."""
    c = torch.as_tensor(c, dtype=mu.dtype).requires_grad_(True)
    (derivative,) = torch.autograd.grad(_gaussian_bump_mean(mu, sigma, c), c, create_graph=True)
    return -derivative


CLOSED_FORMS = {  # family -> k -> (E[f], E[f^2], E[f'^2]) as functions of (mu, sigma)
    "quadratic": lambda k: (
        lambda mu, sigma: (mu - k) ** 2 + sigma ** 2,
        lambda mu, sigma: (mu - k) ** 4 + 6 * (mu - k) ** 2 * sigma ** 2 + 3 * sigma ** 4,
        lambda mu, sigma: 4 * ((mu - k) ** 2 + sigma ** 2),
    ),
    "gaussian": lambda k: (
        lambda mu, sigma: _gaussian_bump_mean(mu, sigma, k),
        lambda mu, sigma: _gaussian_bump_mean(mu, sigma, 2 * k),
        lambda mu, sigma: 4 * k ** 2 * _x_squared_bump_mean(mu, sigma, 2 * k),
    ),
    "cosine": lambda k: (  # E[cos(w x)] = cos(w mu) exp(-w^2 sigma^2 / 2); cos^2, sin^2 via 2k
        lambda mu, sigma: torch.cos(k * mu) * torch.exp(-0.5 * k ** 2 * sigma ** 2),
        lambda mu, sigma: 0.5 * (1 + torch.cos(2 * k * mu) * torch.exp(-2 * k ** 2 * sigma ** 2)),
        lambda mu, sigma: 0.5 * k ** 2 * (1 - torch.cos(2 * k * mu)
                                          * torch.exp(-2 * k ** 2 * sigma ** 2)),
    ),
}


def _derivatives(mean, mu, sigma):
    """H, dH/dmu, dH/dsigma, d2H/dmu2, d2H/dsigma2 of a closed form H(mu, sigma)."""
    mu = torch.tensor(mu, requires_grad=True)
    sigma = torch.tensor(sigma, requires_grad=True)
    value = mean(mu, sigma)
    d_mu, d_sigma = torch.autograd.grad(value, (mu, sigma), create_graph=True)
    (d_mu_mu,) = torch.autograd.grad(d_mu, mu, retain_graph=True)
    (d_sigma_sigma,) = torch.autograd.grad(d_sigma, sigma)
    return [float(t.detach()) for t in (value, d_mu, d_sigma, d_mu_mu, d_sigma_sigma)]


def closed_form_variances(family: str, k: float, mu: float = LOC, sigma: float = SCALE) -> dict:
    """K x variance of each estimator, (mu, sigma) pairs, and the gradient, from closed forms."""
    mean_f, mean_f2, mean_fprime2 = CLOSED_FORMS[family](k)
    G, g_mu, g_sigma, f_mu_mu, f_sigma_sigma = _derivatives(mean_f, mu, sigma)
    B, _, _, f2_mu_mu, f2_sigma_sigma = _derivatives(mean_f2, mu, sigma)
    P, _, _, p_mu_mu, _ = _derivatives(mean_fprime2, mu, sigma)
    gradient = np.array([g_mu, g_sigma])
    score_moment = np.array([f2_mu_mu + B / sigma ** 2,  # E[f^2 s^2]
                             f2_sigma_sigma + 3 * f2_mu_mu + 2 * B / sigma ** 2])
    cost_moment = np.array([f_mu_mu + G / sigma ** 2,  # E[f s^2]
                            f_sigma_sigma + 3 * f_mu_mu + 2 * G / sigma ** 2])
    score_norm = np.array([1 / sigma ** 2, 2 / sigma ** 2])  # E[s^2]
    # E[(f' dx/dparam)^2]: dx/dmu = 1, dx/dsigma = e, and E[h e^2] = sigma^2 E[h s_mu^2].
    path_moment = np.array([P, sigma ** 2 * (p_mu_mu + P / sigma ** 2)])
    return {
        "gradient": gradient,
        "score_function": score_moment - gradient ** 2,
        "score_function_optimal": score_moment + B * score_norm - 2 * cost_moment * G,
        "pathwise": path_moment - gradient ** 2,
        cf.IDEAL: score_moment - cost_moment ** 2 / score_norm - gradient ** 2,
    }


@pytest.mark.parametrize("family", list(cf.COSTS))
def test_exact_curves_equal_closed_forms(family):
    config = cf.Config.quick()
    k = cf.k_grid(config, family, 9)
    quadrature = cf.exact_variances(cf.normal_moments(cf.COSTS[family], k, LOC, SCALE))
    for i, kk in enumerate(k):
        closed = closed_form_variances(family, float(kk))
        for key, value in closed.items():
            np.testing.assert_allclose(quadrature[key][i], value, rtol=1e-8, atol=1e-11,
                                       err_msg=f"{family}, k = {kk:.3g}, {key}")


def test_closed_forms_catch_a_wrong_variance():
    # The comparison above is not vacuous: dropping the -g^2 term of the score function's
    # variance, where the gradient is not zero, is caught at the same tolerance.
    k = cf.k_grid(cf.Config.quick(), "cosine", 9)
    quadrature = cf.exact_variances(cf.normal_moments(cf.COSTS["cosine"], k, LOC, SCALE))
    wrong = quadrature["score_function"] + quadrature["gradient"] ** 2
    closed = np.array([closed_form_variances("cosine", float(kk))["score_function"] for kk in k])
    assert not np.allclose(wrong, closed, rtol=1e-8, atol=1e-11)


def measure_valued_closed_forms(k, mu, sigma):
    """K x variance of the measure-valued estimators for f = (x - k)^2, by hand, (mu, sigma) pairs.

    With a = mu - k, w ~ Rayleigh (E w = sqrt(pi/2), E w^2 = 2, E w^4 = 8), m double-sided
    Maxwell (E m^2 = 3, E m^4 = 15), u ~ U(0, 1), c = 1 / (sigma sqrt(2 pi)):
      uncoupled mu:    c^2 [Var (a + sigma w)^2 + Var (a - sigma w')^2] = (2 a^2 (4 - pi) + 4 sigma^2) / pi
      uncoupled sigma: [Var (a + sigma m)^2 + Var (a + sigma n)^2] / sigma^2 = 16 a^2 + 8 sigma^2
      coupled mu:      c^2 Var[4 a sigma w] = 4 (4 - pi) a^2 / pi
      coupled sigma:   Var[2 a m (1 - u) + sigma m^2 (1 - u^2)] = 4 a^2 + 4 sigma^2
    """
    a = mu - k
    return {"measure_valued": np.stack([(2 * a ** 2 * (4 - np.pi) + 4 * sigma ** 2) / np.pi,
                                        16 * a ** 2 + 8 * sigma ** 2], -1),
            "measure_valued_coupled": np.stack([4 * (4 - np.pi) * a ** 2 / np.pi,
                                                4 * a ** 2 + 4 * sigma ** 2], -1)}


@pytest.mark.parametrize("mu, sigma", [(1.0, 1.0), (0.3, 0.6), (-1.0, 2.0)])
def test_measure_valued_variances_of_a_quadratic_equal_closed_forms(mu, sigma):
    k = np.linspace(-3, 3, 7)
    exact = cf.exact_variances(cf.normal_moments(cf.COSTS["quadratic"], k, mu, sigma,
                                                 measure_valued=True))
    for name, closed in measure_valued_closed_forms(k, mu, sigma).items():
        np.testing.assert_allclose(exact[name], closed, rtol=1e-9, atol=1e-10, err_msg=name)
    # twin: coupling changes the variance, so the other estimator's closed form does not match
    closed = measure_valued_closed_forms(k, mu, sigma)
    assert not np.allclose(exact["measure_valued"], closed["measure_valued_coupled"], rtol=1e-3)


@pytest.mark.parametrize("family", list(cf.COSTS))
def test_the_weak_derivatives_have_the_gradient_as_their_mean(family):
    # c (R1 - L1) and (M1 - G) / sigma, from the Weibull and Maxwell quadratures, equal the score
    # function's E[f s]: the weak derivatives' constants 1/(sigma sqrt(2 pi)) and 1/sigma. With
    # 1/(sigma sqrt(pi)) for the mean, the same comparison fails.
    k = cf.k_grid(cf.Config.quick(), family, 9)
    for loc, scale in ((LOC, SCALE), (0.4, 0.7)):
        moments = cf.normal_moments(cf.COSTS[family], k, loc, scale)
        moments.update(cf.weak_derivative_moments(cf.COSTS[family], k, loc, scale, coupled=False))
        exact = cf.exact_variances(moments)
        np.testing.assert_allclose(exact["weak_gradient"], exact["gradient"], rtol=1e-8, atol=1e-11)
        wrong = (moments["R1"][:, 0] - moments["L1"][:, 0]) / (scale * np.sqrt(np.pi))
        assert not np.allclose(wrong, exact["gradient"][:, 0], rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("family, k", [("cosine", 2.3), ("gaussian", 4.0)])
def test_the_coupled_scale_moment_equals_scipy_dblquad(family, k):
    # MU = E[f(mu + sigma m) f(mu + sigma u m)], m double-sided Maxwell, u ~ U(0, 1): the study's
    # adaptive cubature against scipy's dblquad (nested adaptive quadrature) over (m, u).
    from scipy import integrate

    cost = cf.COSTS[family]
    loc, scale = 0.4, 0.8

    def integrand(u, m):
        density = m * m * np.exp(-0.5 * m * m) / np.sqrt(2 * np.pi)
        return density * cost.value(loc + scale * m, k, np) * cost.value(loc + scale * u * m, k, np)

    by_dblquad, _ = integrate.dblquad(integrand, -14, 14, 0, 1, epsabs=1e-12, epsrel=1e-10)
    moments = cf.normal_moments(cost, np.array([k]), loc, scale, measure_valued=True)
    assert moments["MU"][0, 1] == pytest.approx(by_dblquad, rel=1e-8, abs=1e-10)
    # twin: without the coupling, u m replaced by an independent Normal, the moment is M1 G
    independent = moments
    assert independent["M1"][0, 1] * independent["G"][0, 1] != pytest.approx(by_dblquad, rel=1e-3)


def test_pathwise_variance_in_mu_of_a_quadratic_is_four_sigma_squared():
    # f' = 2 (x - k): Var[f'] = 4 sigma^2 for every k (Mohamed et al. 2020, Figure 2).
    k = np.linspace(-3, 3, 7)
    for scale in (0.5, 1.0, 2.0):
        exact = cf.exact_variances(cf.normal_moments(cf.COSTS["quadratic"], k, LOC, scale))
        np.testing.assert_allclose(exact["pathwise"][:, 0], 4 * scale ** 2, rtol=1e-10)


# --------------------------------------------------------------------------------------------
# The estimators reduce to their textbook forms on the cost handed over as a model
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", list(cf.COSTS))
@pytest.mark.parametrize("name", cf.ESTIMATOR_NAMES)
def test_estimates_equal_textbook_formulas_at_the_same_samples(family, name):
    cost = cf.COSTS[family]
    config = cf.Config.quick()
    k = cf.k_grid(config, family, 3)
    replicates = 5
    torch.manual_seed(3)
    grads = cf.replicate(name, cost, k, config, replicates)
    # The same seed draws the same samples as the estimator (sample for the score function,
    # rsample for the pathwise estimator).
    torch.manual_seed(3)
    shape = (replicates, len(k), 1)
    q = cf.normal_q(torch.full(shape, LOC), torch.full(shape, SCALE))
    draw = q.rsample if name == "pathwise" else q.sample
    x = draw((cf.NUM_SAMPLES,))  # (K, R, P, 1)
    # The measure-valued estimators then draw their pairs (mu +, mu -, sigma +, sigma -).
    pairs = standard_weak_derivative_pairs(x.shape, x.dtype, coupled=name.endswith("coupled"))
    x, pairs = x.squeeze(-1), pairs.squeeze(-1)
    e = (x - LOC) / SCALE
    kk = torch.as_tensor(k)
    f, fprime = cost.value(x, kk, torch), cost.derivative(x, kk, torch)
    moved = cost.value(LOC + SCALE * pairs, kk, torch)  # (4, K, R, P)
    weak = {"loc": (moved[0] - moved[1]) / (SCALE * math.sqrt(2 * math.pi)),
            "scale": (moved[2] - moved[3]) / SCALE}
    scores = {"loc": e / SCALE, "scale": (e ** 2 - 1) / SCALE}
    paths = {"loc": torch.ones_like(e), "scale": e}
    for parameter in cf.PARAMETERS:
        s = scores[parameter]
        if name == "score_function":
            expected = (f * s).mean(0)
        elif name == "score_function_optimal":  # the other sample's cost as the baseline
            expected = (f[0] - f[1]) * (s[0] - s[1]) / 2
        elif name.startswith("measure_valued"):
            expected = weak[parameter].mean(0)
        else:
            expected = (fprime * paths[parameter]).mean(0)
        torch.testing.assert_close(grads[parameter], expected, rtol=1e-9, atol=1e-10)


def test_an_odd_count_in_chunks_of_two_runs_in_order_and_moves_the_progress_bar():
    # --set chunk=2 with R odd: the former loop made a last chunk of one replicate and raised
    # "num_replicates must be >= 2". Now the passes are 2 then 3, drawn one after the other.
    config = cf.Config.quick().replace(num_replicates=5, chunk=2)
    cost, k = cf.COSTS["cosine"], cf.k_grid(config, "cosine", 3)
    gradient = cf.exact_variances(cf.normal_moments(cost, k, LOC, SCALE))["gradient"]

    updates = []
    torch.manual_seed(8)
    row = cf.measure("score_function", cost, k, config, gradient,
                     bar=SimpleNamespace(update=updates.append))
    assert updates == [2, 3]
    torch.manual_seed(8)  # the same passes by hand, one unchunked call each
    parts = [cf.replicate("score_function", cost, k, config.replace(chunk=size), size)
             for size in updates]
    for i, parameter in enumerate(cf.PARAMETERS):
        stats = cf.gradient_statistics(torch.cat([part[parameter] for part in parts]),
                                       torch.as_tensor(gradient[:, i]))
        assert torch.equal(row[parameter]["mean"], stats.mean)
        assert torch.equal(row[parameter]["variance"], cf.NUM_SAMPLES * stats.variance)


# --------------------------------------------------------------------------------------------
# Monte Carlo against exact (statistical)
# --------------------------------------------------------------------------------------------

TEST_CONFIG = cf.Config.quick().replace(num_replicates=20000, num_points=4)


@pytest.fixture(scope="module")
def measured():
    """Each family, estimator and parameter measured at 4 values of k, R = 20000; seed 0."""
    torch.manual_seed(0)
    out = {}
    for family, cost in cf.COSTS.items():
        k = cf.k_grid(TEST_CONFIG, family, TEST_CONFIG.num_points)
        exact = cf.exact_variances(cf.normal_moments(cost, k, LOC, SCALE, measure_valued=True))
        part = {"exact_points": {key: {p: value[:, i] for i, p in enumerate(cf.PARAMETERS)}
                                 for key, value in exact.items()},
                "measured": {name: cf.measure(name, cost, k, TEST_CONFIG, exact["gradient"],
                                              cost_scale=exact["cost_rms"])
                             for name in cf.ESTIMATOR_NAMES}}
        part["measured"] = {n: {p: {key: np.asarray(v) for key, v in row.items()}
                                for p, row in rows.items()}
                            for n, rows in part["measured"].items()}
        out[family] = part
    return out


def _comparisons():
    return len(cf.COSTS) * len(cf.ESTIMATOR_NAMES) * len(cf.PARAMETERS) * TEST_CONFIG.num_points


@pytest.mark.statistical
def test_measured_variances_agree_with_exact_variances(measured):
    # z = (measured K x variance - exact) / its standard error, every family, estimator,
    # parameter and k: 120 comparisons sharing one test's share of the false-positive rate.
    threshold = z_threshold(_comparisons())
    for family, part in measured.items():
        for name in cf.ESTIMATOR_NAMES:
            for parameter in cf.PARAMETERS:
                z = cf.agreement(part, name, parameter)
                assert np.abs(z).max() < threshold, (family, name, parameter, z)


@pytest.mark.statistical
def test_a_wrong_exact_variance_fails_the_same_check(measured):
    # Negative twins: the exact variance 10 % off, or another estimator's exact variance, is
    # rejected somewhere by the check above.
    threshold = z_threshold(_comparisons())
    worst_scaled = max(np.abs(cf.agreement(part, name, p, factor=1.1)).max()
                       for part in measured.values() for name in cf.ESTIMATOR_NAMES
                       for p in cf.PARAMETERS)
    assert worst_scaled > threshold
    for name, other in [("score_function", "score_function_optimal"),
                        ("score_function_optimal", cf.IDEAL),
                        ("measure_valued_coupled", "measure_valued")]:
        part = measured["quadratic"]
        swapped = {**part, "exact_points": {**part["exact_points"],
                                            name: part["exact_points"][other]}}
        assert np.abs(cf.agreement(swapped, name, "loc")).max() > threshold, (name, other)


@pytest.mark.statistical
def test_measured_gradients_are_unbiased(measured):
    # The replicate means against the exact gradient; the gradient of E[f] with the sign of mu
    # flipped (a wrong exact value) fails the same check.
    threshold = z_threshold(_comparisons())
    worst, worst_wrong = 0.0, 0.0
    for part in measured.values():
        for name in cf.ESTIMATOR_NAMES:
            for parameter in cf.PARAMETERS:
                row = part["measured"][name][parameter]
                worst = max(worst, np.abs(row["bias_z"]).max())
                if parameter == "loc":
                    wrong = -np.asarray(part["exact_points"]["gradient"]["loc"])
                    worst_wrong = max(worst_wrong,
                                      np.abs((row["mean"] - wrong) / row["mean_se"]).max())
    assert worst < threshold
    assert worst_wrong > threshold


def test_variance_ordering_of_the_paper_holds_exactly():
    # Mohamed et al. 2020, Figures 2-3, read off the exact curves: for the quadratic the
    # pathwise estimator beats the score function at every k; for cos(k x) at k = 5 the score
    # function beats the pathwise one for both parameters.
    config = cf.Config.quick()
    quadratic = cf.exact_variances(cf.normal_moments(
        cf.COSTS["quadratic"], cf.k_grid(config, "quadratic", 13), LOC, SCALE))
    assert (quadratic["pathwise"] < quadratic["score_function"]).all()
    cosine = cf.exact_variances(cf.normal_moments(cf.COSTS["cosine"], np.array([5.0]), LOC, SCALE))
    assert (cosine["score_function"] < cosine["pathwise"]).all()


def _shifted(cost, baseline):
    """The cost f - b, b one number per k: the score function on it is the one with baseline b."""
    return cf.Cost(cost.label, lambda x, k, lib: cost.value(x, k, lib) - baseline,
                   cost.derivative, cost.log_k)


def test_the_ideal_baseline_is_the_minimum_of_the_constant_baseline_variance():
    # K x variance of (f - b) s for a constant b, by its own quadrature (of the shifted cost; E[s]
    # = 0 leaves the gradient g unchanged): at b = F / C it is the IDEAL curve, and 0.1 either
    # side it is larger, by C 0.1^2 (it is quadratic in b). A wrong IDEAL, or b*, fails this.
    config = cf.Config.quick()
    for family, k in (("quadratic", cf.k_grid(config, "quadratic", 5)),
                      ("cosine", np.array([0.5, 5.0]))):
        cost = cf.COSTS[family]
        moments = cf.normal_moments(cost, k, LOC, SCALE)
        ideal = cf.exact_variances(moments)[cf.IDEAL]
        best = moments["F"] / moments["C"]
        for i, parameter in enumerate(cf.PARAMETERS):

            def variance(shift):
                shifted = cf.normal_moments(_shifted(cost, best[:, i] + shift), k, LOC, SCALE)
                return cf.exact_variances(shifted)["score_function"][:, i]

            np.testing.assert_allclose(variance(0.0), ideal[:, i], rtol=1e-9,
                                       err_msg=f"{family} {parameter}")
            for shift in (-0.1, 0.1):
                above = variance(shift) - ideal[:, i]
                assert (above > 0).all(), (family, parameter, shift, above)
                np.testing.assert_allclose(above, moments["C"][:, i] * shift ** 2, rtol=1e-6,
                                           err_msg=f"{family} {parameter} {shift}")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def test_end_to_end_writes_results_and_figures(tmp_path, capsys):
    tiny = ["--set", "num_replicates=200", "--set", "num_points=3", "--set", "num_curve_points=5",
            "--set", "chunk=150"]
    assert main(["cost-functions", "--quick", "--out", str(tmp_path), *tiny]) == 0
    results = tmp_path / "results" / "cost-functions-quick.json"
    from experiments.common import load_results

    saved = load_results(results)
    assert saved["data"]["num_replicates"] == 200
    text = cf.summary(saved)
    assert "score_function_optimal" in text and "max|z|" in text
    capsys.readouterr()
    assert cf.main([str(results)]) == 0  # python -m experiments.cost_functions RESULTS
    assert capsys.readouterr().out.strip() == text
    for family in cf.COSTS:
        for suffix in ("png", "pdf"):
            assert (tmp_path / "figures" / f"cost-functions-{family}-quick.{suffix}").stat().st_size > 0


def test_help_lists_the_config_fields(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cost-functions", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "num_replicates" in out and "cosine_range" in out
    with pytest.raises(SystemExit) as exit_info:
        cf.main(["--help"])
    assert exit_info.value.code == 0
    assert "key numbers" in capsys.readouterr().out


@pytest.mark.parametrize("field, value, message", [
    ("scale", "0", "scale must be > 0"),
    ("gaussian_range", "-1,2", "gaussian_range is log-spaced"),
    ("num_replicates", "1", "num_replicates must be >= 2"),
])
def test_bad_config_fails_with_one_line_naming_the_field(tmp_path, field, value, message):
    with pytest.raises(SystemExit, match=message) as exit_info:
        main(["cost-functions", "--quick", "--out", str(tmp_path), "--set", f"{field}={value}"])
    assert "\n" not in str(exit_info.value.code)
