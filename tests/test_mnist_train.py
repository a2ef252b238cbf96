"""The MNIST trainer: it learns, trains R runs as one (run r = the solo run of seed s + r), resumes
bit for bit, freezes a run that turns non-finite, keeps checkpoints whole and checked, runs every
estimator (eager, and captured through a CPU stand-in for a CUDA graph), runs under DDP, and its
command lines; the speed benchmark at tiny scale.

Small networks and a few hundred synthetic images (ten noisy prototypes), so the file runs in
well under a minute. The one statistical check (the bound improves) spends 1 / STATISTICAL_BUDGET
of the suite's FALSE_POSITIVE_RATE (tests/conftest.py), with a fixed seed.
"""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from estimators import ESTIMATORS
from estimators.base import ElboEstimate
from experiments.common import load_results
from experiments.mnist import benchmark, checkpoint, evaluate, group as groups, step as steps
from experiments.mnist import streams as streams_module, train as trainer
from experiments.mnist.data import DeviceDataset
from experiments.mnist.models import ARCHITECTURES, Architecture, VAE
from experiments.mnist.train import TrainConfig, TrainingDiverged, train
from conftest import z_threshold
from test_mnist_data import write_split

ROOT = Path(__file__).resolve().parents[1]


def synthetic_images(count: int, seed: int = 0) -> torch.Tensor:
    """uint8 (count, 28, 28): ten random stroke-like prototypes, each pixel flipped at random."""
    generator = torch.Generator().manual_seed(seed)  # float32 draws: whatever the default dtype
    prototypes = torch.rand(10, 784, generator=generator, dtype=torch.float32) < 0.2
    labels = torch.randint(0, 10, (count,), generator=generator)
    flips = torch.rand(count, 784, generator=generator, dtype=torch.float32) < 0.05
    return ((prototypes[labels] ^ flips).to(torch.uint8) * 255).reshape(count, 28, 28)


# Small and fast: the "iwae" architecture (784-200-200-latent) with a latent of 8.
SMALL = TrainConfig(architecture="iwae", latent=8, batch_size=50, learning_rate=3e-3,
                    dtype="float64", eval_size=100)


def _dataset(dtype=torch.float64, count=300):
    return DeviceDataset(synthetic_images(count), "dynamic", dtype=dtype)


@pytest.fixture(scope="module")
def data():
    test_images = DeviceDataset(synthetic_images(100, seed=1), "dynamic",
                                dtype=torch.float64).evaluation_images(seed=0)
    return _dataset(), test_images


def _run(config, data, **kwargs):
    return train(config, train_data=data[0], test_images=data[1], **kwargs)


def _per_image_elbo(vae, images, seed):
    """The single-sample ELBO of each image (seed eq. 6), drawn under ``seed``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return ESTIMATORS["pathwise_analytic_kl"](vae.bind(images), vae.posterior(images), 1).elbo


def _initial_vae(config, run=0):
    torch.manual_seed(streams_module.stream_seed(config.seed + run, "init"))
    return VAE(ARCHITECTURES[config.architecture](config.latent)).to(torch.float64)


def _improvement_z(config, data):
    result = _run(config, data)
    before = _per_image_elbo(_initial_vae(config), data[1], seed=5)
    after = _per_image_elbo(result.vae, data[1], seed=5)
    difference = after - before
    return difference.mean() / (difference.std() / math.sqrt(difference.numel())), result


IMPROVES = SMALL.replace(epochs=2, eval_every=100)


def test_training_improves_the_test_bound_and_records_it_faithfully(data):
    """The mean per-image gain of the test ELBO after two epochs is significantly positive:
    a one-sided paired z-test over the 100 test images at z_threshold(1), seed 5.

    Rejects a correct trainer with probability at most FALSE_POSITIVE_RATE / STATISTICAL_BUDGET.
    """
    z, result = _improvement_z(IMPROVES, data)
    assert z > z_threshold(1)
    history = result.history
    assert set(history) == set(trainer.HISTORY_KEYS)
    assert len({len(v) for v in history.values()}) == 1
    assert history["step"] == [2, 4, 6, 8, 10, 12]  # 100 images = 2 steps of 50
    assert history["epoch"][-1] == 2.0 and history["examples_seen"][-1] == 600
    assert all(np.diff(history["wall_seconds"]) > 0)
    fresh = groups.test_bounds(result.group, data[1][:IMPROVES.eval_size], IMPROVES.seeds)
    assert history["test_bound"][-1] == pytest.approx(fresh.item(), rel=1e-12)


def test_a_trainer_that_descends_the_bound_fails_the_improvement_check(data, monkeypatch):
    # The negative test of the check above: the surrogate's sign flipped.
    original = groups.estimator_for

    class Flipped:
        min_samples = 1

        def __call__(self, model, q, num_samples, **options):
            estimate = original("pathwise_analytic_kl")(model, q, num_samples, **options)
            return ElboEstimate(estimate.elbo, -estimate.surrogate)

    monkeypatch.setattr(groups, "estimator_for",
                        lambda name: Flipped() if name == "pathwise" else original(name))
    z, _ = _improvement_z(IMPROVES.replace(estimator="pathwise"), data)
    assert not z > z_threshold(1)


# ------------------------------------------------------------------------------------------------
# A group of R runs is R solo runs
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny(monkeypatch):
    """A 784-32-8 network, so that groups and their solo runs train fast."""
    monkeypatch.setitem(ARCHITECTURES, "tiny", lambda latent=8: Architecture((32,), latent))
    return TrainConfig(architecture="tiny", latent=8, batch_size=32, learning_rate=3e-3,
                       eval_size=64, eval_every=10_000)


def _assert_group_is_its_solo_runs(config, data, rtol):
    """Run r of a group of 3 (seed s) has the parameters of the solo run of seed s + r."""
    whole = _run(config.replace(num_runs=3), data)
    for run in range(3):
        solo = _run(config.replace(seed=config.seed + run), data)
        for (name, a), b in zip(whole.runs[run].vae.state_dict().items(),
                                solo.vae.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()),
                                       msg=f"run {run}, {name}")
        np.testing.assert_allclose(whole.runs[run].history["test_bound"],
                                   solo.history["test_bound"], rtol=rtol)
    return whole


GROUPED = [("pathwise_analytic_kl", 1), ("iwae", 5), ("score_function_loo", 2), (evaluate.NVIL, 1)]


@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-5), ("float64", 1e-10)])
@pytest.mark.parametrize("estimator, samples", GROUPED)
def test_run_r_of_a_group_is_the_solo_run_of_seed_s_plus_r(tiny, estimator, samples, dtype,
                                                            rtol):
    # 288 images of 32: 9 steps an epoch, 6 epochs: 54 steps. On the CPU the group's arithmetic
    # is the solo runs' bit for bit here (a batch that is a multiple of the SIMD width).
    torch_dtype = getattr(torch, dtype)
    data = (_dataset(torch_dtype, 288), DeviceDataset(
        synthetic_images(64, seed=1), "dynamic", dtype=torch_dtype).evaluation_images(seed=0))
    config = tiny.replace(estimator=estimator, num_samples=samples, dtype=dtype, seed=3,
                          epochs=6)
    whole = _assert_group_is_its_solo_runs(config, data, rtol)
    assert whole.history["step"] == [54]
    if estimator == evaluate.NVIL:  # each run's baseline network and running mean are its own
        assert len({float(run.baseline.centre) for run in whole.runs}) == 3


def test_a_group_whose_runs_share_their_noise_fails_the_same_check(tiny, monkeypatch):
    # The negative test: every run draws run 0's noise.
    draw = streams_module.RunStreams._draw_block

    def coupled(self, block):
        draw(self, block)
        self._noise[:] = self._noise[:, :, :1]

    monkeypatch.setattr(streams_module.RunStreams, "_draw_block", coupled)
    data = (_dataset(torch.float32, 288), DeviceDataset(
        synthetic_images(64, seed=1), "dynamic", dtype=torch.float32).evaluation_images(seed=0))
    with pytest.raises(AssertionError, match="run 1"):
        _assert_group_is_its_solo_runs(tiny.replace(dtype="float32", epochs=6), data, 1e-5)


def test_the_trainers_own_test_images_are_one_draw_for_every_seed(tiny, tmp_path, monkeypatch):
    """At batch 100, with the test images the trainer reads and binarizes itself: every number of
    run 1's history in a group seeded 0 is the solo run seeded 1's; a per-group test draw (the
    negative test) moves its test bounds and not its training bounds."""
    write_split(tmp_path, "train", 300, gz=False)
    write_split(tmp_path, "test", 100, gz=False, seed=1)
    config = tiny.replace(data_dir=str(tmp_path), batch_size=100, eval_every=100, epochs=2,
                          eval_size=100, dtype="float64")

    def run_1_and_solo():
        group = train(config.replace(num_runs=2)).runs[1].history
        return group, train(config.replace(seed=1)).runs[0].history

    group, solo = run_1_and_solo()
    for key in trainer.HISTORY_KEYS:
        if key != "wall_seconds":
            np.testing.assert_allclose(group[key], solo[key], rtol=1e-10, err_msg=key)
    # The negative test: the draw follows each invocation's seed (seed + 1).
    monkeypatch.setattr(trainer, "TEST_SEED", config.seed + 1)
    group = train(config.replace(num_runs=2)).runs[1].history
    monkeypatch.setattr(trainer, "TEST_SEED", config.seed + 1 + 1)
    solo = train(config.replace(seed=1)).runs[0].history
    assert group["train_bound"] == solo["train_bound"]
    assert not np.allclose(group["test_bound"], solo["test_bound"], rtol=1e-10)


def test_an_ema_group_keeps_one_moving_average_per_run(tiny):
    data = (_dataset(torch.float64, 288), _dataset(torch.float64, 64).evaluation_images(0))
    config = tiny.replace(estimator="score_function_ema", dtype="float64", epochs=2)
    whole = _assert_group_is_its_solo_runs(config, data, 1e-10)
    values = [float(run.baseline.value) for run in whole.runs]
    assert len(set(values)) == 3


# ------------------------------------------------------------------------------------------------
# Resume, non-finite runs, checkpoints
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator, runs, checkpoint_every, interrupt_at", [
    ("pathwise_analytic_kl", 1, 7, 10),  # resumed mid-epoch (six steps an epoch)
    ("score_function_ema", 3, 6, 8),  # a group, at an epoch boundary, its moving averages restored
    (evaluate.NVIL, 2, 5, 8),  # a group, its baseline networks and optimiser restored
])
def test_resume_after_an_interruption_is_bit_identical(tmp_path, data, estimator, runs,
                                                       checkpoint_every, interrupt_at):
    config = SMALL.replace(estimator=estimator, epochs=2, eval_every=100, num_runs=runs,
                           checkpoint_every=checkpoint_every)
    whole = _run(config.replace(checkpoint=str(tmp_path / "whole.pt")), data)

    def interrupt(state):
        if state.step >= interrupt_at:
            raise KeyboardInterrupt

    path = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(config.replace(checkpoint=str(path)), data, callback=interrupt)
    assert checkpoint.load_checkpoint(path)["step"] < interrupt_at
    resumed = _run(config.replace(checkpoint=str(path)), data, resume=True)
    for run in range(runs):
        a, b = whole.runs[run], resumed.runs[run]
        for (name, x), y in zip(a.vae.state_dict().items(), b.vae.state_dict().values()):
            assert torch.equal(x, y), (run, name)
        if estimator == evaluate.NVIL:
            for x, y in zip(a.baseline.state_dict().values(), b.baseline.state_dict().values()):
                assert torch.equal(x, y)
        if estimator == "score_function_ema":
            assert torch.equal(a.baseline.value, b.baseline.value)
        for key in trainer.HISTORY_KEYS:
            if key != "wall_seconds":
                assert a.history[key] == b.history[key], key


def _poisoned(monkeypatch, at_call, run=None):
    """Make "pathwise" return a NaN loss from its ``at_call``-th call on (for one run, or all)."""
    original = groups.estimator_for
    calls = []

    class Poisoned:
        min_samples = 1

        def __call__(self, model, q, num_samples, **options):
            calls.append(1)
            estimate = original("pathwise")(model, q, num_samples, **options)
            if len(calls) >= at_call:
                mask = torch.zeros_like(estimate.elbo)
                mask[slice(None) if run is None else run] = math.nan
                return ElboEstimate(estimate.elbo + mask, estimate.surrogate + mask)
            return estimate

    monkeypatch.setattr(groups, "estimator_for",
                        lambda name: Poisoned() if name == "pathwise" else original(name))


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, data,
                                                                      monkeypatch):
    config = SMALL.replace(estimator="pathwise", epochs=2, checkpoint_every=2,
                           checkpoint=str(tmp_path / "run.pt"))
    clean = _run(config.replace(max_examples=4 * config.batch_size,
                                checkpoint=str(tmp_path / "clean.pt")), data)
    _poisoned(monkeypatch, at_call=5)
    with pytest.raises(TrainingDiverged, match=r"non-finite at step 5 .*checkpoint of step 4 at "
                                               + str(tmp_path / "run.pt")):
        _run(config, data)
    kept = checkpoint.load_checkpoint(tmp_path / "run.pt")
    assert kept["step"] == 4
    for name, value in clean.group.vae.state_dict().items():
        assert torch.equal(kept["vae"][name], value), name


def test_a_run_that_turns_non_finite_is_frozen_and_the_others_go_on_unchanged(data, monkeypatch):
    config = SMALL.replace(estimator="pathwise", epochs=2, num_runs=3)
    clean = _run(config, data)
    stopped = _run(config.replace(seed=config.seed + 1, num_runs=1,
                                  max_examples=4 * config.batch_size), data)
    _poisoned(monkeypatch, at_call=5, run=1)  # run 1's fifth step (calls count steps)
    poisoned = _run(config, data)
    assert poisoned.diverged == [{"run": 1, "seed": config.seed + 1, "step": 5}]
    for run in (0, 2):
        for a, b in zip(clean.runs[run].vae.parameters(), poisoned.runs[run].vae.parameters()):
            assert torch.equal(a, b)
        assert clean.runs[run].history == {**poisoned.runs[run].history, "wall_seconds":
                                           clean.runs[run].history["wall_seconds"]}
    for a, b in zip(stopped.vae.parameters(), poisoned.runs[1].vae.parameters()):
        assert torch.equal(a, b)  # frozen at its last finite state, the one after step 4
    # its first epoch's training bound is the mean of the four steps it took; then none
    assert math.isfinite(poisoned.runs[1].history["train_bound"][0])
    assert math.isnan(poisoned.runs[1].history["train_bound"][1])
    assert trainer.final_summary([r.history for r in poisoned.runs],
                                 poisoned.diverged)["test_bound"]["runs"] == 2


def test_checkpoints_are_never_half_written(tmp_path, data, monkeypatch):
    path = tmp_path / "run.pt"
    config = SMALL.replace(max_examples=100, checkpoint=str(path))
    _run(config, data)
    before = path.read_bytes()
    real_save = torch.save

    def dies_halfway(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        if isinstance(target, (str, os.PathLike)):
            with open(target, "r+b") as handle:
                handle.truncate(len(before) // 2)
            raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        _run(config.replace(seed=1), data, overwrite=True)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


def test_an_existing_checkpoint_is_never_overwritten_without_being_asked(tmp_path, data):
    path = tmp_path / "run.pt"
    config = SMALL.replace(max_examples=50, eval_size=20, checkpoint=str(path))
    _run(config, data)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="exists; pass --resume to go on from it, --overwrite"):
        _run(config.replace(seed=1), data)
    assert path.read_bytes() == before
    _run(config.replace(seed=1), data, overwrite=True)
    assert path.read_bytes() != before


def _flip_byte(path: Path, offset_from_end: int = 200):
    raw = bytearray(path.read_bytes())
    raw[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    ("flip", "is damaged: its contents do not match the checksum"),
    ("truncate", "is truncated or not a checkpoint"),
    ("empty", "is empty"),
    ("text", "is truncated or not a checkpoint"),
    ("foreign", "is not a checkpoint of this trainer"),
])
def test_a_damaged_or_foreign_checkpoint_is_refused_in_one_line(tmp_path, data, damage, message):
    path = tmp_path / "run.pt"
    config = SMALL.replace(max_examples=50, eval_size=20, checkpoint=str(path), epochs=2)
    _run(config, data)
    if damage == "flip":  # a byte inside the payload (an Adam moment, a weight): CRC-free
        envelope = torch.load(path, weights_only=True)
        envelope["payload"][len(envelope["payload"]) // 2] ^= 1
        torch.save(envelope, path)
    elif damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("not a checkpoint\n")
    else:
        torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(checkpoint.CheckpointError) as error:
        _run(config.replace(max_examples=100), data, resume=True)
    text = str(error.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_checkpoint_with_missing_or_misshaped_entries_is_refused(tmp_path, data):
    path = tmp_path / "run.pt"
    config = SMALL.replace(max_examples=50, eval_size=20, checkpoint=str(path), epochs=2)
    _run(config, data)
    state = checkpoint.load_checkpoint(path)
    del state["optimizers"]
    checkpoint.save_checkpoint(path, state)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit these settings "
                                                         r"\(KeyError: 'optimizers'\)"):
        _run(config.replace(max_examples=100), data, resume=True)
    state["optimizers"] = []
    state["vae"]["encoder.0.weight"] = state["vae"]["encoder.0.weight"][:, :10]
    checkpoint.save_checkpoint(path, state)
    with pytest.raises(checkpoint.CheckpointError, match="does not fit these settings "
                                                         r"\(RuntimeError: "):
        _run(config.replace(max_examples=100), data, resume=True)


def test_a_write_killed_midway_leaves_a_temporary_file_that_the_next_start_removes(tmp_path,
                                                                                   data):
    path = tmp_path / "run.pt"
    left = tmp_path / ".run.pt.abc123.tmp"
    left.write_bytes(b"half")
    _run(SMALL.replace(max_examples=50, eval_size=20, checkpoint=str(path)), data)
    assert not left.exists() and path.exists()


def test_a_resume_of_a_longer_training_than_asked_is_refused(tmp_path, data):
    path = tmp_path / "run.pt"
    config = SMALL.replace(epochs=2, eval_size=20, checkpoint=str(path))
    _run(config, data)
    with pytest.raises(ValueError, match="has trained 12 steps, more than the 6 these settings "
                                         "take; raise --epochs"):
        _run(config.replace(epochs=1), data, resume=True)


def test_a_time_limit_stops_with_a_checkpoint_and_the_resume_ends_where_one_run_would(tmp_path,
                                                                                       data):
    config = SMALL.replace(epochs=20, eval_every=3000, eval_size=20)
    whole = _run(config, data)
    path = tmp_path / "run.pt"
    first = _run(config.replace(checkpoint=str(path)), data, time_limit=0.0)
    # the first check after the limit: the evaluation after 3000 images, 60 steps of 50
    assert not first.finished and checkpoint.load_checkpoint(path)["step"] == 60
    rest = _run(config.replace(checkpoint=str(path)), data, resume=True)
    assert rest.finished and rest.history["step"] == whole.history["step"]
    for a, b in zip(whole.vae.parameters(), rest.vae.parameters()):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------------
# Every estimator; the schedule; DDP
# ------------------------------------------------------------------------------------------------


def test_compile_is_skipped_on_the_cpu(data, capsys):
    config = SMALL.replace(max_examples=100, eval_size=20)
    plain, compiled = _run(config, data), _run(config.replace(compile=True), data)
    assert "compile: skipped on the CPU" in capsys.readouterr().err
    for a, b in zip(plain.vae.parameters(), compiled.vae.parameters()):
        assert torch.equal(a, b)


def test_iwae_schedule_is_3_to_the_i_passes_at_decaying_rates():
    config = TrainConfig(schedule="iwae")
    stages = trainer.iwae_schedule()
    assert sum(passes for passes, _ in stages) == 3280
    start = 0
    for i in range(8):
        for epoch in (start, start + 3 ** i - 1):
            assert trainer.learning_rate_at(config, epoch) == pytest.approx(1e-3 * 10 ** (-i / 7))
        start += 3 ** i
    assert trainer.learning_rate_at(TrainConfig(), 5000) == 1e-3


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_CONFIG = SMALL.replace(estimator=evaluate.NVIL, max_examples=200, eval_every=100, num_runs=2)


def _ddp_worker(rank, world, port, out, images, test_images):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      EXPERIMENTS_NO_PROGRESS="1")
    torch.set_num_threads(1)
    data = DeviceDataset(images, "dynamic", dtype=torch.float64)
    result = train(DDP_CONFIG, train_data=data, test_images=test_images)
    torch.save({"vae": result.group.vae.state_dict(), "baseline": result.group.nvil.state_dict()},
               Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_parameters_equal_to_one_process(tmp_path, data):
    images = synthetic_images(300)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), images, data[1]), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for group in ("vae", "baseline"):
        for name, value in first[group].items():
            assert torch.equal(value, second[group][name]), name
    # Each rank drew the whole minibatch and its noise and took its half: one process's run,
    # to the rounding of averaging two half-batch gradients.
    alone = _run(DDP_CONFIG, data)
    for name, value in alone.group.vae.state_dict().items():
        torch.testing.assert_close(first["vae"][name], value, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Command lines
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", ["experiments.mnist.train", "experiments.mnist.benchmark"])
def test_help(module):
    out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--data-dir" in out.stdout and "--epochs" in out.stdout


@pytest.mark.parametrize("argv, message", [
    (["--estimator", "reinforce"], "estimator 'reinforce' is unknown; choose from"),
    (["--num-samples", "two"], "argument --num-samples: invalid int value: 'two'"),
    (["--estimator", "score_function_loo"], "needs num_samples >= 2"),
    (["--likelihood", "gaussian"], "use binarization 'grey'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--resume"], "pass --checkpoint FILE"),
    (["--device", "tpu"], "device 'tpu' is not a device name torch knows"),
    (["--num-runs", "0"], "num_runs must be >= 1, got 0"),
    (["--num-runs", "-2"], "num_runs must be >= 1, got -2"),
    (["--seed", "-1"], "seed must lie in 0..4294967295"),
    (["--seed", "4294967295", "--num-runs", "3"], "seed must lie in 0..4294967293"),
])
def test_bad_flags_give_one_line_errors(argv, message):
    with pytest.raises(SystemExit) as error:
        trainer.main(argv)
    text = str(error.value)
    assert text.startswith("error: ") and "\n" not in text and message in text


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "--epochs must be >= 1"),
    (["--device", "tpu"], "device 'tpu' is not a device name torch knows"),
    (["--fast"], "unrecognized arguments: --fast"),
])
def test_benchmark_bad_flags_give_one_line_errors(argv, message):
    with pytest.raises(SystemExit) as error:
        benchmark.main(argv)
    text = str(error.value)
    assert "\n" not in text and message in text


def test_command_line_trains_a_group_from_idx_files_and_resumes(tmp_path, capsys):
    write_split(tmp_path, "train", 120, gz=True)
    write_split(tmp_path, "test", 30, gz=False, seed=1)
    checkpoint_file, out = tmp_path / "run.pt", tmp_path / "history.json"
    common = ["--data-dir", str(tmp_path), "--architecture", "iwae", "--latent", "4",
              "--batch-size", "40", "--checkpoint", str(checkpoint_file), "--eval-size", "30",
              "--num-runs", "3"]
    trainer.main([*common, "--out", str(out)])
    saved = json.loads(out.read_text())["data"]
    assert [run["seed"] for run in saved["runs"]] == [0, 1, 2]
    assert all(set(run["history"]) == set(trainer.HISTORY_KEYS) for run in saved["runs"])
    finals = [run["history"]["test_bound"][-1] for run in saved["runs"]]
    assert saved["final"]["test_bound"]["mean"] == pytest.approx(np.mean(finals))
    assert saved["final"]["test_bound"]["se"] == pytest.approx(np.std(finals, ddof=1) / 3 ** 0.5)
    assert saved["final"]["test_bound"]["runs"] == 3
    out_line = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert out_line["num_runs"] == 3 and out_line["test_bound"]["runs"] == 3
    result = trainer.main([*common, "--resume", "--epochs", "2"])
    assert [h["step"] for h in result["runs"]] == [[3, 6]] * 3
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["diverged"] == []
    with pytest.raises(SystemExit, match="other settings [(]latent[)]; resume with the same"):
        trainer.main([*common, "--resume", "--latent", "5"])
    with pytest.raises(SystemExit, match="other settings [(]num_runs[)]; resume with the same"):
        trainer.main([*common[:-2], "--resume", "--num-runs", "2", "--epochs", "2"])


def test_the_command_line_refuses_an_unwritable_out_before_training(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(SystemExit, match="cannot create the folder of --out"):
        trainer.main(["--out", str(blocked / "sub" / "h.json"), "--data-dir", str(tmp_path)])


def test_benchmark_runs_at_tiny_scale(tmp_path, capsys):
    write_split(tmp_path, "train", 300, gz=True)
    numbers = benchmark.main(["--data-dir", str(tmp_path), "--train-size", "256", "--epochs", "1"])
    printed = capsys.readouterr().out
    assert "ratio" in printed and numbers["device_name"] in printed
    assert numbers["ratio"] == pytest.approx(numbers["tutorial_seconds"] / numbers["trainer_seconds"])


def test_benchmark_saves_its_numbers_with_the_command_that_made_them(tmp_path, capsys):
    write_split(tmp_path, "train", 300, gz=True)
    argv = ["--data-dir", str(tmp_path), "--train-size", "256", "--out", str(tmp_path / "b.json")]
    numbers = benchmark.main(argv)
    saved = load_results(tmp_path / "b.json")
    assert saved["data"] == numbers
    from experiments.common import machine_free

    assert saved["metadata"]["command"].endswith(
        "-m experiments.mnist.benchmark " + " ".join(map(machine_free, argv)))
    assert str(tmp_path) not in saved["metadata"]["command"]  # no machine paths
    assert saved["metadata"]["config"]["train_size"] == 256


# ------------------------------------------------------------------------------------------------
# --capture: the whole step as one CUDA graph (exercised here on the CPU with a stand-in graph)
# ------------------------------------------------------------------------------------------------


def test_capture_falls_back_on_the_cpu_with_a_note_and_changes_nothing(data, capsys):
    config = SMALL.replace(estimator=evaluate.NVIL, max_examples=100, eval_size=20)
    plain, captured = _run(config, data), _run(config.replace(capture=True), data)
    err = capsys.readouterr().err
    assert "capture: skipped (CUDA graphs need a CUDA device, this run is on cpu); running " \
           "eagerly" in err
    assert captured.mode == plain.mode == "eager"
    for a, b in zip([*plain.vae.parameters(), *plain.baseline.parameters()],
                    [*captured.vae.parameters(), *captured.baseline.parameters()]):
        assert torch.equal(a, b)
    assert plain.history["train_bound"] == captured.history["train_bound"]


def test_only_the_device_and_ddp_stop_a_capture():
    cuda = torch.device("cuda")
    for name in evaluate.estimator_names():  # the score functions too: their noise is an input
        assert steps.capture_blocker(SMALL.replace(estimator=name), cuda, world=1) is None
    assert "DistributedDataParallel" in steps.capture_blocker(SMALL, cuda, world=2)
    assert "need a CUDA device" in steps.capture_blocker(SMALL, torch.device("cpu"), 1)


class _ReplayingGraph:
    """A CPU stand-in for a captured CUDA graph: each replay runs the step again on the static
    inputs and writes its results into the same output tensors, as a graph's replay does."""

    def __init__(self, captured):
        self.captured = captured
        self.outputs = None

    def replay(self):
        fresh = self.captured.step(*self.captured.static_inputs)
        if self.outputs is None:
            self.outputs = tuple(torch.empty_like(value) for value in fresh)
        for out, value in zip(self.outputs, fresh):
            out.copy_(value.detach())


@pytest.fixture
def cpu_capture(monkeypatch):
    """Run the capture path on the CPU: no streams, the stand-in graph, Adam not fused (as it is
    on CUDA) but with the learning-rate tensor that the schedule fills."""
    monkeypatch.setattr(steps, "capture_blocker", lambda *args: None)
    monkeypatch.setattr(steps.CapturedStep, "_run_aside",
                        lambda self: self.step(*self.static_inputs))

    def capture(self):  # a capture records the step without running it; replays run it
        graph = _ReplayingGraph(self)
        return graph, graph.outputs

    monkeypatch.setattr(steps.CapturedStep, "_capture", capture)
    adam = torch.optim.Adam

    def cpu_adam(params, fused=False, capturable=False, **options):
        assert capturable == torch.is_tensor(options["lr"])  # the capture's, and only it
        return adam(params, **options)

    monkeypatch.setattr(torch.optim, "Adam", cpu_adam)
    calls = []
    original_call = steps.CapturedStep.__call__
    monkeypatch.setattr(steps.CapturedStep, "__call__",
                        lambda self, *inputs: calls.append(self.graph is None)
                        or original_call(self, *inputs))
    return calls


# Two epochs of the iwae schedule: the learning rate drops after the first.
SCHEDULED = SMALL.replace(estimator=evaluate.NVIL, schedule="iwae", epochs=2, eval_every=100)


def _assert_same_training(eager, captured):
    """Equal histories and parameters, up to the float32 learning-rate tensor of the capture
    (whose rounding the score functions' large learning signals carry a little further)."""
    for key in ("step", "learning_rate", "epoch"):
        assert eager.history[key] == captured.history[key], key
    for run_eager, run_captured in zip(eager.runs, captured.runs):
        np.testing.assert_allclose(run_eager.history["train_bound"],
                                   run_captured.history["train_bound"], rtol=1e-6)
        baselines = [run_eager.baseline, run_captured.baseline]
        extra = ([[*b.parameters()] for b in baselines] if isinstance(baselines[0], torch.nn.Module)
                 else [[b.value] for b in baselines] if baselines[0] is not None else [[], []])
        for a, b in zip([*run_eager.vae.parameters(), *extra[0]],
                        [*run_captured.vae.parameters(), *extra[1]]):
            torch.testing.assert_close(a, b, rtol=1e-5,
                                       atol=1e-5 * float(b.detach().abs().max()))


def test_the_capture_path_trains_as_the_eager_one(data, cpu_capture):
    eager = _run(SCHEDULED, data)
    captured = _run(SCHEDULED.replace(capture=True), data)
    # three warm-up steps, the capture, then replays only: one graph for both schedule stages
    assert cpu_capture == [True] * 4 + [False] * 8
    assert captured.mode == "captured"
    assert eager.history["learning_rate"][0] > eager.history["learning_rate"][-1]
    _assert_same_training(eager, captured)


@pytest.mark.parametrize("estimator", evaluate.estimator_names())
def test_every_estimator_trains_a_group_and_captures_and_computes_what_it_computes_eagerly(
        data, cpu_capture, estimator):
    # Groups of two runs, K = 2, six steps: three warm-up steps, the capture, two replays.
    config = SMALL.replace(estimator=estimator, num_samples=2, num_runs=2, max_examples=300,
                           eval_size=20)
    eager = _run(config, data)
    captured = _run(config.replace(capture=True), data)
    assert captured.mode == "captured" and cpu_capture == [True] * 4 + [False] * 2
    _assert_same_training(eager, captured)
    assert eager.history["step"] == [6] and not eager.diverged
    for run in range(2):  # every run trained: finite bounds, every parameter moved
        assert math.isfinite(eager.runs[run].history["train_bound"][0])
        assert math.isfinite(eager.runs[run].history["test_bound"][0])
        assert all(not torch.equal(a, b) for a, b in zip(_initial_vae(config, run).parameters(),
                                                         eager.runs[run].vae.parameters()))
    expected = {evaluate.NVIL: groups.NvilBaseline, "score_function_ema": trainer.EmaBaseline}
    assert isinstance(eager.baseline, expected.get(estimator, type(None)))


def test_a_capture_that_replays_a_stale_minibatch_fails_the_same_check(data, cpu_capture,
                                                                         monkeypatch):
    # The negative test of the ones above: the inputs are not copied into the static buffers.
    original_call = steps.CapturedStep.__call__

    def stale(self, *inputs):
        return original_call(self, *(inputs if self.graph is None else self.static_inputs))

    monkeypatch.setattr(steps.CapturedStep, "__call__", stale)
    eager = _run(SCHEDULED, data)
    captured = _run(SCHEDULED.replace(capture=True), data)
    with pytest.raises(AssertionError):
        _assert_same_training(eager, captured)


def test_a_captured_run_resumes_bit_for_bit_and_records_capture(tmp_path, data, cpu_capture):
    config = SCHEDULED.replace(capture=True, checkpoint_every=4)
    whole = _run(config.replace(checkpoint=str(tmp_path / "whole.pt")), data)

    def interrupt(state):
        if state.step >= 8:
            raise KeyboardInterrupt

    path = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(config.replace(checkpoint=str(path)), data, callback=interrupt)
    saved = checkpoint.load_checkpoint(path)
    assert saved["step"] == 4 and saved["config"]["capture"] is True
    assert saved["mode"] == "captured"
    resumed = _run(config.replace(checkpoint=str(path)), data, resume=True)
    assert resumed.mode == "captured"
    for a, b in zip([*whole.vae.parameters(), *whole.baseline.parameters()],
                    [*resumed.vae.parameters(), *resumed.baseline.parameters()]):
        assert torch.equal(a, b)
    assert whole.history == {**resumed.history, "wall_seconds": whole.history["wall_seconds"]}
    with pytest.raises(ValueError, match=r"other settings \(capture\); resume with the same"):
        _run(config.replace(checkpoint=str(path), capture=False), data, resume=True)


def test_a_capture_that_fails_falls_back_to_eager_with_a_note(data, cpu_capture, monkeypatch,
                                                              capsys):
    def broken(self):
        raise RuntimeError("operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(steps.CapturedStep, "_capture", broken)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    config = SMALL.replace(max_examples=300, eval_size=20)
    result = _run(config.replace(capture=True), data)
    err = capsys.readouterr().err
    assert ("capture: failed at step 4 (RuntimeError: operation not permitted when stream is "
            "capturing); running eagerly") in err
    assert result.mode == "eager" and result.history["step"] == [6]


def test_benchmark_accepts_capture(tmp_path, capsys):
    write_split(tmp_path, "train", 300, gz=True)
    numbers = benchmark.main(["--data-dir", str(tmp_path), "--train-size", "256", "--epochs", "1",
                              "--capture"])
    printed = capsys.readouterr()
    assert numbers["capture"] is True and numbers["mode"] == "eager"
    assert "(eager steps;" in printed.out and "capture: skipped" in printed.err


@pytest.mark.parametrize("compiled", [False, True])
def test_the_step_bookkeeping_sums_the_bounds_of_the_runs_that_took_the_step(compiled):
    # compiled: the CUDA path of --compile; on 0-d tensors torch 2.13 on the CPU drops the
    # float64 sum, so the trainer keeps tensors of at least one element, as here
    count = torch.compile(steps._count) if compiled else steps._count
    bound_sum = torch.zeros(2, dtype=torch.float64)
    bound_count = torch.zeros(2, dtype=torch.int64)
    for took in ([True, True], [True, False], [False, False], [True, False]):
        # a run that did not take the step may have a NaN bound: it must not reach the sum
        bound = torch.tensor([-0.25, -1.0 if took[1] else math.nan])
        count(bound_sum, bound_count, bound, torch.tensor(took))
    assert bound_sum.tolist() == [-0.75, -1.0] and bound_count.tolist() == [3, 1]


def test_the_compiled_and_captured_path_trains_as_the_eager_one(data, cpu_capture, monkeypatch):
    # torch.compile on the CPU stands in for CUDA: the objective, Adam and the bookkeeping are
    # compiled, then run through the stand-in graph; the run must follow the eager one to
    # rounding (of the float32 learning-rate tensor, as in _assert_same_training).
    monkeypatch.setattr(steps, "compiles_on", lambda device: True)
    config = SMALL.replace(schedule="iwae", epochs=2, eval_every=100, num_runs=2)
    eager = _run(config, data)
    compiled = _run(config.replace(compile=True, capture=True), data)
    assert compiled.mode == "compiled+captured"
    assert eager.history["learning_rate"][0] > eager.history["learning_rate"][-1]
    _assert_same_training(eager, compiled)


def test_a_failed_compile_says_so_once_and_runs_eagerly_from_then_on(capsys):
    def broken(x):
        raise RuntimeError("cannot trace this\nsecond line")

    run = steps.EagerFallback(lambda x: 2 * x, broken, "the objective")
    assert [run(1), run(2)] == [2, 4] and run.compiled is None
    err = capsys.readouterr().err
    assert err == ("compile: failed for the objective (RuntimeError: cannot trace this); "
                   "running it eagerly\n")
