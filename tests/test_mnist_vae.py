"""The mnist-vae study: every series and figure from a tiny run, the pictures' maths, the table.

Uses the MNIST files where :func:`experiments.mnist.data.default_directory` finds them (or
$MNIST_DIR) and skips cleanly when there are none.

Statistical checks (z-tests at the suite-wide FALSE_POSITIVE_RATE of conftest.py, this module's
share split over its NUM_CHECKS comparisons, fixed seeds): training raises the per-image test
ELBO (paired over test images), and the recorded final test bound agrees with a fresh,
independent evaluation; each check is also run on a deliberately wrong claim, which must fail it.
"""

import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import kl_divergence

from conftest import z_threshold
from experiments import mnist_vae
from experiments.__main__ import main
from experiments.common import torch_threads
from experiments.mnist import evaluate

# training improves (1) + its wrong claim (1); recorded bound = fresh one (1) + wrong claim (1)
NUM_CHECKS = 4
Z = z_threshold(NUM_CHECKS, share=NUM_CHECKS / 1000)


@pytest.fixture(scope="module")
def mnist():
    from experiments.mnist.data import MnistError, load_mnist

    try:
        train_images, _ = load_mnist(split="train")
        test_images, test_labels = load_mnist(split="test")
    except MnistError as error:
        pytest.skip(f"no MNIST files: {error}")
    return {"train": train_images[:600], "test": test_images[:400], "labels": test_labels[:400]}


TINY = ["--set", "train_size=300", "--set", "epochs=2", "--set", "eval_every=200",
        "--set", "eval_size=100", "--set", "test_size=200", "--set", "likelihood_k=4",
        "--set", "probe_batch=10", "--set", "num_replicates=4", "--set", "replicate_chunk=4",
        "--set", "manifold_size=4", "--set", "probe_fractions=0,1"]


def test_manifold_grid_is_the_inverse_normal_cdf():
    size = 20
    grid = mnist_vae.manifold_grid(size)
    assert grid.shape == (size * size, 2)
    # Independent computation: scipy's inverse normal CDF at the centres of size equal cells.
    axis = stats.norm.ppf((np.arange(size) + 0.5) / size)
    rows = grid.numpy().reshape(size, size, 2)
    np.testing.assert_allclose(rows[0, :, 0], axis, atol=1e-12)  # z1 grows along a row
    np.testing.assert_allclose(rows[:, 0, 1], axis[::-1], atol=1e-12)  # z2 grows upwards
    assert np.all(rows[:, :, 0] == rows[0, :, 0]) and np.all(rows[:, :, 1].T == rows[:, 0, 1])
    # A linearly spaced grid (a wrong manifold) is not the same grid.
    linear = np.linspace(axis[0], axis[-1], size)
    assert not np.allclose(rows[0, :, 0], linear, atol=1e-3)


def test_latent_direction_is_the_difference_of_the_two_group_means():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(200) % 4
    ink = (labels + 1) * 10 + torch.rand(200, generator=generator) * 8
    means = torch.randn(200, 3, generator=generator)
    direction, thick, thin = mnist_vae.latent_direction(means, ink, labels)
    # Independent computation with numpy: ink relative to the median of the image's class.
    ink_np, labels_np, means_np = ink.numpy(), labels.numpy(), means.numpy()
    relative = ink_np / np.array([np.median(ink_np[labels_np == d]) for d in range(4)])[labels_np]
    want_thick = relative >= np.quantile(relative, 0.75)
    want_thin = relative <= np.quantile(relative, 0.25)
    np.testing.assert_array_equal(thick.numpy(), want_thick)
    np.testing.assert_array_equal(thin.numpy(), want_thin)
    expected = means_np[want_thick].mean(0) - means_np[want_thin].mean(0)
    np.testing.assert_allclose(direction.numpy(), expected, atol=1e-12)
    # Relative ink, not raw ink: every class contributes to both groups.
    assert set(labels[thick].tolist()) == set(labels[thin].tolist()) == {0, 1, 2, 3}
    # A direction from raw ink (the wrong grouping) differs.
    raw_thick, raw_thin = ink_np >= np.quantile(ink_np, 0.75), ink_np <= np.quantile(ink_np, 0.25)
    wrong = means_np[raw_thick].mean(0) - means_np[raw_thin].mean(0)
    assert not np.allclose(direction.numpy(), wrong, atol=1e-3)


def test_images_survive_the_results_file():
    pixels = torch.rand(3, 784, generator=torch.Generator().manual_seed(1))
    stored = json.loads(json.dumps(mnist_vae.encode_images(pixels)))
    back = mnist_vae.decode_images(stored)
    assert back.shape == (3, 28, 28) and back.dtype == np.uint8
    assert np.abs(back.reshape(3, -1) / 255 - pixels.numpy()).max() <= 0.5 / 255 + 1e-12


def test_end_to_end_every_series_every_figure_the_table_and_a_redraw(tmp_path, mnist):
    assert main(["mnist-vae", "--quick", "--out", str(tmp_path), *TINY]) == 0
    path = tmp_path / "results" / "mnist-vae-quick.json"
    assert path.stat().st_size < 2_000_000
    results = json.loads(path.read_text())
    data = results["data"]
    labels = list(mnist_vae.Config().estimators)
    assert data["labels"] == labels and data["reference"] == labels[0]
    for label in labels:
        run = data["runs"][label]
        history = run["history"]
        lengths = {len(history[key]) for key in ("step", "examples_seen", "train_bound",
                                                 "test_bound", "wall_seconds")}
        assert lengths == {3}, label  # 600 images seen, an evaluation every 200
        assert run["examples_seen"] == 600
        for key in ("test_elbo", "log_likelihood", "log_likelihood_se"):
            assert math.isfinite(run[key]), (label, key)
        assert 0 <= run["active_units"] <= 20
        assert [p["examples_seen"] for p in run["probes"]] == [200, 600]
        for probe in run["probes"]:
            for group in ("encoder", "decoder"):
                assert probe["stats"][label][group]["total_variance"] > 0
    # The first run's parameters are probed with every estimator that needs no learned baseline.
    shared = data["runs"][labels[0]]["probes"]
    assert all(set(p["stats"]) == set(labels) - {evaluate.NVIL} for p in shared)
    pictures = data["pictures"]
    for key, count in (("prior_samples", 100), ("reconstructions", 20), ("interpolations", 60),
                       ("arithmetic", 40)):
        assert mnist_vae.decode_images(pictures[key]).shape == (count, 28, 28), key
    assert mnist_vae.decode_images(data["manifold"]["images"]).shape == (16, 28, 28)
    assert data["manifold"]["latent"] == 2
    # plot() draws every figure from the saved results alone; `figures` redraws them.
    names = ["bound", "gradients", "samples", "manifold", "interpolation", "arithmetic"]
    (tmp_path / "figures" / "mnist-vae-manifold-quick.png").unlink()
    assert main(["figures", "--out", str(tmp_path)]) == 0
    for name in names:
        for suffix in ("png", "pdf"):
            assert (tmp_path / "figures" / f"mnist-vae-{name}-quick.{suffix}").stat().st_size > 0
    # A second run resumes every training run from its finished checkpoint: the same numbers.
    assert main(["mnist-vae", "--quick", "--out", str(tmp_path), *TINY]) == 0
    again = json.loads(path.read_text())["data"]
    for label in labels:
        assert again["runs"][label]["history"] == data["runs"][label]["history"]
        assert again["runs"][label]["probes"] == data["runs"][label]["probes"]


def test_results_table_has_every_published_number_and_states_the_scale(tmp_path, mnist):
    assert main(["mnist-vae", "--quick", "--out", str(tmp_path), *TINY,
                 "--set", "estimators=pathwise_analytic_kl", "--set", "manifold_latent=0"]) == 0
    results = json.loads((tmp_path / "results" / "mnist-vae-quick.json").read_text())
    table = mnist_vae.results_table(results)
    for entry in mnist_vae.PUBLISHED:
        assert f"{entry['value']:.2f}" in table, entry["source"]
        assert entry["source"] in table
    for value in ("86.76", "86.35", "85.54", "84.78", "-133.60", "-118.80", "-103.20", "-99.50",
                  "-99.60"):
        assert value in table
    assert "quick CPU run" in table and "not comparable" in table and "k = 4" in table
    assert "L_4" in table
    # The summary printed by `python -m experiments.mnist_vae FILE` ends with the table.
    assert mnist_vae.summary(results).endswith(table)
    # Not quick but short of the protocol's images: reduced scale, still not comparable.
    data = results["data"]
    data["quick"] = False
    reduced = mnist_vae.results_table(results)
    assert "Scale: reduced" in reduced and "not comparable" in reduced
    # Only the protocol's whole budget (all images, epochs, test set, L_5000) is paper scale.
    data.update(train_size=60_000, test_size=10_000, likelihood_k=5000)
    data["runs"]["pathwise_analytic_kl"]["examples_seen"] = 1667 * 60_000
    paper = mnist_vae.results_table(results)
    assert "Scale: paper" in paper and "not comparable" not in paper
    assert mnist_vae.scale_of(results)["kind"] == "paper"


def _per_image_elbos(vae, images, num_samples, seed):
    """(num_samples, N) single-sample ELBOs: log p(x|z) - KL(q || p), torch's KL registry."""
    torch.manual_seed(seed)
    with torch.no_grad():
        q = vae.posterior(images)
        z = q.sample((num_samples,))
        return (vae.observation(z).log_prob(images) - kl_divergence(q, vae.prior)).double()


def _tiny_training(mnist, max_examples):
    from experiments.mnist.data import DeviceDataset
    from experiments.mnist.train import TrainConfig, train

    config = TrainConfig(train_size=0, epochs=2, batch_size=50, eval_every=100, eval_size=300,
                         max_examples=max_examples, seed=3)
    data = DeviceDataset(mnist["train"], "dynamic", seed=3)
    test = DeviceDataset(mnist["test"], "dynamic").evaluation_images(seed=4)
    return train(config, train_data=data, test_images=test), test[:300], config


@pytest.mark.statistical
def test_cpu_protocol_trains_uphill_and_records_the_test_bound_it_claims(mnist):
    with torch_threads(1):  # small networks on a shared CPU: one thread is fastest
        early, test, _ = _tiny_training(mnist, max_examples=100)
        late, _, config = _tiny_training(mnist, max_examples=0)
    before = _per_image_elbos(early.vae, test, 8, seed=5).mean(0)
    after = _per_image_elbos(late.vae, test, 8, seed=6).mean(0)

    def paired_z(a, b):  # b above a, per test image, in standard errors
        difference = b - a
        return (difference.mean() / (difference.std() / math.sqrt(len(difference)))).item()

    assert paired_z(before, after) > Z  # 1,200 images seen raise the test ELBO
    # Deliberately wrong claim: the early model 'improves' on itself (fresh draws). It does not.
    assert paired_z(before, _per_image_elbos(early.vae, test, 8, seed=7).mean(0)) < Z

    history = late.history
    # The same draws: the trainer evaluates under torch.manual_seed(seed). Only the order of
    # float32 sums may differ (thread count), far below the estimate's noise (~1e-3 relative).
    torch.manual_seed(config.seed)
    assert math.isclose(evaluate.test_elbo(late.vae, test), history["test_bound"][-1],
                        rel_tol=1e-5)
    # Statistical: against an independent estimate with other draws and many samples.
    samples = _per_image_elbos(late.vae, test, 16, seed=8)
    spread = samples.var(0).mean().item()  # the mean per-image variance of one sample

    def recorded_z(recorded):
        se = math.sqrt(spread * (1 + 1 / samples.shape[0]) / samples.shape[1])
        return (recorded - samples.mean().item()) / se

    assert abs(recorded_z(history["test_bound"][-1])) < Z
    # Deliberately wrong claim: the bound recorded at the first evaluation is the final one.
    assert abs(recorded_z(history["test_bound"][0])) > Z
    assert history["test_bound"][-1] > history["test_bound"][0]


def test_bad_config_fails_with_one_line_naming_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="unknown estimator 'nope'"):
        main(["mnist-vae", "--quick", "--out", str(tmp_path), "--set", "estimators=nope"])
    with pytest.raises(SystemExit, match="score_function_loo:2"):
        main(["mnist-vae", "--quick", "--out", str(tmp_path), "--set",
              "estimators=score_function_loo"])
    with pytest.raises(SystemExit, match="protocol=kingma-welling or burda"):
        main(["mnist-vae", "--quick", "--out", str(tmp_path), "--set", "protocol=nope"])
    with pytest.raises(SystemExit, match="K after ':' must be an integer"):
        main(["mnist-vae", "--quick", "--out", str(tmp_path), "--set", "estimators=iwae:x"])
