"""Tutorial 3's exact curves against independent computations.

On the conjugate model the learning signal f and the scores are polynomials in the standard noise
e of z = mu + sigma e, so a Gauss-Hermite rule of 12 nodes integrates every moment exactly: an
independent check of the adaptive quadrature behind the slider's grid. The statistical check
spends a 1/STATISTICAL_BUDGET share of the suite's FALSE_POSITIVE_RATE, with a fixed seed and a
wrong twin.
"""

import math

import numpy as np
import pytest
import torch
from numpy.polynomial.hermite_e import hermegauss

from conftest import z_threshold
from experiments import score_forms
from experiments.explore import score_function as sfx

X = 0.8  # the observation of the score-forms study's model


def hermite_moments(mu, sigma, shift=0.0):
    """E[f s], E[f^2 s^2], E[f s^2], E[s^2] for (d/dmu, d/dsigma), by a 12-node Gauss-Hermite rule."""
    e, weights = hermegauss(12)
    weights = weights / math.sqrt(2 * math.pi)
    z = mu + sigma * e
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    log_joint = (-half_log_2pi - z ** 2 / 2) + (-half_log_2pi - (X - z) ** 2 / 2) + shift
    log_q = -half_log_2pi - math.log(sigma) - e ** 2 / 2
    f = (log_joint - log_q)[:, None]
    s = np.stack([e / sigma, (e ** 2 - 1) / sigma], -1)
    mean = lambda values: weights @ values  # noqa: E731
    return {"g": mean(f * s), "fs2": mean((f * s) ** 2), "f_s2": mean(f * s ** 2), "s2": mean(s ** 2)}


@pytest.mark.parametrize("scale_index, offset_index", [(0, 0), (3, 30), (5, 45), (9, 60)])
def test_the_grid_of_moments_equals_gauss_hermite(scale_index, offset_index):
    grid = sfx.moment_grid()
    mu, sigma = sfx.q_at(sfx.CURVE_OFFSETS[offset_index], sfx.SCALES[scale_index])
    expected = hermite_moments(float(mu), float(sigma))
    for key, value in expected.items():
        np.testing.assert_allclose(grid[key][scale_index, offset_index], value, rtol=1e-8,
                                   atol=1e-9, err_msg=key)


@pytest.mark.parametrize("offset, scale, shift", [(0.0, 1.0, 0.0), (2.0, 0.6, 0.0),
                                                  (-1.5, 1.7, 3.0), (3.0, 0.4, -2.0)])
def test_exact_values_equal_closed_forms(offset, scale, shift):
    mu, sigma = (float(v) for v in sfx.q_at(offset, scale))
    exact = sfx.exact_at(offset, scale, shift)
    # the gradient: autograd of the model's ELBO in closed form
    loc = torch.tensor([mu], requires_grad=True)
    scale_tensor = torch.tensor([sigma], requires_grad=True)
    gradient = torch.autograd.grad(sfx.model().exact_elbo(loc, scale_tensor), [loc, scale_tensor])
    np.testing.assert_allclose(exact["gradient"], [g.item() for g in gradient], atol=1e-9)
    # the variances: (f + c - b) s with b = 0 (the seed's form) and b = 1 (autodiff), by Hermite
    moments = hermite_moments(mu, sigma, shift)
    for name, baseline in (("score_function", 0.0), ("score_function_autodiff", 1.0)):
        variance = (moments["fs2"] - 2 * baseline * moments["f_s2"] + baseline ** 2 * moments["s2"]
                    - moments["g"] ** 2)
        np.testing.assert_allclose(exact[name], variance, rtol=1e-8, err_msg=name)
    np.testing.assert_allclose(exact["optimal_baseline"], moments["f_s2"] / moments["s2"],
                               rtol=1e-8)


def test_the_grid_agrees_with_the_study_it_reuses():
    offsets = np.array([-2.5, 0.0, 1.0])
    mu, sigma = sfx.q_at(offsets, 0.85)
    study = score_forms.exact_variances(sfx.model().log_joint, mu, sigma)
    for i, offset in enumerate(offsets):
        exact = sfx.exact_at(offset, 0.85)
        for name in sfx.FORMS:
            np.testing.assert_allclose(exact[name], study[name][i], rtol=1e-9)


def test_at_the_posterior_the_seeds_variance_is_the_evidence_times_the_score():
    # f = log p(x) for every z there, so Var = log p(x)^2 E[s^2] = log p(x)^2 (1, 2) / sigma^2
    _, sd = sfx.posterior()
    exact = sfx.exact_at(0.0, 1.0)
    evidence = sfx.model().log_evidence().item()
    np.testing.assert_allclose(exact["score_function"], evidence ** 2 * np.array([1, 2]) / sd ** 2,
                               rtol=1e-9)
    np.testing.assert_allclose(exact["gradient"], 0.0, atol=1e-12)


def test_a_point_off_the_grid_is_refused_in_one_line():
    with pytest.raises(ValueError, match="scale=0.55 is not on the grid"):
        sfx.exact_at(0.0, 0.55)
    with pytest.raises(ValueError, match="offset=0.25 is not on the grid"):
        sfx.exact_at(0.25, 1.0)


@pytest.fixture(scope="module")
def shifted_measurement():
    """Both forms at scale 0.6, every knob offset, log p + 3; R = 20,000, seed 11."""
    return {name: sfx.measure(name, sfx.OFFSETS, 0.6, shift=3.0, num_replicates=20_000, seed=11)
            for name in sfx.FORMS}


def _z(measured, shift):
    out = []
    for name in sfx.FORMS:
        exact = np.array([sfx.exact_at(offset, 0.6, shift)[name] for offset in sfx.OFFSETS])
        for k, p in enumerate(("loc", "scale")):
            row = measured[name][p]
            out.append((row.variance.numpy() - exact[:, k]) / row.variance_se.numpy())
    return np.concatenate(out)


@pytest.mark.statistical
def test_measured_variances_on_the_shifted_model_equal_the_exact_ones(shifted_measurement):
    z = _z(shifted_measurement, 3.0)
    assert np.abs(z).max() < z_threshold(z.size), z


@pytest.mark.statistical
def test_the_same_check_rejects_the_unshifted_exact_values(shifted_measurement):
    # twin: a measurement that ignored the shift would match these instead
    z = _z(shifted_measurement, 0.0)
    assert np.abs(z).max() > z_threshold(z.size), np.abs(z).max()
