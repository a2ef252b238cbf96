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


def test_the_summary_row_gives_the_verdict_against_the_published_end_value():
    # at 10^7 images the published N_z = 20 curve is near -105, 5.5 nats short of its end value
    # (-99.52 at 2.5e8): a curve 10 nats above the published one ends above that end value, one
    # on it ends below it
    far, on = kw.compare(_record(20, 10.0)), kw.compare(_record(20, 0.0))
    assert far["end_versus_published_end"]["verdict"] == "above"
    assert on["end_versus_published_end"]["verdict"] == "below"
    summary = kw.table([far]).splitlines()[2]
    assert f"| {far['end_versus_published_end']['difference']:+.2f} (above) |" in summary


def test_the_figure_adds_a_panel_of_the_margins_over_the_published_end_values():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [_record(20, 10.0), _record(5, 0.0, spread=2.0)]
    fig = kw.plot(plt, records)
    axes = [ax for ax in fig.axes if ax.axison]
    assert len(axes) == 3  # one panel a latent, then the margins, latents in increasing order
    margins = axes[2]
    expected = [kw.compare(r)["end_versus_published_end"] for r in (records[1], records[0])]
    points = next(line for line in margins.get_lines() if line.get_marker() == "o")
    np.testing.assert_allclose(np.asarray(points.get_ydata(), dtype=float),
                               [m["difference"] for m in expected])
    labels = [t.get_text() for t in margins.texts]
    assert labels == [f"{m['difference']:+.1f}\n{m['verdict']}" for m in expected]
    assert [t.get_text() for t in margins.get_xticklabels()] == ["5", "20"]
    plt.close(fig)
    single = kw.plot(plt, records[:1])
    assert len([ax for ax in single.axes if ax.axison]) == 1  # no margins panel for one latent
    plt.close(single)
