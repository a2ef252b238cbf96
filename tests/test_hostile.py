"""Misuse, as a careless or hostile user would try it: every one is refused early, in one line,
and loses nothing already saved; and the first run, as a newcomer meets it, leaves the checkout
clean. (Checkpoints and the trainer's own flags are tested in test_mnist_train.py, the MNIST
files' checks in test_mnist_data.py.)"""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from experiments import __main__ as cli
from experiments import common
from experiments.__main__ import main
from experiments.mnist import train as trainer

ROOT = Path(__file__).resolve().parents[1]


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


# ------------------------------------------------------------------------------------------------
# Output folders that cannot be written: refused before any work
# ------------------------------------------------------------------------------------------------


def test_a_study_refuses_an_unwritable_out_before_it_computes_anything(tmp_path, monkeypatch):
    from experiments import cost_functions

    ran = []
    monkeypatch.setattr(cost_functions, "run", lambda config, paths: ran.append(1) or {})
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path).startswith(
        str(tmp_path)) else real(path, mode))
    with pytest.raises(SystemExit) as error:
        main(["cost-functions", "--quick", "--out", str(tmp_path)])
    assert "is not writable (permission denied); choose another --out" in _one_line(error)
    assert not ran
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setattr(os, "access", real)
    with pytest.raises(SystemExit) as error:
        main(["cost-functions", "--quick", "--out", str(blocked)])
    assert "cannot create the output folder" in _one_line(error) and not ran


def test_the_trainer_refuses_an_unwritable_checkpoint_folder_before_training(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with pytest.raises(SystemExit) as error:
        trainer.main(["--checkpoint", str(blocked / "run.pt"), "--data-dir", str(tmp_path)])
    assert "cannot create the checkpoint folder" in _one_line(error)


# ------------------------------------------------------------------------------------------------
# Settings out of range
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    (["gmm-vae", "--quick", "--set", "learning_rate=nan"], "learning_rate must be a finite number"),
    (["gmm-vi", "--quick", "--set", "ring_q_scale=inf"], "ring_q_scale must be a finite number"),
    (["mnist-vae", "--quick", "--set", "learning_rate=nan"], "learning_rate must be a finite"),
    (["cost-functions", "--quick", "--seed", "-1"], "--seed must lie in 0..4294967295, got -1"),
    (["cost-functions", "--quick", "--seed", "4294967296"], "--seed must lie in 0..4294967295"),
    (["cost-functions", "--quick", "--threads", "-1"], "--threads must be >= 0"),
])
def test_study_settings_out_of_range_are_one_line_errors(tmp_path, argv, message):
    with pytest.raises(SystemExit) as error:
        main([*argv, "--out", str(tmp_path)])
    assert message in _one_line(error)


@pytest.mark.parametrize("argv, message", [
    (["--learning-rate", "nan"], "learning_rate must be a positive number no larger than 1"),
    (["--learning-rate", "1e38"], "learning_rate must be a positive number no larger than 1"),
    (["--threads", "-3"], "--threads must be >= 0"),
])
def test_trainer_settings_out_of_range_are_one_line_errors(argv, message):
    with pytest.raises(SystemExit) as error:
        trainer.main(argv)
    assert message in _one_line(error)


def test_a_train_size_beyond_the_files_is_refused(tmp_path):
    from test_mnist_data import write_split

    write_split(tmp_path, "train", 120, gz=True)
    write_split(tmp_path, "test", 30, gz=False, seed=1)
    with pytest.raises(SystemExit) as error:
        trainer.main(["--data-dir", str(tmp_path), "--train-size", "70000"])
    assert "train_size 70000 exceeds the 120 training images" in _one_line(error)


# ------------------------------------------------------------------------------------------------
# Results files that are not what a command expects
# ------------------------------------------------------------------------------------------------


def _results_of(tmp_path, study, name="x.json"):
    path = tmp_path / name
    common.save_results(path, {"value": 1}, {"study": study})
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: _results_of(p, "gmm-vi"), "holds the results of 'gmm-vi', not of 'gmm-vae'; use "
                                         "python -m experiments.gmm_vi"),
    (lambda p: (p / "f.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe") and p / "f.png",
     "is not a results file (not text"),
    (lambda p: p, "is a folder, not a results file"),
    (lambda p: (p / "l.json").write_text("[1, 2]") and p / "l.json",
     "is JSON but not a results file"),
])
def test_a_summary_of_a_file_that_is_not_its_results_says_what_the_file_is(tmp_path, make,
                                                                          message):
    from experiments import gmm_vae

    target = make(tmp_path)
    with pytest.raises(SystemExit) as error:
        gmm_vae.main([str(target)])
    assert message in _one_line(error)


def test_figures_refuses_a_results_file_of_another_study_under_its_name(tmp_path):
    (tmp_path / "results").mkdir()
    _results_of(tmp_path / "results", "seed-ideas", "gmm-vae.json")
    with pytest.raises(SystemExit) as error:
        main(["figures", "--from", str(tmp_path)])
    assert "holds the results of 'seed-ideas', not of 'gmm-vae'" in _one_line(error)


def test_figures_redraws_quick_and_full_results_alike(tmp_path, capsys):
    class Study:  # a study whose plot says which results it drew from
        NAME = "study"

        @staticmethod
        def plot(results, results_path, paths):
            return [Path(results_path).name]

    for stem in ("study", "study-quick"):
        common.save_results(tmp_path / "results" / f"{stem}.json", {}, {"study": "study"})
    cli.redraw(common.Paths(tmp_path), {"study": Study})
    assert capsys.readouterr().out.split() == ["study.json", "study-quick.json"]


def test_a_study_says_it_is_drawing_before_its_figures_take_their_seconds(tmp_path, capsys):
    # Drawing gmm-vi's five figures took 10 s after its last bar, in silence; the results line
    # (and that drawing has begun) now comes before.
    from experiments import cost_functions

    seen = []

    class Study:
        NAME = "study"

        @staticmethod
        def run(config, paths):
            return {}

        @staticmethod
        def plot(results, results_path, paths):
            import matplotlib.pyplot as plt

            seen.append(capsys.readouterr().out)
            written = []
            for name in ("one", "two"):
                written += common.save_figure(plt.figure(), paths, name, results_path, "study.py")
                seen.append(capsys.readouterr().out)  # each figure named as soon as written
            return written

    config = cost_functions.Config.quick()
    cli.run_study(Study, config, common.Paths(tmp_path))
    assert "study:" in seen[0] and "drawing the figures" in seen[0]
    assert "figure" in seen[1] and "one-quick.png" in seen[1] and "two" not in seen[1]
    assert "two-quick.pdf" in seen[2]


def test_gmm_vi_shows_a_bar_before_its_first_exact_gradient(monkeypatch):
    # gmm-vi --quick printed nothing for its first seconds: the ring's exact gradient by cubature
    # ran before any bar. A bar over the parts now opens before any part starts.
    from experiments import gmm_vi

    events = []

    class Bar:
        def __init__(self, iterable, desc="", **kwargs):
            events.append(("bar", desc))
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix_str(self, text):
            pass

    monkeypatch.setattr(gmm_vi, "progress", Bar)
    monkeypatch.setattr(gmm_vi, "PARTS", {name: (lambda config, name=name: events.append(
        ("part", name)) or {}) for name in gmm_vi.PARTS})
    data = gmm_vi.run(gmm_vi.Config.quick(), None)
    assert events[0] == ("bar", "gmm-vi: parts")
    assert [e[1] for e in events[1:]] == ["samples", "scale", "dimension", "fit", "discrete"]
    assert set(data) >= {"samples", "scale", "dimension", "fit", "discrete"}


# ------------------------------------------------------------------------------------------------
# Permission denied on the MNIST files
# ------------------------------------------------------------------------------------------------


def test_an_unreadable_mnist_file_or_folder_says_permission_denied(tmp_path, monkeypatch):
    from experiments.mnist import data
    from test_mnist_data import write_split

    write_split(tmp_path, "train", 20, gz=True)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(data.gzip, "open", denied)
    with pytest.raises(data.MnistError, match=r"cannot read .*train-images-idx3-ubyte.gz: "
                                              "permission denied"):
        data.load_mnist(tmp_path, "train")
    monkeypatch.undo()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(data.MnistError, match="cannot read the MNIST directory .*: permission "
                                              "denied"):
        data.load_mnist(tmp_path, "train")


# ------------------------------------------------------------------------------------------------
# The first run: quick runs write where nothing tracked lives; no machine paths are committed
# ------------------------------------------------------------------------------------------------


def test_quick_runs_write_under_a_folder_git_ignores(tmp_path, monkeypatch):
    from experiments import cost_functions

    monkeypatch.setattr(cost_functions, "run", lambda config, paths: {"value": 1})
    monkeypatch.setattr(cost_functions, "plot", lambda *args: [])
    monkeypatch.setattr(cli, "QUICK_OUT", tmp_path / "quick")
    assert main(["cost-functions", "--quick"]) == 0
    assert (tmp_path / "quick" / "results" / "cost-functions-quick.json").exists()
    if (ROOT / ".git").exists():
        probe = "runs/quick/results/mnist-vae-quick.json"
        ignored = subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT)
        assert ignored.returncode == 0, f"{probe} is not ignored by git"


def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


ABSOLUTE = re.compile(r'(^|[\s"=(])/[A-Za-z][A-Za-z0-9_.-]*/')


def _absolute_paths(path: Path) -> list[str]:
    """The absolute paths a text file holds: in a JSON file's strings, else in its lines (a
    binary file holds none that a reader would see)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return []
    strings = _strings(json.loads(text)) if path.suffix == ".json" else text.splitlines()
    return [s for s in strings if ABSOLUTE.search(s)]


def test_no_committed_results_file_holds_an_absolute_path():
    # Every text file under results/: the JSON results and the notes beside them (Markdown).
    files = sorted(p for p in (ROOT / "results").rglob("*") if p.is_file())
    assert any(p.suffix == ".json" for p in files) and any(p.suffix == ".md" for p in files)
    for path in files:
        found = _absolute_paths(path)
        assert not found, f"{path.relative_to(ROOT)}: {found[:3]}"


def test_the_scan_finds_an_absolute_path(tmp_path):
    # The negative test of the scan above.
    assert ABSOLUTE.search("python -m experiments gmm-vi --out /tmp/x")
    assert ABSOLUTE.search("/home/user/checkpoints/run.pt")
    assert not ABSOLUTE.search("python -m experiments gmm-vi --out .../x")
    notes = tmp_path / "notes.md"
    notes.write_text("```\n$ python -m experiments.mnist.benchmark\nsaved /root/out/eager.json\n```\n")
    assert _absolute_paths(notes) == ["saved /root/out/eager.json"]
    assert common.machine_free(str(tmp_path / "out")) == ".../out"
    assert common.machine_free("relative/out") == "relative/out"


# ------------------------------------------------------------------------------------------------
# Threads
# ------------------------------------------------------------------------------------------------


def test_every_study_runs_on_the_threads_it_is_given(tmp_path, monkeypatch):
    from experiments import cost_functions

    seen = []
    monkeypatch.setattr(cost_functions, "run",
                        lambda config, paths: seen.append(torch.get_num_threads()) or {})
    monkeypatch.setattr(cost_functions, "plot", lambda *args: [])
    before = torch.get_num_threads()
    main(["cost-functions", "--quick", "--out", str(tmp_path)])
    main(["cost-functions", "--quick", "--out", str(tmp_path), "--threads", "2"])
    assert seen == [1, 2] and torch.get_num_threads() == before


@pytest.mark.parametrize("module", ["experiments.mnist.train", "experiments.mnist.benchmark",
                                    "experiments.benchmark_runs"])
def test_the_trainer_and_the_benchmarks_take_threads(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(module).main(["--help"])
    assert exit_info.value.code == 0 and "--threads" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------
# Figures: the provenance stamp sits below everything the figure shows
# ------------------------------------------------------------------------------------------------


def test_the_provenance_stamp_never_covers_an_axis_label(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "close", lambda fig: None)
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([1, 2], [3, 4])
    ax.set_xlabel("a long x label that reaches the right edge of the figure")
    ax.set_title("a long title that reaches the right edge of the figure too")
    fig.suptitle("and a suptitle above it that is wider still, edge to edge")
    common.save_figure(fig, common.Paths(tmp_path), "f", tmp_path / "r.json", "script.py")
    renderer = fig.canvas.get_renderer()
    stamp = fig.texts[-1].get_window_extent(renderer)
    for text in (ax.xaxis.label, ax.yaxis.label, ax.title, fig._suptitle):
        if text is not None and text.get_text():
            assert not stamp.overlaps(text.get_window_extent(renderer)), text.get_text()


# ------------------------------------------------------------------------------------------------
# The library: what validation off still checks, and what validation on catches
# ------------------------------------------------------------------------------------------------


def _library_q(loc=(0.1, -0.2), scale=(1.0, 0.5)):
    from torch.distributions import Independent, Normal

    return Independent(Normal(torch.tensor(loc), torch.tensor(scale)), 1)


class _SumsOverSamples:
    """A model whose log_joint sums over the sample dimension: the wrong shape."""

    def log_joint(self, z):
        return -0.5 * z.pow(2).sum((0, -1))


def test_a_wrong_log_joint_shape_is_refused_even_with_validation_off():
    from estimators import ESTIMATORS, EstimatorError, set_validation
    from estimators.base import validation_enabled

    assert validation_enabled()
    set_validation(False)
    try:
        for name in ("pathwise", "score_function", "iwae"):
            with pytest.raises(EstimatorError, match=r"returned shape \(\) for samples of shape "
                                                     r"\(4, 2\); expected"):
                ESTIMATORS[name](_SumsOverSamples(), _library_q(), 4)
    finally:
        set_validation(True)


class _Returns:
    def __init__(self, value):
        self.value = value

    def log_joint(self, z):
        return self.value(z)


@pytest.mark.parametrize("model, loc, message", [
    (_Returns(lambda z: torch.full(z.shape[:-1], float("nan"))), (0.1, -0.2),
     "model.log_joint returned NaN for some samples"),
    (_Returns(lambda z: 0.0), (0.1, -0.2), "model.log_joint must return a torch tensor, got float"),
    (_Returns(lambda z: -z.pow(2).sum(-1)), (float("inf"), 0.0),
     "q's parameter 'base_dist.loc' contains an infinite value"),  # torch lets inf through
])
def test_bad_values_reaching_an_estimator_are_named_while_validation_is_on(model, loc, message):
    from estimators import ESTIMATORS, EstimatorError

    with pytest.raises(EstimatorError, match=message):
        ESTIMATORS["pathwise"](model, _library_q(loc=loc), 3)


def test_a_prior_of_another_dimension_than_q_is_named_by_the_analytic_kl():
    from torch.distributions import Independent, Normal

    from estimators import ESTIMATORS, EstimatorError

    class Model:
        prior = Independent(Normal(torch.zeros(3), torch.ones(3)), 1)

        def log_likelihood(self, z):
            return -z.pow(2).sum(-1)

    with pytest.raises(EstimatorError, match=r"the prior has event shape \(3,\) and q \(2,\)"):
        ESTIMATORS["pathwise_analytic_kl"](Model(), _library_q(), 2)
