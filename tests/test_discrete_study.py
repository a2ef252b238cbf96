"""The discrete study: the toy's exact moments against closed forms, its measured variances
against them, a group of SBN runs against solo runs, bad configs, and a tiny end-to-end run.

The toy's closed forms (Bernoulli, one latent, p = sigma(theta), Delta = f(1) - f(0) = 1 - 2t):
score_function with K samples: Var = (sum_b q(b) f(b)^2 (b - p)^2 - g^2) / K, g = Delta p (1 - p);
score_function_loo with K = 2: (1/2) Delta with probability 2 p (1 - p), else 0;
ARM with one pair: E g^2 = (2 Delta^2 / 3) (1/8 - (m - 1/2)^3), m = sigma(|theta|);
DisARM with one pair: Var = Delta^2 m^2 (1 - m) (m - 1/2).

The statistical check runs with a fixed seed and spends a 1/STATISTICAL_BUDGET share of the
suite's FALSE_POSITIVE_RATE (conftest.z_threshold, Bonferroni across its comparisons).
"""

import json
import math

import numpy as np
import pytest
import torch

from conftest import z_threshold
from experiments import discrete as d
from experiments.__main__ import main
from experiments.common import save_results

THETAS = (-1.7, 0.0, 0.4, 2.3)


def closed_form(name, theta, t, K=2):
    p = 1 / (1 + math.exp(-theta))
    m = max(p, 1 - p)
    delta = (1 - t) ** 2 - t ** 2
    g = delta * p * (1 - p)
    if name == "score_function":
        second = p * ((1 - t) ** 2 * (1 - p)) ** 2 + (1 - p) * (t ** 2 * p) ** 2
        return g, (second - g ** 2) / K
    if name == "score_function_loo":
        return g, delta ** 2 / 4 * 2 * p * (1 - p) - g ** 2
    if name == "arm":
        return g, 2 * delta ** 2 / 3 * (1 / 8 - (m - 0.5) ** 3) - g ** 2
    if name == "disarm":
        return g, delta ** 2 * m ** 2 * (1 - m) * (m - 0.5)
    raise ValueError(name)


@pytest.mark.parametrize("name", ["score_function", "score_function_loo", "arm", "disarm"])
def test_quadrature_of_the_registry_estimates_equals_the_closed_forms(name):
    for theta in THETAS:
        for t in (0.45, 0.499):
            mean, variance = d.quadrature_moments(name, theta, t, 2, 12)
            exact_mean, exact_variance = closed_form(name, theta, t)
            assert mean == pytest.approx(exact_mean, rel=1e-9, abs=1e-15)
            assert variance == pytest.approx(exact_variance, rel=1e-8, abs=1e-15)


def test_quadrature_needs_its_split_at_the_jumps(monkeypatch):
    # twin: one rule over [0, 1], not split where b jumps, misses the closed form
    rule = d._gauss_legendre
    monkeypatch.setattr(d, "_gauss_legendre", lambda breaks, nodes: rule([], nodes))
    _, variance = d.quadrature_moments("score_function", 0.4, 0.45, 2, 12)
    assert variance != pytest.approx(closed_form("score_function", 0.4, 0.45)[1], rel=1e-4)


def test_unbiased_estimators_integrate_to_the_exact_gradient_and_the_relaxations_do_not():
    t = torch.tensor(0.45, dtype=torch.float64)
    for theta in (-1.2, 0.7):
        exact = d.exact_gradient(torch.tensor([theta], dtype=torch.float64), t, "bernoulli")
        assert exact.item() == pytest.approx(closed_form("arm", theta, 0.45)[0], rel=1e-12)
        assert d.quadrature_moments("rebar", theta, 0.45, 2, 24)[0] == pytest.approx(
            exact.item(), rel=1e-6)
        for biased in ("gumbel_softmax", "straight_through"):
            assert abs(d.quadrature_moments(biased, theta, 0.45, 2, 24)[0] - exact.item()) > 1e-3


def test_categorical_enumeration_with_two_categories_is_the_bernoulli_toy():
    # C = 2, logits (theta, 0): the gradient is (g, -g), so the total variance is twice the
    # Bernoulli one, with Delta = f(0) - f(1) = 2 (t_1 - t_0)
    theta, t0, t1 = 0.8, 0.45, 0.5
    target = torch.tensor([t0, t1], dtype=torch.float64)
    mean, variance = d.categorical_moments("score_function_loo", torch.tensor(
        [theta, 0.0], dtype=torch.float64), target, 2)
    p = 1 / (1 + math.exp(-theta))
    delta = 2 * (t1 - t0)
    loo = delta ** 2 / 4 * 2 * p * (1 - p) - (delta * p * (1 - p)) ** 2
    assert variance == pytest.approx(2 * loo, rel=1e-12)
    np.testing.assert_allclose(mean, [delta * p * (1 - p), -delta * p * (1 - p)], rtol=1e-12)


@pytest.mark.statistical
def test_measured_toy_variances_agree_with_the_exact_ones():
    torch.manual_seed(20240611)
    config = d.Config(toy_replicates=4000)
    names = ("score_function", "score_function_loo", "rebar", "gumbel_softmax", "arm")
    thetas = torch.tensor([[-1.0], [0.6]], dtype=torch.float64)
    threshold = z_threshold(len(names) * len(thetas))
    t = torch.tensor(0.45, dtype=torch.float64)
    for name in names:
        measured = d.measure_toy(name, thetas, t, "bernoulli", config, config.toy_replicates)
        for i, theta in enumerate(thetas[:, 0].tolist()):
            exact = d.quadrature_moments(name, theta, 0.45, 2, 24)[1]
            z = (measured["variance"][i] - exact) / measured["variance_se"][i]
            assert abs(z) < threshold, (name, theta, z)
    # twin: the single-sample variance (K = 1 read as K = 2) is rejected by the same check
    measured = d.measure_toy("score_function", thetas, t, "bernoulli", config, 4000)
    wrong = d.quadrature_moments("score_function", -1.0, 0.45, 1, 24)[1]
    assert abs((measured["variance"][0] - wrong) / measured["variance_se"][0]) > threshold


# --------------------------------------------------------------------------------------------
# Groups of SBN runs
# --------------------------------------------------------------------------------------------

# A minibatch of 8 images and K = 2: the prior's gradient at its initial logits 0 is a sum of
# +-1/32, exact in float32, so that a tie (as many ones as zeros) is exactly 0 in a group and
# alone: Adam turns a rounding error of either sign at an exact zero into a step of lr.
TINY = dict(latent=8, hidden=16, steps=3, batch_size=8, eval_every=2, train_eval_images=20,
            iwae_images=10, iwae_samples=4, probe_fractions=(0.0,), probe_replicates=4,
            probe_batch=8)


def synthetic_data(images=60):
    generator = torch.Generator().manual_seed(3)
    pixels = torch.rand(images, d.PIXELS, generator=generator, dtype=torch.float32)
    fixed = (torch.rand(images, d.PIXELS, generator=generator, dtype=torch.float32) < pixels).float()
    return {"train": pixels, "pixel_mean": pixels.mean(0), "train_eval": fixed[:20],
            "probe": fixed[-8:], "test": fixed[:30]}


def _final(record, run):
    network = record["group"].run_network(run)
    return torch.cat([p.detach().reshape(-1) for p in network.parameters()])


@pytest.mark.parametrize("name, kind", [("disarm", "nonlinear"), ("relax", "linear"),
                                        ("score_function_loo", "linear")])
def test_run_r_of_a_group_is_the_solo_run_of_seed_s_plus_r(name, kind, monkeypatch):
    config, data = d.Config(**TINY), synthetic_data()
    group = d.train_sbn(name, kind, config, data, seeds=[5, 6], probing=False)
    solo = d.train_sbn(name, kind, config, data, seeds=[6], probing=False)
    torch.testing.assert_close(_final(group, 1), _final(solo, 0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(group["train_elbo"][1], solo["train_elbo"][0], rtol=1e-5)
    np.testing.assert_allclose(group["test_elbo"][1], solo["test_elbo"][0], rtol=1e-5)
    # twin: a group whose runs share run 0's estimator noise fails the same comparison
    def coupled(self, shape):
        share = torch.rand((shape[0], *shape[2:]), generator=self.streams.generators[0])
        return share.unsqueeze(1).expand(shape)

    monkeypatch.setattr(d.SbnGroup, "uniform", coupled)
    wrong = d.train_sbn(name, kind, config, data, seeds=[5, 6], probing=False)
    assert not torch.allclose(_final(wrong, 1), _final(solo, 0), rtol=1e-5, atol=1e-6)


def test_encoder_probe_gives_a_finite_variance_per_run():
    config = d.Config(**{**TINY, "steps": 1})
    record = d.train_sbn("relax", "nonlinear", config, synthetic_data(), seeds=[0, 1])
    (probe,) = record["probes"]
    assert len(probe) == 2
    assert all(np.isfinite(r["total_variance"]) and r["total_variance"] > 0 for r in probe)


# --------------------------------------------------------------------------------------------
# Config and end to end
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("changes, words", [
    (dict(num_samples=3), "num_samples must be even"),
    (dict(estimators=("pathwise",)), "unknown SBN estimator(s) pathwise"),
    (dict(targets=(0.7,)), "targets must lie in [0, 0.5)"),
    (dict(parts=("toys",)), "parts must be toy and/or sbn"),
])
def test_bad_config_is_refused_in_one_line(changes, words):
    with pytest.raises(SystemExit) as error:
        d.Config(**changes)
    message = str(error.value)
    assert message.startswith("error: discrete:") and words in message and "\n" not in message


def _has_mnist() -> bool:
    from experiments.mnist.data import MnistError, load_mnist

    try:
        load_mnist(split="test")
        return True
    except MnistError:
        return False


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_end_to_end_results_figures_summary_and_a_redraw(tmp_path, capsys):
    parts = "toy,sbn" if _has_mnist() else "toy"
    settings = ["targets=0.45", "toy_curve_points=3", "toy_points=2", "toy_replicates=50",
                "quadrature_nodes=4", "toy_runs=2", "toy_steps=4", "toy_record_every=2",
                "toy_probe_every=2", "toy_probe_replicates=10", f"parts={parts}",
                "models=linear", "estimators=disarm,relax", "runs=2", "steps=2",
                "train_images=200", "eval_every=1", "train_eval_images=20", "test_images=50",
                "iwae_images=10", "iwae_samples=3", "probe_fractions=0,1",
                "probe_replicates=3", "probe_batch=10"]
    argv = ["discrete", "--quick", "--out", str(tmp_path)]
    for item in settings:
        argv += ["--set", item]
    assert main(argv) == 0
    path = tmp_path / "results" / "discrete-quick.json"
    results = json.loads(path.read_text())
    data = results["data"]
    assert results["metadata"]["study"] == "discrete"
    assert set(data["toy"]["parts"]) == {"bernoulli-0.45", "categorical-0.45"}
    bernoulli = data["toy"]["parts"]["bernoulli-0.45"]
    assert set(bernoulli["trace"]) == set(d.TOY_ESTIMATORS["bernoulli"])
    assert set(bernoulli["exact"]) == set(d.EXACT_TOY)
    assert "relax" not in bernoulli["measured"]
    figures = ["discrete-toy-variance-quick.png", "discrete-toy-trace-quick.png"]
    if "sbn" in parts:
        sbn = data["sbn"]["runs"]["linear"]
        assert set(sbn) == {"disarm", "relax"}
        for record in sbn.values():
            assert np.shape(record["train_elbo"]) == (2, 3)
            assert len(record["test_elbo"]) == len(record["test_iwae"]) == 2
            assert len(record["probes"]) == 2 and len(record["probes"][0]) == 2
        figures.append("discrete-sbn-quick.png")
    assert _finite(data)
    for name in figures:
        assert (tmp_path / "figures" / name).stat().st_size > 0
    # figures redraw from saved results alone (the cheapest part's, as a full-scale file)
    other = tmp_path / "other"
    redrawn = "discrete-sbn.png" if "sbn" in parts else "discrete-toy-variance.png"
    kept = {key: data[key] for key in ("sbn",) if key in data} or {"toy": data["toy"]}
    save_results(other / "results" / "discrete.json", kept, results["metadata"])
    assert main(["figures", "--from", str(other)]) == 0
    assert (other / "figures" / redrawn).stat().st_size > 0
    capsys.readouterr()
    assert d.main([str(path)]) == 0
    printed = capsys.readouterr().out
    assert "Bernoulli, t = 0.45" in printed and "disarm" in printed
    if "sbn" in parts:  # our training ELBO beside the published one, for relax (run) only
        relax = [line for line in printed.splitlines() if "published" in line and "relax" in line]
        assert len(relax) == 1 and "linear" in relax[0] and "not run" not in relax[0]
        assert f"{d.PUBLISHED['values']['linear']['relax']:8.2f}" in relax[0]
