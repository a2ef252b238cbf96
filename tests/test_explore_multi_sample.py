"""Tutorial 7's exact K-sample bound against independent computations."""

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from estimators.targets import ConjugateGaussian
from experiments.explore import multi_sample as ms

from conftest import z_threshold

# Parameters away from the tutorial's (q off the prior, theta off 0), where no symmetry helps.
ELSEWHERE = (0.5, -0.2, 0.3)


def test_the_bound_at_one_sample_is_the_closed_form_elbo():
    for params in ((None, None, None), ELSEWHERE):
        bound = ms.exact_bound([1], *params)
        loc, log_scale, prior_loc = ms._current(*params)
        leaves = [torch.tensor([v], requires_grad=True) for v in (loc, log_scale, prior_loc)]
        elbo = ConjugateGaussian(torch.tensor([ms.X]), leaves[2]).exact_elbo(
            leaves[0], leaves[1].exp()).sum()
        grad = torch.cat(torch.autograd.grad(elbo, leaves)).numpy()
        assert abs(bound.value[0] - elbo.item()) < 1e-9
        np.testing.assert_allclose(bound.gradient[0], grad, atol=1e-9)


def _two_sample_bound_by_gauss_hermite(loc, log_scale, prior_loc, nodes=80):
    """L_2 and its gradient by a tensor-product Gauss-Hermite rule over (e_1, e_2)."""
    points, weights = np.polynomial.hermite_e.hermegauss(nodes)
    weights = weights / math.sqrt(2 * math.pi)
    e1, e2 = np.meshgrid(points, points, indexing="ij")
    noise = torch.from_numpy(np.stack([e1.ravel(), e2.ravel()]))
    m, s, t = (torch.tensor(float(v), requires_grad=True) for v in (loc, log_scale, prior_loc))
    z = m + s.exp() * noise
    log_w = (ConjugateGaussian(torch.tensor([ms.X]), t.reshape(1)).log_joint(z.unsqueeze(-1))
             - Normal(m, s.exp()).log_prob(z))
    value = (torch.from_numpy(np.outer(weights, weights).ravel())
             * (torch.logsumexp(log_w, 0) - math.log(2))).sum()
    return value.item(), np.array([g.item() for g in torch.autograd.grad(value, [m, s, t])])


def test_the_bound_at_two_samples_equals_a_two_dimensional_rule():
    for params in ((ms.Q_LOC, ms.Q_LOG_SCALE, ms.PRIOR_LOC), ELSEWHERE):
        bound = ms.exact_bound([2], *params)
        value, grad = _two_sample_bound_by_gauss_hermite(*params)
        assert abs(bound.value[0] - value) < 1e-8
        np.testing.assert_allclose(bound.gradient[0], grad, atol=1e-7)


def test_many_samples_close_the_gap_as_chi_square_over_2k():
    evidence, evidence_gradient = ms.log_evidence()
    bound = ms.exact_bound([1000, 10000])
    gap_times_k = bound.num_samples * (evidence - bound.value)
    assert abs(gap_times_k[1] - ms.chi_square() / 2) < 1e-3 * ms.chi_square()
    assert gap_times_k[0] > gap_times_k[1]  # from above: the next term is positive here
    np.testing.assert_allclose(bound.gradient[1], evidence_gradient, atol=2e-4)
    # The encoder's gradient vanishes like 1/K: ten times the samples, a tenth of the gradient.
    np.testing.assert_allclose(bound.gradient[1, :2] * 10, bound.gradient[0, :2], rtol=2e-3)


def test_chi_square_by_quadrature_equals_a_gauss_hermite_rule_under_q():
    posterior = ms.model().posterior().base_dist
    points, weights = np.polynomial.hermite_e.hermegauss(200)
    z = ms.Q_LOC + math.exp(ms.Q_LOG_SCALE) * points
    z = torch.from_numpy(z)
    ratio = np.exp((Normal(posterior.loc, posterior.scale).log_prob(z)
                    - Normal(ms.Q_LOC, math.exp(ms.Q_LOG_SCALE)).log_prob(z)).numpy())
    expected = (weights / math.sqrt(2 * math.pi)) @ ratio ** 2 - 1
    assert abs(ms.chi_square() - expected) < 1e-8
    # q's variance at most half the posterior's (0.5 here): the divergence is infinite.
    assert ms.chi_square(log_scale=math.log(0.4)) == math.inf


def test_the_bound_for_many_k_at_once_equals_one_k_at_a_time():
    ks = [1, 3, 17, 500]
    together = ms.exact_bound(ks)
    for i, k in enumerate(ks):
        alone = ms.exact_bound([k])
        assert together.value[i] == alone.value[0]
        np.testing.assert_array_equal(together.gradient[i], alone.gradient[0])


def test_the_module_settings_are_read_at_call_time(monkeypatch):
    before = ms.exact_bound([4]).value[0]
    monkeypatch.setattr(ms, "Q_LOC", 0.75)
    monkeypatch.setattr(ms, "Q_LOG_SCALE", math.log(0.5) / 2)  # q = the posterior
    assert ms.exact_bound([4]).value[0] != before
    assert abs(ms.exact_bound([4]).value[0] - ms.log_evidence()[0]) < 1e-10


def test_a_bad_number_of_samples_is_refused_in_one_line():
    for bad in ([0], [2.5], [[1, 2]]):
        with pytest.raises(ValueError, match="num_samples must be integers >= 1"):
            ms.exact_bound(bad)


@pytest.mark.statistical
def test_the_estimators_are_unbiased_for_the_bound_and_not_for_the_elbo():
    """iwae's and dreg's means at K = 8 against the exact gradient of L_8 (6 comparisons, seed
    1); the same means against the ELBO's gradient, the wrong objective, are rejected."""
    threshold = z_threshold(6)
    exact = ms.exact_bound([8]).gradient[0]
    _, elbo_gradient = ms.exact_elbo()
    for name in ("iwae", "dreg"):
        grads = ms.replicate(name, 8, 20000, seed=1)
        mean, se = grads.mean(0), grads.std(0, ddof=1) / math.sqrt(grads.shape[0])
        assert np.abs((mean - exact) / se).max() < threshold, name
        assert np.abs((mean - elbo_gradient) / se).max() > threshold, name
