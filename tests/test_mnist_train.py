"""The MNIST trainer: it learns, resumes bit for bit, stops on NaN, writes whole checkpoints, runs
every estimator, runs under DDP, and its command lines; the speed benchmark at tiny scale.

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
from experiments.mnist import benchmark, evaluate, train as trainer
from experiments.mnist.data import DeviceDataset
from experiments.mnist.models import ARCHITECTURES, VAE
from experiments.mnist.train import TrainConfig, TrainingDiverged, train
from conftest import z_threshold
from test_mnist_data import write_split

ROOT = Path(__file__).resolve().parents[1]


def synthetic_images(count: int, seed: int = 0) -> torch.Tensor:
    """uint8 (count, 28, 28): ten random stroke-like prototypes, each pixel flipped at random."""
    generator = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(10, 784, generator=generator) < 0.2
    labels = torch.randint(0, 10, (count,), generator=generator)
    flips = torch.rand(count, 784, generator=generator) < 0.05
    return ((prototypes[labels] ^ flips).to(torch.uint8) * 255).reshape(count, 28, 28)


# Small and fast: the "iwae" architecture (784-200-200-latent) with a latent of 8.
SMALL = TrainConfig(architecture="iwae", latent=8, batch_size=50, learning_rate=3e-3,
                    dtype="float64", eval_size=100)


@pytest.fixture(scope="module")
def data():
    train_data = DeviceDataset(synthetic_images(300), "dynamic", dtype=torch.float64)
    test_images = DeviceDataset(synthetic_images(100, seed=1), "dynamic",
                                dtype=torch.float64).evaluation_images(seed=0)
    return train_data, test_images


def _run(config, data, **kwargs):
    return train(config, train_data=data[0], test_images=data[1], **kwargs)


def _per_image_elbo(vae, images, seed):
    """The single-sample ELBO of each image (seed eq. 6), drawn under ``seed``."""
    torch.manual_seed(seed)
    with torch.no_grad():
        return ESTIMATORS["pathwise_analytic_kl"](vae.bind(images), vae.posterior(images), 1).elbo


def _initial_vae(config):
    torch.manual_seed(config.seed)
    return VAE(ARCHITECTURES[config.architecture](config.latent)).to(torch.float64)


def _improvement_z(config, data, monkeypatch=None):
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
    torch.manual_seed(IMPROVES.seed)
    fresh = evaluate.test_elbo(result.vae, data[1][:IMPROVES.eval_size])
    assert history["test_bound"][-1] == pytest.approx(fresh, rel=1e-12)


def test_a_trainer_that_descends_the_bound_fails_the_improvement_check(data, monkeypatch):
    # The negative test of the check above: the surrogate's sign flipped.
    original = evaluate.estimator_for

    class Flipped:
        min_samples = 1

        def __call__(self, model, q, num_samples, **options):
            estimate = original("pathwise_analytic_kl")(model, q, num_samples, **options)
            return ElboEstimate(estimate.elbo, -estimate.surrogate)

    monkeypatch.setattr(evaluate, "estimator_for",
                        lambda name: Flipped() if name == "pathwise" else original(name))
    z, _ = _improvement_z(IMPROVES.replace(estimator="pathwise"), data)
    assert not z > z_threshold(1)


@pytest.mark.parametrize("estimator, checkpoint_every, interrupt_at", [
    ("pathwise_analytic_kl", 7, 10),  # resumed mid-epoch (six steps an epoch)
    ("score_function_ema", 6, 8),  # resumed at an epoch boundary, the moving average restored
    (evaluate.NVIL, 5, 8),  # the baseline network and its optimiser restored
])
def test_resume_after_an_interruption_is_bit_identical(tmp_path, data, estimator,
                                                       checkpoint_every, interrupt_at):
    config = SMALL.replace(estimator=estimator, epochs=2, eval_every=100,
                           checkpoint_every=checkpoint_every)
    whole = _run(config.replace(checkpoint=str(tmp_path / "whole.pt")), data)

    def interrupt(state):
        if state.step >= interrupt_at:
            raise KeyboardInterrupt

    path = tmp_path / "cut.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(config.replace(checkpoint=str(path)), data, callback=interrupt)
    assert torch.load(path, weights_only=True)["step"] < interrupt_at
    resumed = _run(config.replace(checkpoint=str(path)), data, resume=True)
    for (name, a), b in zip(whole.vae.state_dict().items(), resumed.vae.state_dict().values()):
        assert torch.equal(a, b), name
    if estimator == evaluate.NVIL:
        for a, b in zip(whole.baseline.parameters(), resumed.baseline.parameters()):
            assert torch.equal(a, b)
    if estimator == "score_function_ema":
        assert torch.equal(whole.baseline.value, resumed.baseline.value)
    for key in trainer.HISTORY_KEYS:
        if key != "wall_seconds":
            assert whole.history[key] == resumed.history[key], key


def _poisoned(monkeypatch, at_call):
    """Make "pathwise" return a NaN loss from its ``at_call``-th call on."""
    original = evaluate.estimator_for
    calls = []

    class Poisoned:
        min_samples = 1

        def __call__(self, model, q, num_samples, **options):
            calls.append(1)
            estimate = original("pathwise")(model, q, num_samples, **options)
            if len(calls) >= at_call:
                return ElboEstimate(estimate.elbo * math.nan, estimate.surrogate * math.nan)
            return estimate

    monkeypatch.setattr(evaluate, "estimator_for",
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
    kept = torch.load(tmp_path / "run.pt", weights_only=True)
    assert kept["step"] == 4
    for name, value in clean.vae.state_dict().items():
        assert torch.equal(kept["vae"][name], value), name


def test_checkpoints_are_never_half_written(tmp_path, data, monkeypatch):
    path = tmp_path / "run.pt"
    config = SMALL.replace(max_examples=100, checkpoint=str(path))
    _run(config, data)
    before = path.read_bytes()
    real_save = torch.save

    def dies_halfway(obj, target, *args, **kwargs):
        real_save(obj, target, *args, **kwargs)
        with open(target, "r+b") as handle:
            handle.truncate(len(before) // 2)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError, match="disk full"):
        _run(config.replace(seed=1), data)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.pt"]


@pytest.mark.parametrize("estimator", evaluate.estimator_names())
def test_every_estimator_trains_a_step(data, estimator):
    config = SMALL.replace(estimator=estimator, num_samples=2, max_examples=50, eval_size=20)
    result = _run(config, data)
    assert result.history["step"] == [1]
    assert math.isfinite(result.history["train_bound"][0])
    assert math.isfinite(result.history["test_bound"][0])
    changed = [not torch.equal(a, b) for a, b in
               zip(_initial_vae(config).parameters(), result.vae.parameters())]
    assert all(changed)
    expected = {evaluate.NVIL: trainer.NvilBaseline, "score_function_ema": trainer.EmaBaseline}
    assert isinstance(result.baseline, expected.get(estimator, type(None)))


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


def _ddp_worker(rank, world, port, out, images, test_images):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      EXPERIMENTS_NO_PROGRESS="1")
    torch.set_num_threads(1)
    data = DeviceDataset(images, "dynamic", dtype=torch.float64)
    result = train(SMALL.replace(estimator=evaluate.NVIL, max_examples=200, eval_every=100),
                   train_data=data, test_images=test_images)
    torch.save({"vae": result.vae.state_dict(), "baseline": result.baseline.state_dict()},
               Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_gloo_ranks_end_with_identical_parameters(tmp_path, data):
    images = synthetic_images(300)
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path), images, data[1]), nprocs=2)
    first, second = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    single = _initial_vae(SMALL).state_dict()
    for group in ("vae", "baseline"):
        for name, value in first[group].items():
            assert torch.equal(value, second[group][name]), name
    assert not torch.equal(first["vae"]["encoder.0.weight"], single["encoder.0.weight"])


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


def test_command_line_trains_from_idx_files_and_resumes(tmp_path, capsys):
    write_split(tmp_path, "train", 120, gz=True)
    write_split(tmp_path, "test", 30, gz=False, seed=1)
    checkpoint, out = tmp_path / "run.pt", tmp_path / "history.json"
    common = ["--data-dir", str(tmp_path), "--architecture", "iwae", "--latent", "4",
              "--batch-size", "40", "--checkpoint", str(checkpoint), "--eval-size", "30"]
    trainer.main([*common, "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["data"]["history"]["step"] == [3]
    assert saved["metadata"]["config"]["batch_size"] == 40
    history = trainer.main([*common, "--resume", "--epochs", "2"])
    assert history["step"] == [3, 6]
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 6
    with pytest.raises(SystemExit, match="other settings [(]latent[)]; resume with the same"):
        trainer.main([*common, "--resume", "--latent", "5"])


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
    assert saved["metadata"]["command"].endswith("-m experiments.mnist.benchmark " + " ".join(argv))
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


def test_capture_is_refused_where_a_replay_would_be_wrong():
    cuda = torch.device("cuda")
    assert trainer._capture_blocker(SMALL, cuda, world=1) is None
    assert trainer._capture_blocker(SMALL.replace(estimator="iwae", num_samples=5), cuda, 1) is None
    for name in ("score_function", "score_function_loo", evaluate.NVIL):
        assert "q.sample" in trainer._capture_blocker(SMALL.replace(estimator=name), cuda, 1)
    assert "moving average in Python" in trainer._capture_blocker(
        SMALL.replace(estimator="score_function_ema"), cuda, 1)
    assert "DistributedDataParallel" in trainer._capture_blocker(SMALL, cuda, world=2)
    assert "need a CUDA device" in trainer._capture_blocker(SMALL, torch.device("cpu"), 1)


class _ReplayingGraph:
    """A CPU stand-in for a captured CUDA graph: each replay runs the step again on the static
    input and writes its results into the same output tensors, as a graph's replay does."""

    def __init__(self, captured):
        self.captured = captured
        self.outputs = tuple(torch.empty((), dtype=captured.static_x.dtype) for _ in range(2))

    def replay(self):
        fresh = self.captured.step(self.captured.static_x)
        for out, value in zip(self.outputs, fresh):
            out.copy_(value.detach())


@pytest.fixture
def cpu_capture(monkeypatch):
    """Run the capture path on the CPU: no streams, the stand-in graph, Adam not fused (as it is
    on CUDA) but with the learning-rate tensor that the schedule fills."""
    monkeypatch.setattr(trainer, "_capture_blocker", lambda *args: None)
    monkeypatch.setattr(trainer._CapturedStep, "_run_aside",
                        lambda self: self.step(self.static_x))

    def capture(self):
        graph = _ReplayingGraph(self)
        return graph, graph.outputs

    monkeypatch.setattr(trainer._CapturedStep, "_capture", capture)
    adam = torch.optim.Adam

    def cpu_adam(params, fused=False, capturable=False, **options):
        assert capturable == torch.is_tensor(options["lr"])  # the capture's, and only it
        return adam(params, **options)

    monkeypatch.setattr(torch.optim, "Adam", cpu_adam)
    calls = []
    original_call = trainer._CapturedStep.__call__
    monkeypatch.setattr(trainer._CapturedStep, "__call__",
                        lambda self, x: calls.append(self.graph is None) or original_call(self, x))
    return calls


# Two epochs of the iwae schedule: the learning rate drops after the first.
SCHEDULED = SMALL.replace(estimator=evaluate.NVIL, schedule="iwae", epochs=2, eval_every=100)


def _assert_same_training(eager, captured):
    """Equal histories and parameters, up to the float32 learning-rate tensor of the capture."""
    for key in ("step", "learning_rate", "epoch"):
        assert eager.history[key] == captured.history[key], key
    assert eager.history["learning_rate"][0] > eager.history["learning_rate"][-1]
    np.testing.assert_allclose(eager.history["train_bound"], captured.history["train_bound"],
                               rtol=1e-6)
    for a, b in zip([*eager.vae.parameters(), *eager.baseline.parameters()],
                    [*captured.vae.parameters(), *captured.baseline.parameters()]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_the_capture_path_trains_as_the_eager_one(data, cpu_capture):
    eager = _run(SCHEDULED, data)
    captured = _run(SCHEDULED.replace(capture=True), data)
    # three warm-up steps, the capture, then replays only: one graph for both schedule stages
    assert cpu_capture == [True] * 4 + [False] * 8
    assert captured.mode == "captured"
    _assert_same_training(eager, captured)


def test_a_capture_that_replays_a_stale_minibatch_fails_the_same_check(data, cpu_capture,
                                                                         monkeypatch):
    # The negative test of the one above: the minibatch is not copied into the static buffer.
    original_call = trainer._CapturedStep.__call__

    def stale(self, x):
        return original_call(self, x if self.graph is None else self.static_x)

    monkeypatch.setattr(trainer._CapturedStep, "__call__", stale)
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
    saved = torch.load(path, weights_only=True)
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

    monkeypatch.setattr(trainer._CapturedStep, "_capture", broken)
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
def test_the_step_bookkeeping_counts_sums_and_finds_the_first_bad_step(compiled):
    # compiled: the CUDA path of --compile; on 0-d tensors torch 2.13 on the CPU drops the
    # float64 sum, so the trainer keeps one-element ones, as here
    bookkeep = torch.compile(trainer._bookkeep) if compiled else trainer._bookkeep
    counter, first_bad = torch.zeros(1, dtype=torch.int64), torch.full((1,), -1)
    bound_sum = torch.zeros(1, dtype=torch.float64)
    for loss in (1.0, 2.0, math.nan, 3.0, math.inf):
        bookkeep(counter, first_bad, bound_sum, torch.tensor(loss), torch.tensor(-0.25))
    assert (counter.item(), first_bad.item(), bound_sum.item()) == (5, 3, -1.25)


def test_the_compiled_and_captured_path_trains_as_the_eager_one(data, cpu_capture, monkeypatch):
    # torch.compile on the CPU stands in for CUDA: the objective, Adam and the bookkeeping are
    # compiled, then run through the stand-in graph; with torch's own random numbers in the
    # compiled code (fallback_random) the run must follow the eager one to rounding (of the
    # float32 learning-rate tensor, as in _assert_same_training).
    import torch._inductor.config as inductor

    monkeypatch.setattr(trainer, "_compiles_on", lambda device: True)
    monkeypatch.setattr(inductor, "fallback_random", True)
    config = SMALL.replace(schedule="iwae", epochs=2, eval_every=100)
    eager = _run(config, data)
    compiled = _run(config.replace(compile=True, capture=True), data)
    assert compiled.mode == "compiled+captured"
    for key in ("step", "learning_rate", "epoch"):
        assert eager.history[key] == compiled.history[key], key
    assert eager.history["learning_rate"][0] > eager.history["learning_rate"][-1]
    np.testing.assert_allclose(eager.history["train_bound"], compiled.history["train_bound"],
                               rtol=1e-6)
    for a, b in zip(eager.vae.parameters(), compiled.vae.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_a_failed_compile_says_so_once_and_runs_eagerly_from_then_on(capsys):
    def broken(x):
        raise RuntimeError("cannot trace this\nsecond line")

    run = trainer._EagerFallback(lambda x: 2 * x, broken, "the objective")
    assert [run(1), run(2)] == [2, 4] and run.compiled is None
    err = capsys.readouterr().err
    assert err == ("compile: failed for the objective (RuntimeError: cannot trace this); "
                   "running it eagerly\n")
