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


def test_a_device_the_trainer_cannot_use_and_a_count_of_runs_past_the_seeds_are_refused(
        monkeypatch):
    """meta and mps ended in a 24-line RuntimeError after MNIST had loaded; a huge --num-runs
    said "seed must lie in 0..-9999...". Both are refused in one line before any data is read."""
    _nothing_built(monkeypatch)
    monkeypatch.setattr(trainer, "load_mnist", lambda *a, **k: pytest.fail("MNIST was read"))
    for device in ("meta", "mps"):
        with pytest.raises(SystemExit) as error:
            trainer.main(["--device", device])
        assert (f"--device {device}: the trainer runs on cpu or cuda devices only"
                in _one_line(error))
    with pytest.raises(SystemExit) as error:
        trainer.main(["--num-runs", "99999999999999999999999"])
    assert _one_line(error) == ("error: num_runs must be <= 4294967296 (one seed a run), got "
                                "99999999999999999999999")


def test_a_group_too_large_for_memory_is_refused_before_anything_is_built(idx, monkeypatch):
    _nothing_built(monkeypatch)
    with pytest.raises(SystemExit) as error:
        trainer.main(["--data-dir", str(idx), "--num-runs", "100000"])
    assert re.search(r"num_runs 100000 needs at least [\d.]+ [TP]B of memory \([\d.]+ MB a run: "
                     r"parameters, gradients, Adam's moments, minibatch draws\), more than the "
                     r".* free on cpu; use fewer runs per group \(--num-runs; at most \d+ fit before "
                     r"activations are counted\)", _one_line(error))
    # The estimate against a known amount: 4 copies of every parameter, a block of draws and
    # the permutation, in float32.
    config = TrainConfig(num_runs=3, train_size=120)
    per_run = trainer.memory_per_run(config, 120)
    parameters = sum(p.numel() for p in trainer.VAE(trainer.ARCHITECTURES["kingma-welling"](20))
                     .parameters())
    assert per_run == 4 * 4 * parameters + 4 * 1 * 100 * (784 + 20) + 8 * 120
    monkeypatch.setattr(trainer, "_free_memory", lambda device: 2 * per_run + 1)
    with pytest.raises(ValueError, match="at most 2 fit before"):
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


# ------------------------------------------------------------------------------------------------
# The paper programme: its state folder, its finished groups, its weights
# ------------------------------------------------------------------------------------------------

from experiments import paper  # noqa: E402
from experiments.__main__ import main  # noqa: E402

# Two small groups of part (a) stand for its five: every path of the programme, in seconds.
TWO = [("pathwise_analytic_kl", 3), ("pathwise_analytic_kl", 5)]


@pytest.fixture(scope="module")
def mnist_files():
    from experiments.mnist.data import MnistError, load_mnist

    try:
        load_mnist(split="test")
    except MnistError as error:
        pytest.skip(f"no MNIST files: {error}")


@pytest.fixture
def two_groups(monkeypatch, mnist_files):
    monkeypatch.setitem(paper.PARTS["a"], "groups", TWO)
    monkeypatch.setattr(paper, "plot", lambda *args: [])


def _paper(out, *settings):
    return main(["paper", "--quick", "--out", str(out), "--set", "parts=a", *settings])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mnist_files):
    """An output folder whose two groups are finished, with a state folder of its own given,
    in which someone put a file of theirs while the programme ran."""
    out = tmp_path_factory.mktemp("finished")
    original = paper.train_group

    def and_a_visitor(*args, **kwargs):
        (out / "results" / "my-state" / "visitor.txt").write_text("not the programme's")
        return original(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(paper.PARTS["a"], "groups", TWO)
        patch.setattr(paper, "plot", lambda *args: [])
        patch.setattr(paper, "train_group", and_a_visitor)
        argv = ["paper", "--quick", "--out", str(out), "--set", "parts=a", "--set",
                f"state={out / 'results' / 'my-state'}"]
        patch.setattr(sys, "argv", ["experiments", *argv])  # the command the records keep
        assert main(argv) == 0
    return out


def _copy(finished, tmp_path):
    import shutil

    target = tmp_path / "out"
    shutil.copytree(finished, target)
    return target


def _no_measuring(monkeypatch):
    def measured(*args, **kwargs):
        raise AssertionError("measured a group before the checks")

    monkeypatch.setattr(paper, "measure", measured)


def test_a_second_invocation_on_a_state_folder_in_use_is_refused(tmp_path, two_groups,
                                                                 monkeypatch):
    _no_measuring(monkeypatch)
    from experiments.common import Paths

    folders = paper.Folders(paper.Config.quick().replace(parts=("a",)), Paths(tmp_path))
    with locks.holding(folders.state, "the state folder", "wait"):
        with pytest.raises(SystemExit) as error:
            _paper(tmp_path)
    assert (f"the state folder {folders.state} is in use by process {os.getpid()}; wait for that "
            "invocation to end" in _one_line(error))


def test_a_state_folder_that_holds_other_files_or_the_output_is_refused_before_any_work(
        tmp_path, two_groups, monkeypatch):
    _no_measuring(monkeypatch)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine, not the programme's")
    cases = [(mine, "holds files the programme did not write (notes.txt)"),
             (tmp_path, f"is the output folder {tmp_path}"),
             (tmp_path / "results", "is the output folder"),
             (tmp_path / "results" / "paper-quick" / "groups", "is the output folder"),
             (tmp_path.parent, "is above the output folder")]
    for state, message in cases:
        with pytest.raises(SystemExit) as error:
            _paper(tmp_path, "--set", f"state={state}")
        assert message in _one_line(error), state
    assert (mine / "notes.txt").exists()


def test_completion_deletes_only_what_the_programme_wrote_and_records_no_machine_path(
        finished):
    # (Left with nothing in it, the state folder goes too: test_paper's end to end test.)
    assert sorted(p.name for p in (finished / "results" / "my-state").iterdir()) == [
        "visitor.txt"]
    assert not list((finished / "results").glob(".*.lock"))
    results = json.loads((finished / "results" / "paper-quick.json").read_text())["data"]
    assert results["complete"] and len(results["records"]) == 2
    for path in (finished / "results" / "paper-quick" / "groups").iterdir():
        record = json.loads(path.read_text())
        found = [s for s in _strings(record) if ABSOLUTE.search(s)]
        assert not found, (path.name, found[:3])
        command = record["invocations"][-1]["command"]
        assert f"--out .../{finished.name} " in command and "state=.../my-state" in command


def test_the_command_a_record_keeps_names_no_folder_of_this_machine(tmp_path):
    line = paper.command_line(["paper", "--out", str(tmp_path / "o"), "--set",
                               f"state={tmp_path / 's'}", "--set", "runs=2"])
    assert not ABSOLUTE.search(line), line
    assert line.endswith("paper --out .../o --set state=.../s --set runs=2")
    from experiments.common import machine_free  # the results files' metadata too

    assert machine_free(f"state={tmp_path / 's'}") == "state=.../s"
    assert machine_free("estimators=a,b") == "estimators=a,b"


@pytest.mark.parametrize("text, message", [
    ('{"parts": ["a"', "is damaged or not JSON (JSONDecodeError)"),
    ("[1, 2]", "holds a list, not a plan"),
])
def test_a_damaged_plan_is_named_in_one_line(tmp_path, two_groups, monkeypatch, text, message):
    _no_measuring(monkeypatch)
    state = tmp_path / "results" / "paper-quick" / "state" / "a"  # part (a)'s own
    state.mkdir(parents=True)
    (state / "plan.json").write_text(text)
    with pytest.raises(SystemExit) as error:
        _paper(tmp_path)
    assert message in _one_line(error) and "delete it to plan afresh" in str(error.value)


def test_a_damaged_state_checkpoint_names_what_paper_can_do(tmp_path, mnist_files):
    from experiments.common import Paths

    config = paper.Config.quick().replace(parts=("a",))
    folders = paper.Folders(config, Paths(tmp_path))
    group = paper.groups_of(config)[0]
    path = paper._checkpoint(group, config, folders)
    path.parent.mkdir(parents=True)
    path.write_text("hello, not a checkpoint")
    with pytest.raises(SystemExit) as error:
        paper._done_steps(group, config, folders)
    text = _one_line(error)
    assert f"delete {path} to train the group afresh" in text
    assert "--checkpoint" not in text and "--overwrite" not in text


@pytest.mark.parametrize("damage, message", [
    ("truncate", "is damaged or not JSON"),
    ("foreign", "is not the record of kingma-welling-pathwise_analytic_kl-z3 (it holds "
                "'kingma-welling-pathwise_analytic_kl-z5')"),
    ("keys", "lacks histories"),
    ("outside", "names weights '../../..' outside the output folder"),
    ("no weights", "are missing; restore them, or delete"),
    ("flip", "is damaged: its contents do not match the checksum"),
])
def test_a_finished_group_that_cannot_be_used_is_found_before_any_work(
        finished, tmp_path, two_groups, monkeypatch, damage, message):
    out = _copy(finished, tmp_path)
    groups = out / "results" / "paper-quick" / "groups"
    record_file = groups / "kingma-welling-pathwise_analytic_kl-z3.json"
    record = json.loads(record_file.read_text())
    weights = out / record["weights"]
    if damage == "truncate":
        record_file.write_text(record_file.read_text()[:100])
    elif damage == "foreign":
        record_file.write_text((groups / "kingma-welling-pathwise_analytic_kl-z5.json").read_text())
    elif damage == "keys":
        del record["histories"]
        record_file.write_text(json.dumps(record))
    elif damage == "outside":
        record_file.write_text(json.dumps({**record, "weights": "../../.."}))
    elif damage == "no weights":
        weights.unlink()
    else:
        _flip_weights(weights)
    (groups / "kingma-welling-pathwise_analytic_kl-z5.json").unlink()  # a group left to train
    _no_measuring(monkeypatch)
    with pytest.raises(SystemExit) as error:
        _paper(out)
    assert message in _one_line(error)


def _flip_weights(path):
    """One bit of one float of the payload, the file otherwise whole (a valid torch file)."""
    envelope = torch.load(path, weights_only=True)
    envelope["payload"][len(envelope["payload"]) // 2] ^= 1
    torch.save(envelope, path)


def test_a_refused_budget_leaves_no_plan_and_capture_is_said_once_where_it_was_asked_for(
        tmp_path, two_groups, monkeypatch, capsys):
    real = paper.estimate
    monkeypatch.setattr(paper, "estimate", lambda *args: {**real(*args), "minutes": 999.0})
    state = tmp_path / "results" / "paper-quick" / "state" / "a"  # part (a)'s own
    # The second invocation asks for another plan (runs=3): refused for its budget, not as
    # "another plan", since the first left none.
    for settings, count in (((), 0), (("--set", "capture=true", "--set", "runs=3"), 1)):
        with pytest.raises(SystemExit, match="fits no group"):  # after measuring both groups
            _paper(tmp_path, *settings)
        err = capsys.readouterr().err
        assert err.count("capture") == count, err  # on a CPU: silent unless asked for
        assert not (state / "plan.json").exists()
    assert "capture: skipped (CUDA graphs need a CUDA device)" in err
    with pytest.raises(SystemExit, match="capture must be auto, true or false, got 'maybe'"):
        _paper(tmp_path, "--set", "capture=maybe")


def test_empty_part_names_are_named(mnist_files):
    with pytest.raises(SystemExit, match=r"parts has an empty name \(a,,b\)"):
        paper.validate(paper.Config.quick().replace(parts=("a", "", "b")))


# ------------------------------------------------------------------------------------------------
# Shipped weights: a checksum, one-line refusals, the conversion of earlier files
# ------------------------------------------------------------------------------------------------


def _shipped(finished):
    return finished / "results" / "paper-quick" / "weights" / \
        "kingma-welling-pathwise_analytic_kl-z3.pt"


def _evaluate(path, *flags):
    return paper.main(["evaluate", str(path), "--num-samples", "2", "--test-size", "10", *flags])


def test_a_flipped_byte_in_shipped_weights_is_refused_in_one_line(finished, tmp_path, capsys):
    good = _shipped(finished)
    assert _evaluate(good) == 0 and "L_2 = " in capsys.readouterr().out
    damaged = tmp_path / "w.pt"
    damaged.write_bytes(good.read_bytes())
    _flip_weights(damaged)
    with pytest.raises(SystemExit) as error:
        _evaluate(damaged)
    assert "is damaged: its contents do not match the checksum" in _one_line(error)
    assert "L_2" not in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda p, good: p.write_bytes(good.read_bytes()[:2000]), "is truncated or not weights"),
    (lambda p, good: p.write_bytes(b""), "is empty"),
    (lambda p, good: p.write_text("hello, weights\n"), "is truncated or not weights"),
    (lambda p, good: torch.save({"weights": torch.zeros(3)}, p), "is not weights of the paper"),
    (lambda p, good: p.write_bytes(pickle.dumps(_Forbidden(), protocol=2)), "is truncated or not"),
    (lambda p, good: None, "no weights file"),
])
def test_evaluate_refuses_what_is_not_shipped_weights_in_one_line(finished, tmp_path, make,
                                                                 message):
    path = tmp_path / "w.pt"
    make(path, _shipped(finished))
    with pytest.raises(SystemExit) as error:
        _evaluate(path)
    assert message in _one_line(error)
    if message == "no weights file":
        assert "run one first" in str(error.value) and "--device cuda" in str(error.value)


@pytest.mark.parametrize("flags, message", [
    (["--num-samples", "0"], "--num-samples must be >= 1, got 0"),
    (["--test-size", "-5"], "--test-size must lie in 0..10000 (0: all), got -5"),
    (["--seed", "-1"], "--seed must lie in 0.."),
    (["--num-samples", "x"], "invalid int value: 'x'"),
])
def test_evaluate_refuses_bad_flags_in_one_line(finished, flags, message):
    with pytest.raises(SystemExit) as error:
        paper.main(["evaluate", str(_shipped(finished)), "--num-samples", "2", *flags])
    assert message in _one_line(error)


def test_weights_written_without_a_checksum_are_converted_by_saving_them_again(finished,
                                                                              tmp_path, capsys):
    payload = paper.load_weights(_shipped(finished))
    legacy = tmp_path / "legacy.pt"
    torch.save(payload, legacy)  # as the programme wrote weights before they had a checksum
    with pytest.raises(paper.WeightsError, match=rf"{legacy} has no checksum .*; add one with "
                                                 r"python -m experiments.paper checksum"):
        paper.load_weights(legacy)
    paper.save_weights(torch.load(legacy, weights_only=True), legacy)
    again = paper.load_weights(legacy)
    assert again["group"] == payload["group"] and again["seeds"] == payload["seeds"]
    for run, state in enumerate(payload["runs"]):
        for name, value in state.items():
            assert torch.equal(again["runs"][run][name], value)
    # The same through the command line, which leaves checked files as they are.
    other = tmp_path / "other.pt"
    torch.save(payload, other)
    assert paper.main(["checksum", str(other), str(legacy)]) == 0
    out = capsys.readouterr().out
    assert f"{other}: checksum added" in out and f"{legacy}: has its checksum, unchanged" in out
    paper.load_weights(other)
    with pytest.raises(ValueError, match="not a weights payload: it lacks runs"):
        paper.save_weights({k: v for k, v in payload.items() if k != "runs"}, tmp_path / "x.pt")


def test_a_records_weights_path_never_leaves_the_output_folder(finished, tmp_path, capsys):
    from experiments.common import Paths

    record = json.loads((finished / "results" / "paper-quick" / "groups" /
                         "kingma-welling-pathwise_analytic_kl-z3.json").read_text())
    record.update(latent=20, weights="../../..")
    drawn = paper._plot_pictures(None, {"x": record}, tmp_path / "r.json", Paths(tmp_path), "")
    assert drawn == [] and "lie outside the output folder" in capsys.readouterr().err
    assert paper._inside(tmp_path, "../x") is None and paper._inside(tmp_path, "/etc") is None
    assert paper._inside(tmp_path, "results/w.pt") == (tmp_path / "results" / "w.pt").resolve()


def test_figures_remove_the_temporary_files_a_killed_drawing_left(tmp_path):
    import time

    from experiments.common import Paths

    figures = tmp_path / "figures"
    figures.mkdir()
    old = figures / ".paper-burda-quick.pdf.k1ll3d.tmp"
    fresh = figures / ".paper-burda-quick.png.dr4w1n.tmp"  # another drawing, under way
    other = figures / ".gmm-vi.png.abc.tmp"  # another study's
    for path in (old, fresh, other):
        path.write_bytes(b"part of a figure")
    an_hour_ago = time.time() - 3600
    for path in (old, other):
        os.utime(path, (an_hour_ago, an_hour_ago))
    results = {"data": {"records": {}, "quick": True}}
    assert paper.plot(results, tmp_path / "results" / "paper-quick.json", Paths(tmp_path)) == []
    assert not old.exists() and fresh.exists() and other.exists()


def test_the_table_command_without_results_says_what_to_run_first(tmp_path, monkeypatch):
    from experiments import common

    real = common.Paths
    monkeypatch.setattr(common, "Paths", lambda root=tmp_path: real(root))
    with pytest.raises(SystemExit) as error:
        paper.main([])
    text = _one_line(error)
    assert "the paper programme writes them, on a GPU (python -m experiments paper --device " \
           "cuda --out .)" in text and "--quick" in text
