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
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch.distributions import kl_divergence

from conftest import STATISTICAL_BUDGET, z_threshold
from experiments import mnist_vae
from experiments.__main__ import main
from experiments.common import torch_threads
from experiments.mnist import evaluate

# training improves (1) + its wrong claim (1); recorded bound = fresh one (1) + wrong claim (1)
NUM_CHECKS = 4
Z = z_threshold(NUM_CHECKS, share=NUM_CHECKS / STATISTICAL_BUDGET)


@pytest.fixture(scope="module")
def mnist():
    from experiments.mnist.data import MnistError, load_mnist

    try:
        train_images, _ = load_mnist(split="train")
        test_images, test_labels = load_mnist(split="test")
    except MnistError as error:
        pytest.skip(f"no MNIST files: {error}")
    return {"train": train_images[:600], "test": test_images[:400], "labels": test_labels[:400]}


TINY = ["--set", "runs=2", "--set", "train_size=300", "--set", "epochs=2", "--set", "eval_every=200",
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


# Three groups of three kinds: no learned state, NVIL's network (probed only on its own runs),
# and K > 1; the trainer's tests train every estimator.
SOME = ["--set", f"estimators=pathwise_analytic_kl,{evaluate.NVIL},iwae:2"]


def test_end_to_end_every_series_every_figure_the_table_and_a_redraw(tmp_path, mnist,
                                                                    monkeypatch):
    # The figures are drawn once, by the figures command from the saved results below.
    with monkeypatch.context() as patch:
        patch.setattr(mnist_vae, "plot", lambda *args: [])
        assert main(["mnist-vae", "--quick", "--out", str(tmp_path), *TINY, *SOME]) == 0
    path = tmp_path / "results" / "mnist-vae-quick.json"
    assert path.stat().st_size < 2_000_000
    results = json.loads(path.read_text())
    data = results["data"]
    labels = ["pathwise_analytic_kl", evaluate.NVIL, "iwae:2"]
    assert data["labels"] == labels and data["reference"] == labels[0]
    assert data["num_runs"] == 2
    for label in labels:
        run = data["runs"][label]
        assert run["seeds"] == [0, 1] and len(run["histories"]) == len(run["finals"]) == 2
        for history in run["histories"]:
            lengths = {len(history[key]) for key in ("step", "examples_seen", "train_bound",
                                                     "test_bound", "wall_seconds")}
            assert lengths == {3}, label  # 600 images seen, an evaluation every 200
        assert run["examples_seen"] == 600
        # the two runs differ (their own seeds), and the group's numbers are their mean and s.e.
        first, second = (f["test_elbo"] for f in run["finals"])
        assert first != second
        assert run["test_elbo"] == pytest.approx((first + second) / 2)
        assert run["test_elbo_spread_se"] == pytest.approx(abs(first - second) / 2)
        for final in run["finals"]:
            for key in ("test_elbo", "log_likelihood", "log_likelihood_se"):
                assert math.isfinite(final[key]), (label, key)
            assert 0 <= final["active_units"] <= 20
        assert [p["examples_seen"] for p in run["probes"]] == [200, 600]
        assert not Path(run["checkpoint"]).is_absolute()
        for probe in run["probes"]:
            assert len(probe["runs"]) == 2  # each run probed with its own estimator
            for measured in [probe["stats"][label], *probe["runs"]]:
                for group in ("encoder", "decoder"):
                    assert measured[group]["total_variance"] > 0
            assert probe["runs"][0] == probe["stats"][label]
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
    assert not (tmp_path / "figures" / "mnist-vae-manifold-quick.png").exists()
    assert main(["figures", "--from", str(tmp_path)]) == 0
    for name in names:
        for suffix in ("png", "pdf"):
            assert (tmp_path / "figures" / f"mnist-vae-{name}-quick.{suffix}").stat().st_size > 0
    # A second run resumes every training run from its finished checkpoint: the same numbers
    # (its figures are the ones above: not drawn again here).
    monkeypatch.setattr(mnist_vae, "plot", lambda *args: [])
    assert main(["mnist-vae", "--quick", "--out", str(tmp_path), *TINY, *SOME]) == 0
    again = json.loads(path.read_text())["data"]
    for label in labels:
        assert again["runs"][label]["histories"] == data["runs"][label]["histories"]
        assert again["runs"][label]["probes"] == data["runs"][label]["probes"]


def test_results_table_has_every_published_number_and_states_the_scale(tmp_path, mnist,
                                                                      monkeypatch):
    monkeypatch.setattr(mnist_vae, "plot", lambda *args: [])  # the table only
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
    record = data["runs"]["pathwise_analytic_kl"]
    assert f"| pathwise_analytic_kl | 2 | 20 | {record['test_elbo']:.2f} ± " \
           f"{record['test_elbo_spread_se']:.2f} |" in reduced
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
    # The same draws: the trainer evaluates from the run's own "evaluate" stream. Only the order
    # of float32 sums may differ (thread count), far below the estimate's noise (~1e-3 relative).
    from experiments.mnist.group import test_bounds

    assert math.isclose(test_bounds(late.group, test, config.seeds).item(),
                        history["test_bound"][-1], rel_tol=1e-5)
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


# --------------------------------------------------------------------------------------------
# Small pieces, on random images or a tiny fake MNIST folder (no MNIST files needed)
# --------------------------------------------------------------------------------------------


def _small_vae(seed=0):
    from experiments.mnist.models import VAE, Architecture

    torch.manual_seed(seed)
    return VAE(Architecture((16,), 3, "tanh"))


def _random_images(count, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 28, 28), generator=generator, dtype=torch.uint8)


def _fake_mnist(directory, train_count=300, test_labels=None):
    """The four IDX files, uncompressed, of random images; test labels as given (4 x 0..9)."""
    import struct

    def write(name, array):
        array = np.ascontiguousarray(array, dtype=np.uint8)
        header = struct.pack(f">i{array.ndim}i", 0x0800 | array.ndim, *array.shape)
        (directory / name).write_bytes(header + array.tobytes())

    test_labels = np.arange(40) % 10 if test_labels is None else np.asarray(test_labels)
    write("train-images-idx3-ubyte", _random_images(train_count, 1).numpy())
    write("train-labels-idx1-ubyte", np.arange(train_count) % 10)
    write("t10k-images-idx3-ubyte", _random_images(len(test_labels), 2).numpy())
    write("t10k-labels-idx1-ubyte", test_labels)
    return directory


def test_measure_gives_a_learned_baseline_only_to_the_estimator_that_trained_it():
    from estimators import EmaBaseline
    from experiments.mnist.group import NvilBaseline

    vae = _small_vae()
    x = torch.bernoulli(torch.full((6, 784), 0.3), generator=torch.Generator().manual_seed(1))
    config = mnist_vae.Config(num_replicates=3, replicate_chunk=3)
    ema = EmaBaseline()
    ema.update(torch.tensor([-300.0]))
    torch.manual_seed(2)
    nvil = NvilBaseline()
    nvil.centre.fill_(-250.0)

    def reference(name, **kwargs):  # gradient_variance as the trainer's own run would call it
        return evaluate.gradient_variance(vae, x, [name], 3, 1, replicate_chunk=3, seed=5,
                                          **kwargs)[name]

    fresh_ema = reference("score_function_ema")
    trained_ema = reference("score_function_ema", options={"score_function_ema": {"state": ema}})
    trained_nvil = reference(evaluate.NVIL, baseline=nvil)
    assert trained_ema != fresh_ema  # the learned state matters, so the checks below can see it
    for labels in (["score_function_ema", evaluate.NVIL], [evaluate.NVIL, "score_function_ema"]):
        # No learned baseline: NVIL is skipped, score_function_ema starts from a fresh average.
        out = mnist_vae._measure(vae, None, "pathwise", x, labels, config, seed=5)
        assert out == {"score_function_ema": fresh_ema}
        # The EMA run's average goes to score_function_ema only; NVIL has no network to use.
        out = mnist_vae._measure(vae, ema, "score_function_ema", x, labels, config, seed=5)
        assert out == {"score_function_ema": trained_ema}
        assert ema.value.item() == -300.0  # measuring does not move the run's average
        # The NVIL run's network goes to NVIL only; score_function_ema starts afresh.
        out = mnist_vae._measure(vae, nvil, evaluate.NVIL, x, labels, config, seed=5)
        assert out == {"score_function_ema": fresh_ema, evaluate.NVIL: trained_nvil}


def _probe_data(total=200):
    from experiments.mnist.data import DeviceDataset

    test = DeviceDataset(_random_images(40, 4)).evaluation_images(seed=1)
    return {"train": DeviceDataset(_random_images(total, 3)), "test": test[:20], "test_all": test,
            "probe_x": DeviceDataset(_random_images(6, 5)).evaluation_images(seed=2),
            "total": total}


def _probe_config(**changes):
    settings = dict(runs=2, epochs=1, batch_size=50, eval_every=100, eval_size=20, likelihood_k=2,
                    probe_fractions=(0.0, 1.0), num_replicates=3, replicate_chunk=3)
    return mnist_vae.Config(**{**settings, **changes})


def test_resumed_probes_must_have_been_measured_with_the_same_settings(tmp_path):
    from experiments.common import Paths

    paths, data = Paths(root=tmp_path), _probe_data()
    labels = ["pathwise_analytic_kl:1", "stl"]  # K given: num_samples changes stl's K only
    config = _probe_config()
    with torch_threads(1):
        first, _ = mnist_vae.train_group(config, labels[0], paths, data, labels)
        assert [p["examples_seen"] for p in first["probes"]] == [100, 200]
        again, _ = mnist_vae.train_group(config, labels[0], paths, data, labels)
        assert again["probes"] == first["probes"]  # resumed: the probes are read back
        probes_file = mnist_vae.checkpoint_path(
            tmp_path, labels[0], mnist_vae.train_config(config, labels[0])
        ).with_suffix(".probes.json")
        changed = [config.replace(num_replicates=4), config.replace(probe_batch=7),
                   config.replace(probe_fractions=(0.0, 0.5, 1.0)),
                   config.replace(replicate_chunk=2), config.replace(num_samples=2)]
        for other in changed:  # num_samples: stl's K (its label names none)
            with pytest.raises(SystemExit, match=r"^error: mnist-vae: run pathwise_analytic_kl:1: "
                                                 r".*--set resume=false") as error:
                mnist_vae.train_group(other, labels[0], paths, data, labels)
            assert "\n" not in str(error.value)
        with pytest.raises(SystemExit, match="--set resume=false"):  # other estimators probed
            mnist_vae.train_group(config, labels[0], paths, data, labels[:1])
        # A probes file of the old format (a bare list, no settings) is a mismatch too.
        probes_file.write_text(json.dumps(first["probes"]))
        with pytest.raises(SystemExit, match="--set resume=false"):
            mnist_vae.train_group(config, labels[0], paths, data, labels)
        # A truncated or foreign probes file is named in one line, in each command's words.
        for text, what in (('{"settings": {', "is damaged or not JSON (JSONDecodeError)"),
                           ('{"settings": 3, "probes": []}', "records no probe settings")):
            probes_file.write_text(text)
            for who, advice in (("mnist-vae", "--set resume=false"),
                                ("paper", "to train the group afresh")):
                with pytest.raises(SystemExit) as error:
                    mnist_vae.train_group(config, labels[0], paths, data, labels, who=who)
                assert what in str(error.value) and advice in str(error.value)
                assert str(error.value).startswith(f"error: {who}: ")
                assert "\n" not in str(error.value)
        # So is a resumed checkpoint that should have probes and has no probes file.
        probes_file.unlink()
        with pytest.raises(SystemExit, match="--set resume=false"):
            mnist_vae.train_group(config, labels[0], paths, data, labels)
        # resume=false trains afresh and records the new settings.
        fresh = config.replace(num_replicates=4, resume=False)
        record, _ = mnist_vae.train_group(fresh, labels[0], paths, data, labels)
        assert [p["examples_seen"] for p in record["probes"]] == [100, 200]
        resumed, _ = mnist_vae.train_group(fresh.replace(resume=True), labels[0], paths, data,
                                         labels)
        assert resumed["probes"] == record["probes"]


def test_study_counts_the_images_the_trainer_runs():
    from experiments.mnist.train import TrainConfig, total_steps, train

    # 130 images is not a whole number of minibatches of 50: the trainer runs 3 steps, 150 images.
    config = _probe_config(max_examples=130)
    data = _probe_data()
    assert mnist_vae.total_examples(config, len(data["train"])) == 150
    trainer_config = mnist_vae.train_config(config, "pathwise_analytic_kl")
    with torch_threads(1):
        result = train(trainer_config.replace(num_runs=1), train_data=data["train"],
                       test_images=data["test"])
    assert result.history["examples_seen"][-1] == 150 == total_steps(trainer_config, 200) * 50
    # The iwae schedule ends after its 3280 passes, whatever epochs says.
    burda = TrainConfig(schedule="iwae", epochs=5000, batch_size=20)
    assert total_steps(burda, 60_000) == 3280 * 3000
    assert total_steps(burda.replace(max_examples=41), 60_000) == 3
    assert mnist_vae.total_examples(mnist_vae.Config(protocol="burda", epochs=5000), 60_000) \
        == 3280 * 60_000


def test_fixed_binarization_probes_a_minibatch_of_the_training_data(tmp_path):
    folder = _fake_mnist(tmp_path)
    config = mnist_vae.Config(binarization="fixed", seed=1, data_dir=str(folder), probe_batch=10)
    data = mnist_vae.load_data(config)
    assert torch.equal(data["probe_x"], data["train"].data[:10])


def test_trainer_settings_are_checked_before_any_run(tmp_path):
    folder = _fake_mnist(tmp_path)
    for setting, needle in (("binarization=otsu", "binarization must be one of"),
                            ("learning_rate=2", "learning_rate must be a positive number")):
        with pytest.raises(SystemExit, match=r"^error: mnist-vae: run pathwise_analytic_kl: "
                                             + needle) as error:
            main(["mnist-vae", "--quick", "--out", str(tmp_path), "--set",
                  f"data_dir={folder}", "--set", setting])
        assert "\n" not in str(error.value)
    assert not (tmp_path / "checkpoints").exists()


def test_test_set_too_small_for_the_pictures_fails_before_training(tmp_path):
    # Four of every class among the first 44 test labels, not among the first 20.
    labels = np.concatenate([np.arange(20) % 10, [0] * 4, np.arange(20) % 10])
    folder = _fake_mnist(tmp_path, test_labels=labels)
    base = ["mnist-vae", "--quick", "--out", str(tmp_path), "--set", f"data_dir={folder}",
            *TINY, "--set", "estimators=pathwise_analytic_kl", "--set", "manifold_latent=0"]
    with pytest.raises(SystemExit, match=r"^error: mnist-vae: test_size=20 .* 4 of every "
                                         r"class.*test_size=44") as error:
        main([*base, "--set", "test_size=20"])
    assert "\n" not in str(error.value)
    assert not (tmp_path / "checkpoints").exists()
    with pytest.raises(SystemExit, match="test_size must be >= 0"):
        main([*base, "--set", "test_size=-1"])
    config = mnist_vae.Config(data_dir=str(folder), test_size=44, eval_size=10)
    assert mnist_vae.load_data(config)["test_all"].shape[0] == 44


def test_summary_main_reads_several_files_and_falls_back_to_the_quick_one(tmp_path, capsys,
                                                                          monkeypatch):
    from experiments import common

    real_paths = common.Paths
    monkeypatch.setattr(common, "Paths", lambda: real_paths(root=tmp_path))
    for stem in ("study-quick", "a", "b"):
        common.save_results(tmp_path / "results" / f"{stem}.json", {"value": stem},
                            {"study": "study"})

    def summary(results):
        return "one " + results["data"]["value"]

    def table(files):
        return "table " + " ".join(r["data"]["value"] for r in files)

    assert common.summary_main("study", summary, [], table=table, quick_fallback=True) == 0
    assert capsys.readouterr().out == "one study-quick\n"
    files = [str(tmp_path / "results" / f"{stem}.json") for stem in ("a", "b")]
    assert common.summary_main("study", summary, files, table=table) == 0
    assert capsys.readouterr().out == "table a b\n"
    assert common.summary_main("study", summary, files[:1], table=table) == 0
    assert capsys.readouterr().out == "one a\n"
    # Without the fallback the default is results/study.json alone, as before.
    with pytest.raises(SystemExit, match="no results file .*study.json"):
        common.summary_main("study", summary, [])


def test_main_prints_one_summary_or_one_table_of_several_files(capsys):
    from experiments.common import ROOT, load_results

    committed = ROOT / "results" / "mnist-vae-quick.json"
    if not committed.exists():
        pytest.skip("no committed results/mnist-vae-quick.json")
    results = load_results(committed)
    assert mnist_vae.main([str(committed)]) == 0
    assert capsys.readouterr().out.strip() == mnist_vae.summary(results)
    assert mnist_vae.main([str(committed), str(committed)]) == 0
    assert capsys.readouterr().out.strip() == mnist_vae.results_table([results, results])


def test_a_group_draws_in_its_estimators_family_style():
    # Lines were dashed for the K-sample bound and solid otherwise, in a palette where vimco and
    # pathwise_analytic_kl were one brown; now each family has a hue and each member a style.
    from experiments.style import estimator_style, family_of

    def style(label, estimator):
        return mnist_vae._style({"label": label, "estimator": estimator})

    assert style("iwae:5", "iwae")["color"] == estimator_style("iwae")["color"]
    assert family_of("vimco:5") == family_of("iwae") == "K-sample bound"
    assert family_of(evaluate.NVIL) == "score function"
    drawn = [tuple(style(label, label.split(":")[0].split("+")[0]).values())
             for label in ("pathwise", "pathwise_analytic_kl", "score_function",
                           "score_function_loo:2", evaluate.NVIL, "iwae:5", "vimco:5")]
    assert len(set(drawn)) == len(drawn)  # no two groups alike


def test_decode_mean_is_the_decoders_mean():
    from experiments.mnist.models import VAE, Architecture

    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for likelihood in ("bernoulli", "gaussian"):
        torch.manual_seed(0)
        vae = VAE(Architecture((16,), 3, "tanh"), likelihood=likelihood)
        out = vae.decoder(z.to(next(vae.parameters()).dtype)).detach()
        expected = torch.sigmoid(out) if likelihood == "bernoulli" else out
        assert torch.allclose(mnist_vae.decode_mean(vae, z), expected, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Run r of a group reports what the solo run of seed s + r reports: every number, at batch 100
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def idx_files(tmp_path):
    from test_mnist_data import write_split

    folder = tmp_path / "mnist"
    folder.mkdir()
    write_split(folder, "train", 300, gz=False)
    write_split(folder, "test", 200, gz=False, seed=1)  # at least 4 digits of every class
    return folder


def _reported(tmp_path, folder, seed, runs):
    """The record the study keeps of one group: its histories, final numbers and probes."""
    from experiments.common import Paths

    config = mnist_vae.Config(
        data_dir=str(folder), seed=seed, runs=runs, estimators=("pathwise_analytic_kl",),
        latent=4, train_size=300, epochs=2, eval_every=100, eval_size=50, likelihood_k=3,
        probe_batch=10, num_replicates=2, replicate_chunk=2, probe_fractions=(0.0, 1.0),
        manifold_latent=0, dtype="float64")
    assert mnist_vae.settings(config)["batch_size"] == 100
    data = mnist_vae.load_data(config)
    record, _ = mnist_vae.train_group(config, "pathwise_analytic_kl", Paths(tmp_path), data,
                                      ["pathwise_analytic_kl"])
    return record


def _assert_run_is_solo(group, run, solo):
    for key, values in group["histories"][run].items():
        if key != "wall_seconds":
            np.testing.assert_allclose(values, solo["histories"][0][key], rtol=1e-10,
                                       err_msg=key)
    assert group["finals"][run].keys() == solo["finals"][0].keys()
    for key, value in group["finals"][run].items():
        assert value == pytest.approx(solo["finals"][0][key], rel=1e-10), key
    assert len(group["probes"]) == len(solo["probes"]) == 2
    for ours, theirs in zip(group["probes"], solo["probes"]):
        assert ours["examples_seen"] == theirs["examples_seen"]
        for part in ("encoder", "decoder"):
            for key, value in ours["runs"][run][part].items():
                assert value == pytest.approx(theirs["runs"][0][part][key], rel=1e-10), key


def test_every_number_of_run_r_of_a_group_is_the_solo_run_of_seed_s_plus_r(tmp_path, idx_files):
    """Histories (train and test bounds at each evaluation), final test ELBO, L_k, its standard
    error, active units and gradient probes of run 1 of a group seeded 0 against the solo run
    seeded 1, at batch 100: the test images and the probe minibatch are one draw whatever the
    seed, and each run's own draws come from its own seed."""
    group = _reported(tmp_path / "group", idx_files, seed=0, runs=2)
    solo = _reported(tmp_path / "solo", idx_files, seed=1, runs=1)
    _assert_run_is_solo(group, 1, solo)


def test_a_test_draw_that_follows_the_group_seed_fails_the_same_check(tmp_path, idx_files,
                                                                      monkeypatch):
    # The negative test: each group's test images binarized from its own seed.
    from experiments.mnist import data

    real = mnist_vae.load_data

    def per_group(config):
        monkeypatch.setattr(data, "TEST_SEED", config.seed + 1)
        return real(config)

    monkeypatch.setattr(mnist_vae, "load_data", per_group)
    group = _reported(tmp_path / "group", idx_files, seed=0, runs=2)
    solo = _reported(tmp_path / "solo", idx_files, seed=1, runs=1)
    with pytest.raises(AssertionError):
        _assert_run_is_solo(group, 1, solo)
    assert group["histories"][1]["train_bound"] == solo["histories"][0]["train_bound"]


def test_the_summary_names_one_quantity_once_as_the_table_does():
    from experiments.common import load_results

    results = load_results(Path(__file__).resolve().parents[1] / "results" /
                           "mnist-vae-quick.json", "mnist-vae")
    text = mnist_vae.summary(results)
    head = text.split("paired differences")[0]
    for label in results["data"]["labels"]:
        record = results["data"]["runs"][label]
        shown = mnist_vae._mean_se(record, "test_elbo")
        line = next(line for line in head.splitlines()[1:] if line.split()[0] == label)
        assert f"test ELBO {shown:>15s}" in line  # the table's number, under the table's name
        assert shown in mnist_vae.results_table(results)
    assert " bound " not in head
