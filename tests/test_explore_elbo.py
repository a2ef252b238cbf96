"""Tutorial 2's exact numbers against independent computations (scipy quadrature, closed forms)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from conftest import z_threshold
from experiments.explore import elbo


def test_mixture_prior_evidence_and_posterior_match_quadrature():
    model = elbo.mixture_model()

    def joint(z):
        return math.exp(model.log_joint(torch.tensor([[z]], dtype=torch.float64)).item())

    evidence, _ = integrate.quad(joint, -np.inf, np.inf, epsabs=1e-14, epsrel=1e-12)
    assert abs(model.log_evidence().item() - math.log(evidence)) < 1e-10
    # Bayes' rule pointwise: the closed-form mixture posterior is p(x, z) / p(x).
    z = torch.linspace(-4, 3, 15, dtype=torch.float64).unsqueeze(-1)
    torch.testing.assert_close(model.posterior().log_prob(z),
                               model.log_joint(z) - math.log(evidence), rtol=0, atol=1e-10)


def test_grid_quadrature_matches_adaptive_quadrature():
    model = elbo.mixture_model()
    # The narrowest and the widest q the slider offers, and a middle one; arrays in one call.
    loc, scale = np.array([-2.0, -0.8, 3.0]), np.array([0.1, 1.0, 3.0])
    fast, slow = (elbo.exact_elbo(model, loc, scale, method=m) for m in ("grid", "adaptive"))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)
    fast, slow = (elbo.kl_to_posterior(model, loc, scale, method=m) for m in ("grid", "adaptive"))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-9)


def test_the_slider_table_is_the_exact_elbo():
    table = elbo._mixture_table()
    model = elbo.mixture_model()
    rows, columns = np.array([0, 5, 11, 11]), np.array([150, 200, 0, 400])
    expected = elbo.exact_elbo(model, elbo._LOCS[columns], np.take(elbo.SCALES, rows),
                               method="adaptive")
    np.testing.assert_allclose(table[rows, columns], expected, rtol=0, atol=1e-9)


def test_the_grid_route_recovers_the_conjugate_closed_form():
    model = elbo.conjugate_model()
    locs, scales = np.array([-1.0, 1.2, 3.0]), np.array([0.2, 0.45, 2.0])
    entropy = elbo.gaussian_q(locs, scales).entropy().numpy()
    by_grid = elbo._on_grid(model.log_joint, locs, scales) + entropy
    np.testing.assert_allclose(by_grid, elbo.exact_elbo(model, locs, scales), rtol=0, atol=1e-10)


def test_elbo_plus_kl_is_the_log_evidence_and_the_wrong_direction_is_not():
    for model in (elbo.conjugate_model(), elbo.mixture_model()):
        locs, scales = np.array([-2.0, 0.0, 1.0]), np.array([0.3, 0.45, 2.0])
        total = (elbo.exact_elbo(model, locs, scales, method="adaptive")
                 + elbo.kl_to_posterior(model, locs, scales, method="adaptive"))
        np.testing.assert_allclose(total, model.log_evidence().item(), rtol=0, atol=1e-10)
    model = elbo.conjugate_model()
    wrong = torch.distributions.kl_divergence(model.posterior(), elbo.gaussian_q(locs, scales))
    assert np.abs(elbo.exact_elbo(model, locs, scales) + wrong.numpy()
                  - model.log_evidence().item()).max() > 0.1


def test_discrete_elbo_by_scipy_and_its_maximum_at_the_posterior():
    spec = elbo.SECTION_TWO
    joint = (np.log(spec["weights"])
             + stats.norm.logpdf(spec["observation"], spec["locs"], spec["scales"]))
    first = np.array([0.1, 0.5, 0.9])
    q = np.stack([first, 1 - first], -1)
    direct = (q * (joint - np.log(q))).sum(-1)
    np.testing.assert_allclose(elbo.discrete_elbo(first), direct, rtol=1e-13)
    responsibility = np.exp(joint[0] - np.logaddexp(*joint))
    assert abs(elbo.discrete_elbo(responsibility) - np.logaddexp(*joint)) < 1e-13
    assert abs(elbo.discrete_log_evidence() - np.logaddexp(*joint)) < 1e-13


def test_the_best_gaussian_beats_every_point_of_a_grid():
    model = elbo.mixture_model()
    loc, scale, gap = elbo.best_gaussian(model)
    locs, scales = np.meshgrid(np.linspace(-1.5, 0, 16), np.linspace(0.7, 1.3, 13))
    gaps = model.log_evidence().item() - elbo.exact_elbo(model, locs, scales)
    assert 0 < gap <= gaps.min() + 1e-12
    # The conjugate model's best Gaussian is its posterior, with no gap.
    loc, scale, gap = elbo.best_gaussian(elbo.conjugate_model())
    assert abs(loc - 1.2) < 1e-5 and abs(scale - math.sqrt(0.2)) < 1e-5 and abs(gap) < 1e-10


@pytest.mark.statistical
def test_monte_carlo_points_agree_with_the_exact_curve_and_a_wrong_curve_is_rejected():
    # Seed fixed; the threshold spends this test's share of the suite's false-positive rate over
    # its 2 models x 9 points.
    threshold = z_threshold(18)
    for model in (elbo.conjugate_model(), elbo.mixture_model()):
        mean, se = elbo.monte_carlo_elbo(model, elbo._MC_LOCS, 0.6, 4000, seed=3)
        exact = elbo.exact_elbo(model, elbo._MC_LOCS, 0.6)
        assert np.abs((mean - exact) / se).max() < threshold
        wrong = elbo.exact_elbo(model, elbo._MC_LOCS, 0.5)  # the curve of another q
        assert np.abs((mean - wrong) / se).max() > threshold
