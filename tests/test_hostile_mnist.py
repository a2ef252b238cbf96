"""Misuse of the MNIST trainer and the paper programme, as a careless or hostile user would try it:
two writers on one checkpoint or state folder, files that are not what they claim, command lines
that could only fail after the work, paths of this machine in what is saved. Every one is refused
early, in one line, and loses nothing already saved.

Small synthetic data and networks (a few hundred images), so each test takes a second or two.
"""

import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments.mnist import checkpoint, lock as locks, train as trainer
from experiments.mnist.data import DeviceDataset
from experiments.mnist.train import TrainConfig, train
from test_mnist_data import write_split
from test_mnist_train import synthetic_images

ROOT = Path(__file__).resolve().parents[1]
# What no saved file may hold: a path that starts at the root of this machine.
ABSOLUTE = re.compile(r'(^|[\s"=(])/[A-Za-z][A-Za-z0-9_.-]*/')

SMALL = TrainConfig(architecture="iwae", latent=4, batch_size=50, eval_size=20, max_examples=100)


@pytest.fixture(scope="module")
def data():
    return (DeviceDataset(synthetic_images(200), "dynamic", dtype=torch.float64),
            DeviceDataset(synthetic_images(20, seed=1), "dynamic",
                          dtype=torch.float64).evaluation_images(seed=0))


def _run(config, data, **kwargs):
    return train(config.replace(dtype="float64"), train_data=data[0], test_images=data[1],
                 **kwargs)


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


# ------------------------------------------------------------------------------------------------
# Two trainers on one checkpoint
# ------------------------------------------------------------------------------------------------


def test_a_second_trainer_on_the_checkpoint_of_a_live_one_is_refused_and_removes_nothing(
        tmp_path, data):
    path = tmp_path / "two.pt"
    refusals = []

    def second_trainer(state):
        # The first trainer is mid-run (at its first evaluation its checkpoint is not yet
        # written), a write of it under way.
        assert path.exists() == (state.step > 1)
        writing = tmp_path / ".two.pt.x1y2z3.tmp"
        writing.write_bytes(b"half a checkpoint")
        with pytest.raises(locks.LockHeld) as error:
            _run(SMALL.replace(checkpoint=str(path), seed=5), data)
        refusals.append(_one_line(error))
        assert writing.exists()  # the second trainer's start-up left it alone
        writing.unlink()

    first = _run(SMALL.replace(checkpoint=str(path), eval_every=50), data,
                 callback=second_trainer)
    assert refusals and all(f"the checkpoint {path} is in use by process {os.getpid()}; wait for "
                            "that training to end, or choose another --checkpoint path" in text
                            for text in refusals)
    assert checkpoint.load_checkpoint(path)["config"]["seed"] == 0  # the first trainer's run
    assert first.finished
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two.pt"]  # no lock file left
    # Once the first has ended, the path is free again.
    _run(SMALL.replace(checkpoint=str(path), seed=5), data, overwrite=True)


HOLD = """
import fcntl, os, sys
descriptor = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.write(descriptor, b"%d\\n" % os.getpid())
print("held", flush=True)
sys.stdin.read()
"""


def test_a_lock_held_by_another_process_refuses_and_its_death_frees_it(tmp_path, data):
    path = tmp_path / "run.pt"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(locks.lock_file(path))],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(locks.LockHeld, match=rf"in use by process {holder.pid}; "):
            _run(SMALL.replace(checkpoint=str(path)), data)
        assert not path.exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # as a killed trainer: its lock file stays behind
        holder.wait()
    assert locks.lock_file(path).exists()
    _run(SMALL.replace(checkpoint=str(path)), data)  # a dead holder's lock binds nobody
    assert path.exists() and not locks.lock_file(path).exists()


# ------------------------------------------------------------------------------------------------
# Checkpoints that are not what they claim
# ------------------------------------------------------------------------------------------------


class _Forbidden:
    def __reduce__(self):
        return (print, ("never run",))


def test_a_checksummed_envelope_around_a_forbidden_pickle_is_refused_in_one_line(tmp_path):
    import hashlib

    payload = pickle.dumps({"vae": _Forbidden()}, protocol=2)
    path = tmp_path / "run.pt"
    torch.save({"format": checkpoint.FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
                "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}, path)
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.load_checkpoint(path)
    assert "holds something other than tensors and plain values, which is never loaded" in \
        _one_line(error)


@pytest.mark.parametrize("text", ["hello world\n", "h\x00\x00\x00", "{}\n", ""])
def test_a_text_file_as_a_checkpoint_is_refused_in_one_line(tmp_path, text):
    # "hello" made torch's loader raise KeyError (its "h" is a pickle opcode)
    path = tmp_path / "run.pt"
    path.write_text(text)
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.load_checkpoint(path)
    assert str(path) in _one_line(error)
    with pytest.raises(SystemExit) as error:
        trainer.main(["--checkpoint", str(path), "--resume", "--data-dir", str(tmp_path)])
    assert _one_line(error).startswith(f"error: {path} is ")


# ------------------------------------------------------------------------------------------------
# Command lines that could only fail after the work
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def idx(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_split(folder, "train", 120, gz=True)
    write_split(folder, "test", 30, gz=False, seed=1)
    return folder


def _nothing_built(monkeypatch):
    def built(*args, **kwargs):
        raise AssertionError("a network was built before the command line was checked")

    monkeypatch.setattr(trainer, "build_group", built)


def test_the_trainer_refuses_impossible_outputs_before_it_trains(tmp_path, idx, monkeypatch):
    _nothing_built(monkeypatch)
    common = ["--data-dir", str(idx), "--architecture", "iwae", "--latent", "4",
              "--batch-size", "40", "--eval-size", "30"]
    folder = tmp_path / "out"
    folder.mkdir()
    cases = [
        (["--out", str(folder)], f"--out {folder} is a folder; give a file"),
        (["--checkpoint", str(folder), "--overwrite"], f"the checkpoint {folder} is a folder; "
                                                        "give --checkpoint a file"),
        (["--checkpoint", str(folder), "--resume"], f"the checkpoint {folder} is a folder"),
        (["--checkpoint", str(tmp_path / "x.pt"), "--out", str(tmp_path / "x.pt")],
         "--out and --checkpoint are the same file"),
        (["--data-dir", str(idx / "t10k-images-idx3-ubyte")], "is a file, not a folder"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as error:
            trainer.main([*common, *argv])
        assert message in _one_line(error), argv
    assert sorted(p.name for p in folder.iterdir()) == []
    assert not (tmp_path / "x.pt").exists()


def test_a_group_too_large_for_memory_is_refused_before_anything_is_built(idx, monkeypatch):
    _nothing_built(monkeypatch)
    with pytest.raises(SystemExit) as error:
        trainer.main(["--data-dir", str(idx), "--num-runs", "100000"])
    assert re.search(r"num_runs 100000 needs at least [\d.]+ [TP]B of memory \([\d.]+ MB a run: "
                     r"parameters, gradients, Adam's moments, minibatch draws\), more than the "
                     r".* free on cpu; use at most \d+ runs per group", _one_line(error))
    # The estimate against a known amount: 4 copies of every parameter, a block of draws and
    # the permutation, in float32.
    config = TrainConfig(num_runs=3, train_size=120)
    per_run = trainer.memory_per_run(config, 120)
    parameters = sum(p.numel() for p in trainer.VAE(trainer.ARCHITECTURES["kingma-welling"](20))
                     .parameters())
    assert per_run == 4 * 4 * parameters + 4 * 1 * 100 * (784 + 20) + 8 * 120
    monkeypatch.setattr(trainer, "_free_memory", lambda device: 2 * per_run + 1)
    with pytest.raises(ValueError, match="use at most 2 runs per group"):
        trainer.check_memory(config, torch.device("cpu"), 120)
    trainer.check_memory(config.replace(num_runs=2), torch.device("cpu"), 120)


# ------------------------------------------------------------------------------------------------
# What the trainer saves says nothing of this machine
# ------------------------------------------------------------------------------------------------


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


def test_the_trainers_out_file_holds_no_absolute_path_and_says_which_bound_is_which(
        tmp_path, idx, capsys):
    assert ABSOLUTE.search(str(tmp_path))  # the paths given are absolute
    out = tmp_path / "history.json"
    trainer.main(["--data-dir", str(idx), "--architecture", "iwae", "--latent", "4",
                  "--batch-size", "40", "--eval-size", "30", "--checkpoint",
                  str(tmp_path / "run.pt"), "--out", str(out)])
    saved = json.loads(out.read_text())
    found = [s for s in _strings(saved) if ABSOLUTE.search(s)]
    assert not found, found
    assert saved["metadata"]["config"]["checkpoint"].endswith("run.pt")
    assert trainer.BOUNDS_NOTE in capsys.readouterr().err and saved["data"]["note"]
