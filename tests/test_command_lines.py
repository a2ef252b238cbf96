"""The command lines: mistakes refused in one line before any work, devices run as asked (or
refused) and recorded as used, the benchmark's default estimators, and --help without torch.

Studies are never launched here: their run and plot are replaced by recorders, so a test sees
whether work would have started.
"""

import dataclasses
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from experiments import STUDIES, benchmark_diagnostics, benchmark_runs, common
from experiments import __main__ as cli

ROOT = Path(__file__).resolve().parents[1]


def _one_line(error) -> str:
    text = str(error.value)
    assert "\n" not in text, text
    return text


@pytest.fixture
def no_work(monkeypatch):
    """Every study's run and plot replaced by recorders; returns the names of the studies run
    and the configs they were given."""
    ran = []
    for name, module_name in STUDIES.items():
        module = importlib.import_module(module_name)
        monkeypatch.setattr(module, "run", lambda config, paths, name=name: ran.append(
            (name, config)) or {"value": 1})
        monkeypatch.setattr(module, "plot", lambda *args: [])
    return ran


@pytest.fixture
def threads_set(monkeypatch):
    """torch.set_num_threads recorded, not called (a huge count could crash the process)."""
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    return calls


# ------------------------------------------------------------------------------------------------
# Flags and --set: conflicts, bounds, every study's fields checked before the first runs
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, message", [
    # --set seed bypassed --seed's range check (an 18-line traceback from numpy)
    (["cost-functions", "--quick", "--set", "seed=-1"], "--set seed must lie in 0..4294967295"),
    (["cost-functions", "--quick", "--set", "seed=x"], "cannot read 'x' as int"),
    # the quick numbers were written under the full-scale name, or the tracked quick file written
    (["cost-functions", "--quick", "--set", "quick=false"], "--quick alone chooses the scale"),
    (["cost-functions", "--set", "quick=true"], "--quick alone chooses the scale"),
    # --set won silently over the flag
    (["paper", "--quick", "--parts", "a", "--set", "parts=a,b"],
     "--parts and --set parts=a,b both set parts"),
    (["cost-functions", "--quick", "--seed", "3", "--set", "seed=4"], "--seed and --set seed=4"),
    (["paper", "--quick", "--parts", "a,,b"], "--parts 'a,,b' names an empty part"),
    # "seed must lie in 0..-99999999999995705032703"
    (["gmm-vae", "--quick", "--set", "runs=99999999999999999999999"],
     "runs=99999999999999999999999: 99999999999999999999999 is out of range"),
    (["mnist-vae", "--quick", "--set", "runs=5000000000"],
     "runs=5000000000: run r takes seed 0 + r, which must stay within 4294967295; use runs <= "
     "4294967296"),
    (["gmm-vi", "--quick", "--set", "samples_grid=1,99999999999999999999"], "is out of range"),
    # cost-functions ran first, then "gmm-vi has no config field 'chunk'"
    (["all", "--quick", "--set", "chunk=2000"], "gmm-vi has no config field 'chunk'"),
])
def test_mistakes_are_refused_in_one_line_before_any_study_runs(tmp_path, no_work, argv,
                                                                message):
    with pytest.raises(SystemExit) as error:
        cli.main([*argv, "--out", str(tmp_path)])
    assert message in _one_line(error)
    assert no_work == []


def test_all_builds_and_checks_every_config_before_the_first_study_runs(tmp_path, no_work,
                                                                       monkeypatch):
    from experiments import gmm_vae

    def refuse(config):
        raise SystemExit("error: gmm-vae: refused")

    monkeypatch.setattr(gmm_vae, "validate", refuse)
    with pytest.raises(SystemExit, match="gmm-vae: refused"):
        cli.main(["all", "--quick", "--out", str(tmp_path)])
    assert no_work == []  # cost-functions, gmm-vi and score-forms come before gmm-vae


def test_threads_have_an_upper_bound_said_in_the_message(tmp_path, no_work, threads_set):
    # 99999 threads: a segfault in the trainer, an ArrayMemoryError in score-forms
    bound = common.max_threads()
    for argv in (["--threads", "99999"], ["--set", "threads=99999"]):
        with pytest.raises(SystemExit) as error:
            cli.main(["score-forms", "--quick", "--out", str(tmp_path), *argv])
        assert f"at most {bound} (four per CPU core), got 99999" in _one_line(error)
    assert no_work == [] and threads_set == []
    with pytest.raises(ValueError, match="at most"):
        with common.torch_threads(bound + 1):
            pass
    assert cli.main(["score-forms", "--quick", "--out", str(tmp_path), "--threads",
                     str(bound)]) == 0
    assert no_work[0][1].threads == bound and bound in threads_set


def test_a_consistent_request_runs_with_every_value_it_named(tmp_path, no_work):
    assert cli.main(["paper", "--quick", "--out", str(tmp_path), "--parts", "a", "--seed", "7",
                     "--set", "runs=3", "--set", "runs=2"]) == 0  # the last --set counts
    (name, config), = no_work
    assert (name, config.parts, config.seed, config.runs, config.quick) == (
        "paper", ("a",), 7, 2, True)


# ------------------------------------------------------------------------------------------------
# Devices: run where asked, or refuse in one line; the metadata names the device used
# ------------------------------------------------------------------------------------------------

CPU_ONLY = ["cost-functions", "gmm-vi", "score-forms", "gmm-vae", "seed-ideas", "discrete"]


@pytest.mark.parametrize("study", CPU_ONLY)
def test_a_cpu_study_refuses_cuda_before_any_work(tmp_path, no_work, study):
    # They computed on the CPU whatever --device said, and recorded the device asked for.
    with pytest.raises(SystemExit) as error:
        cli.main([study, "--quick", "--out", str(tmp_path), "--device", "cuda"])
    assert f"--device cuda: {study} computes on the CPU only; use --device cpu or auto" in (
        _one_line(error))
    assert no_work == []


@pytest.mark.parametrize("study, device", [("score-forms", "meta"), ("mnist-vae", "mps"),
                                           ("paper", "meta"), ("all", "mps")])
def test_meta_and_mps_devices_are_one_line_errors(tmp_path, no_work, study, device):
    with pytest.raises(SystemExit) as error:
        cli.main([study, "--quick", "--out", str(tmp_path), "--device", device])
    assert f"--device {device}: " in _one_line(error) and "use --device cpu" in str(error.value)
    assert no_work == []


def test_the_metadata_records_the_device_used_not_the_one_asked_for(tmp_path, no_work):
    assert cli.main(["cost-functions", "--quick", "--out", str(tmp_path), "--device",
                     "auto"]) == 0
    saved = json.loads((tmp_path / "results" / "cost-functions-quick.json").read_text())
    assert saved["metadata"]["device"] == "cpu" and saved["metadata"]["config"]["device"] == "cpu"
    assert no_work[0][1].device == "cpu"


def test_a_cpu_study_called_from_python_refuses_another_device_itself():
    from experiments import score_forms

    tiny = score_forms.Config(num_replicates=2, num_points=1, num_curve_points=2,
                              num_shift_points=1, chunk=2, device="meta")
    with pytest.raises(SystemExit) as error:
        score_forms.run(tiny, None)
    assert "score-forms computes on the CPU only" in _one_line(error)


def test_resolve_device_takes_what_the_study_supports():
    assert common.resolve_device("auto", ("cpu",)) == torch.device("cpu")
    with pytest.raises(SystemExit) as error:
        common.resolve_device("cuda:0", ("cpu",), "gmm-vi")
    assert "gmm-vi computes on the CPU only" in _one_line(error)
    for name in ("meta", "mps", "xpu"):
        with pytest.raises(SystemExit) as error:
            common.resolve_device(name)
        assert f"--device {name}: the study computes on cpu or cuda devices only" in (
            _one_line(error))


# ------------------------------------------------------------------------------------------------
# The benchmarks
# ------------------------------------------------------------------------------------------------


def test_the_diagnostics_benchmark_defaults_to_the_estimators_that_take_its_q():
    continuous = tuple(n for n, e in benchmark_diagnostics.ESTIMATORS.items()
                       if "continuous" in e.q_kinds)
    assert benchmark_diagnostics.Config().estimators == continuous
    assert "enumeration" not in continuous and "pathwise" in continuous


def test_the_diagnostics_benchmarks_default_path_completes(capsys):
    # With no --estimator it died on enumeration after 30 s to 2 min (a 40-line traceback).
    assert benchmark_diagnostics.main(["--replicates", "2", "--loop-replicates", "1",
                                       "--repeats", "1", "--no-compile"]) == 0
    rows = capsys.readouterr().out.splitlines()
    timed = [line.split()[0] for line in rows[2:] if line and not line.startswith(
        ("compiled", "notes", " "))]
    assert timed == list(benchmark_diagnostics.CONTINUOUS)


@pytest.mark.parametrize("argv, message", [
    (["--estimator", "gumbel_softmax"], "gumbel_softmax takes a q of discrete latents"),
    (["--estimator", "pathwise", "arm"], "arm takes a q of discrete latents"),
    (["--threads", "99999"], "--threads must be >= 0 (0: torch's default) and at most"),
    (["--seed", "-1"], "--seed must lie in 0..4294967295"),
])
def test_the_diagnostics_benchmark_refuses_in_one_line(capsys, threads_set, argv, message):
    tiny = ["--replicates", "2", "--loop-replicates", "1", "--repeats", "1", "--no-compile"]
    with pytest.raises(SystemExit) as error:
        benchmark_diagnostics.main([*tiny, *argv])
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("which", ["runs", "mnist"])
def test_the_benchmarks_check_out_device_and_threads_before_they_time(tmp_path, monkeypatch,
                                                                      threads_set, which):
    # --out under a file failed after the minutes of timing; meta and 99999 threads were raw
    from experiments.mnist import benchmark as mnist_benchmark

    timed = []
    for module, names in ((benchmark_runs, ("_gmm_seconds", "_mnist_seconds")),
                          (mnist_benchmark, ("tutorial_epochs", "trainer_epochs"))):
        for name in names:
            monkeypatch.setattr(module, name, lambda *a, **k: timed.append(1) or 1.0)
    main = {"runs": lambda argv: benchmark_runs.main(["--runs", "2", "--steps", "1", *argv]),
            "mnist": mnist_benchmark.main}[which]
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    for argv, message in (
            (["--out", str(blocked / "b.json")], "which is a file, not a folder; choose another"),
            (["--out", str(tmp_path)], "is a folder; give a file"),
            (["--device", "meta"], "--device meta: the benchmark runs on cpu or cuda devices"),
            (["--threads", "99999"], "at most")):
        if which == "runs" and argv[0] == "--device":
            argv = ["--network", "kingma-welling", *argv]
        with pytest.raises(SystemExit) as error:
            main(argv)
        assert message in _one_line(error)
    assert timed == [] and threads_set == []


# ------------------------------------------------------------------------------------------------
# Startup: --help and mistakes answer without importing torch, scipy, matplotlib or a study
# ------------------------------------------------------------------------------------------------


def test_help_and_mistakes_answer_without_importing_torch_or_a_study():
    # gmm-vi --help took 4.5 s and more (torch, torch._dynamo through the library, scipy).
    script = """
import sys
from experiments.__main__ import main
for argv in (["gmm-vi", "--help"], [], ["gmm-vi", "--seed", "-1"], ["gmm-vi", "--set", "x=1"],
             ["gmm-vi", "--quick", "--set", "quick=false"], ["all", "--set", "chunk=2"],
             ["gmm-vi", "--threads", "99999"], ["paper", "--bogus"]):
    try:
        main(argv)
    except SystemExit:
        pass
heavy = [m for m in ("torch", "scipy", "matplotlib", "estimators", "experiments.gmm_vi")
         if m in sys.modules]
print("HEAVY", heavy)
try:  # a device the study refuses: torch is imported to read the name, nothing more
    main(["gmm-vi", "--device", "cuda"])
except SystemExit as error:
    print("DEVICE", error)
heavy = [m for m in ("scipy", "matplotlib", "estimators", "experiments.gmm_vi")
         if m in sys.modules]
print("HEAVY", heavy)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("HEAVY []") == 2, done.stdout[-500:]
    assert "DEVICE error: --device cuda: gmm-vi computes on the CPU only" in done.stdout
    assert "num_replicates" in done.stdout  # gmm-vi's --help lists its fields


def test_the_help_read_from_source_is_what_the_modules_say():
    for name, module_name in STUDIES.items():
        text = cli.study_text(module_name)
        module = importlib.import_module(module_name)
        assert text.summary == module.SUMMARY, name
        assert text.fields == tuple(f.name for f in dataclasses.fields(module.Config)), name
        assert text.epilog == common.describe_fields(module.Config), name
        assert text.devices == module.Config.DEVICES, name
        assert text.description.startswith(module.SUMMARY), name
