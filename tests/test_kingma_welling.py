"""Our curves beside Kingma & Welling's: interpolation on log images and the verdicts."""

import math

import numpy as np
import pytest

from experiments import kingma_welling as kw
from experiments.mnist_vae import published_curves


def test_interpolation_is_linear_in_log_images_and_nan_outside_the_evaluations():
    images = np.array([1e5, 1e6, 1e7])
    bounds = np.array([[-150.0, -120.0, -100.0], [-140.0, -120.0, -110.0]])
    at = np.array([5e4, 1e5, math.sqrt(1e5 * 1e6), 1e7, 2e7])
    out = kw.interpolate(images, bounds, at)
    assert np.isnan(out[:, 0]).all() and np.isnan(out[:, -1]).all()
    np.testing.assert_allclose(out[:, 1], [-150, -140])
    np.testing.assert_allclose(out[:, 2], [-135, -130])  # halfway in log(images)
    np.testing.assert_allclose(out[:, 3], [-100, -110])


def _record(latent, shift, spread=0.0, runs=3):
    """A group whose runs follow the published test curve, shifted by ``shift`` nats."""
    images, bounds = published_curves(latent)["test"]
    order = np.argsort(images)
    evals = np.geomspace(2.5e5, 1e7, 40)  # the programme evaluates every 250,000 images
    base = np.interp(np.log(evals), np.log(images[order]), bounds[order])
    offsets = spread * np.linspace(-1, 1, runs)
    return {"latent": latent, "histories": [
        {"examples_seen": evals.tolist(), "test_bound": (base + shift + o).tolist()}
        for o in offsets]}


@pytest.mark.parametrize("shift, verdict", [(0.0, "within"), (3.0, "above"), (-3.0, "below"),
                                            (0.4, "within")])
def test_a_curve_shifted_from_the_published_one_gets_the_right_verdict(shift, verdict):
    comparison = kw.compare(_record(20, shift))
    points = comparison["points"]
    assert len(points) >= 4  # the digitised points below 10^7 images
    # within the evaluations only: no published point below our first or above our last
    assert all(p["images"] <= 1e7 for p in points)
    # points that fall on our own evaluation grid's straight pieces match to interpolation error
    assert all(abs(p["difference"] - shift) < 1.0 for p in points)
    assert comparison["end"]["verdict"] == verdict


def test_the_spread_over_runs_widens_what_counts_as_within():
    tight = kw.compare(_record(20, 1.0, spread=0.0))
    loose = kw.compare(_record(20, 1.0, spread=3.0))
    assert tight["end"]["verdict"] == "above"
    assert loose["end"]["verdict"] == "within" and loose["end"]["se"] > 0.3


def test_the_table_names_every_latent_and_counts_the_verdicts():
    text = kw.table([kw.compare(_record(20, 3.0)), kw.compare(_record(5, -3.0))])
    assert "| 5 | 3 |" in text and "| 20 | 3 |" in text
    assert "N_z = 20: at each digitised point" in text and "below" in text
