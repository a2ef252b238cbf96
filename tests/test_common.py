"""Shared study helpers: one-line errors for a device torch cannot use."""

import pytest
import torch

from experiments.common import resolve_device


def test_resolve_device_names_the_fix_for_an_unknown_device():
    with pytest.raises(SystemExit) as error:
        resolve_device("gpu")
    message = str(error.value)
    assert "\n" not in message and "--device gpu" in message and "use cpu" in message


def test_resolve_device_accepts_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_paired_difference_is_the_mean_and_standard_error_of_the_runs_differences():
    import numpy as np

    from experiments.style import mean_and_se, paired_difference

    mean, se, beyond = paired_difference([1.0, 2.0, 3.0], [0.5, 1.4, 2.6])
    differences = np.array([0.5, 0.6, 0.4])
    assert mean == pytest.approx(differences.mean())
    assert se == pytest.approx(differences.std(ddof=1) / np.sqrt(3))
    assert beyond  # 0.5 ± 0.058: the runs' shared level cancels in the pairs
    # Unpaired, the same numbers overlap: each mean's spread over runs is about 0.6.
    assert mean_and_se(np.array([[1.0], [2.0], [3.0]]))[1][0] > 0.5
    assert not paired_difference([1.0, 2.0, 3.0], [1.1, 1.9, 3.0])[2]
    assert paired_difference([1.0, float("nan"), 3.0], [0.0, 0.0, 2.0])[0] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------
# Where runs write, and what they may replace
# ------------------------------------------------------------------------------------------------

import json
import subprocess
from pathlib import Path

from experiments import __main__ as cli
from experiments import common

ROOT = Path(__file__).resolve().parents[1]


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


def test_a_full_scale_run_writes_under_runs_unless_out_names_a_folder(tmp_path, monkeypatch):
    # A full-scale run wrote into the repository's results/ and figures/, over committed files.
    from experiments import cost_functions

    monkeypatch.setattr(cost_functions, "run", lambda config, paths: {"value": 1})
    monkeypatch.setattr(cost_functions, "plot", lambda *args: [])
    monkeypatch.setattr(cli, "ROOT", tmp_path / "repository")  # where the old default pointed
    monkeypatch.setattr(cli, "FULL_OUT", tmp_path / "full", raising=False)
    assert cli.main(["cost-functions"]) == 0
    assert (tmp_path / "full" / "results" / "cost-functions.json").exists()
    assert not (tmp_path / "repository").exists()
    assert cli.main(["cost-functions", "--out", str(tmp_path / "named")]) == 0
    assert (tmp_path / "named" / "results" / "cost-functions.json").exists()
    if (ROOT / ".git").exists():
        probe = "runs/full/results/cost-functions.json"
        assert subprocess.run(["git", "check-ignore", "-q", probe], cwd=ROOT).returncode == 0


def test_a_run_of_some_parts_never_replaces_a_results_file_holding_more(tmp_path, monkeypatch):
    from experiments import discrete

    ran = []
    monkeypatch.setattr(discrete, "run", lambda config, paths: ran.append(config.parts) or {})
    monkeypatch.setattr(discrete, "plot", lambda *args: [])
    saved = tmp_path / "results" / "discrete.json"
    common.save_results(saved, {"parts": ["toy", "sbn"]},
                        {"study": "discrete", "config": {"parts": ["toy", "sbn"]}})
    before = saved.read_bytes()
    with pytest.raises(SystemExit) as error:
        cli.main(["discrete", "--out", str(tmp_path), "--set", "parts=toy"])
    message = _one_line(error)
    assert "holds parts toy, sbn" in message and "without sbn" in message
    assert "parts=toy,sbn" in message and "--out" in message
    assert not ran and saved.read_bytes() == before  # refused before any work, nothing lost
    assert cli.main(["discrete", "--out", str(tmp_path), "--set", "parts=sbn,toy"]) == 0
    assert ran == [("sbn", "toy")]


# ------------------------------------------------------------------------------------------------
# The figures command: where it reads, where it draws, what it leaves
# ------------------------------------------------------------------------------------------------


def _stub_plot(results, results_path, paths):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [results["data"]["y"], 1])
    return common.save_figure(fig, paths, "stub", results_path, "stub.py")


def test_figures_reads_from_one_folder_and_draws_into_another(tmp_path, monkeypatch):
    # `figures --out DIR` read its results from DIR too: it could not redraw the committed
    # results elsewhere, and made empty folders there.
    from experiments import score_forms

    monkeypatch.setattr(score_forms, "plot", _stub_plot)
    source, target = tmp_path / "source", tmp_path / "target"
    common.save_results(source / "results" / "score-forms.json", {"y": 0.5},
                        {"study": "score-forms"})
    assert cli.main(["figures", "--from", str(source), "--out", str(target)]) == 0
    assert (target / "figures" / "stub.png").exists() and (target / "figures" / "stub.pdf").exists()
    assert not (source / "figures").exists() and not (target / "results").exists()
    # the stamp names the results file as the reader finds it, under the --from folder
    assert cli.main(["figures", "--from", str(source)]) == 0
    assert (source / "figures" / "stub.png").exists()


def test_figures_on_an_empty_folder_says_so_and_leaves_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["figures", "--from", str(empty)],
                 ["figures", "--from", str(empty), "--out", str(tmp_path / "elsewhere")]):
        with pytest.raises(SystemExit) as error:
            cli.main(argv)
        assert "no saved results under" in _one_line(error) and "--from" in _one_line(error)
    assert list(tmp_path.rglob("*")) == [empty]


def test_figures_draws_the_rest_past_a_broken_results_file_and_names_it(tmp_path, capsys):
    class Broken:
        @staticmethod
        def plot(results, results_path, paths):
            return _stub_plot(results, results_path, paths)  # its data has no "y"

    class Fine:
        @staticmethod
        def plot(results, results_path, paths):
            return [Path(results_path).name]

    common.save_results(tmp_path / "results" / "broken.json", {"x": 1}, {"study": "broken",
                                                                          "git_commit": "abc1234"})
    common.save_results(tmp_path / "results" / "fine.json", {"y": 1}, {"study": "fine"})
    with pytest.raises(SystemExit) as error:
        cli.redraw(common.Paths(tmp_path), {"broken": Broken, "fine": Fine})
    message = _one_line(error)
    assert "broken.json" in message and "no entry 'y'" in message and "re-run" in message
    printed = capsys.readouterr()
    assert printed.out.split() == ["fine.json"]  # the study after the broken one was drawn
    assert "error:" in printed.err and "broken.json" in printed.err


# ------------------------------------------------------------------------------------------------
# Results files that are valid JSON but not what a study writes: one line each
# ------------------------------------------------------------------------------------------------


def _results_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_results_file_with_a_huge_integer_is_refused_as_it_is_read(tmp_path):
    path = _results_file(tmp_path / "r.json", '{"metadata": {"study": "gmm-vae"}, "data": {"n": 1'
                         + "0" * 400 + "}}")
    with pytest.raises(SystemExit) as error:
        common.load_results(path, "gmm-vae")
    assert "an integer of 401 digits" in _one_line(error) and "re-run" in _one_line(error)
    # the largest integers results hold (seeds, images seen) still read
    fine = _results_file(tmp_path / "f.json", '{"metadata": {"study": "s"}, "data": {"n": '
                         f'{2 ** 63 - 1}}}}}')
    assert common.load_results(fine, "s")["data"]["n"] == 2 ** 63 - 1


def test_a_results_file_that_names_no_study_says_so(tmp_path):
    path = _results_file(tmp_path / "r.json", '{"metadata": {"study": null}, "data": {}}')
    with pytest.raises(SystemExit) as error:
        common.load_results(path, "gmm-vae")
    assert "does not say which study wrote it" in _one_line(error)
    assert "experiments.None" not in _one_line(error)


def test_a_trainer_file_given_to_a_study_names_the_command_that_wrote_it(tmp_path):
    from experiments import mnist_vae

    path = tmp_path / "history.json"
    common.save_results(path, {"history": []}, {
        "study": "mnist-train", "command": "python3 -m experiments.mnist.train --out h.json"})
    with pytest.raises(SystemExit) as error:
        mnist_vae.main([str(path)])
    message = _one_line(error)
    assert "holds the results of 'mnist-train', not of 'mnist-vae'" in message
    assert "python -m experiments.mnist.train wrote it" in message
    assert "experiments.mnist_train" not in message
    common.save_results(path, {}, {"study": "other", "command": "python3 -m experiments.gone"})
    with pytest.raises(SystemExit) as error:
        mnist_vae.main([str(path)])
    assert "experiments.gone" not in _one_line(error)  # no module that does not exist


def test_a_summary_of_results_with_missing_keys_says_what_is_missing(tmp_path):
    from experiments import gmm_vae

    path = tmp_path / "gmm-vae.json"
    common.save_results(path, {"runs": {}}, {"study": "gmm-vae", "git_commit": "0123456789ab"})
    with pytest.raises(SystemExit) as error:
        gmm_vae.main([str(path)])
    message = _one_line(error)
    assert str(path) in message and "no entry" in message and "0123456789" in message
