"""The group benchmark at a tiny scale: its numbers, its ratios, its one-line errors.

No timing is asserted: only that the ratios are the ratios of the times it measured.
"""

import pytest

from experiments import benchmark_runs
from experiments.common import load_results


def test_the_group_benchmark_prints_and_saves_ratios_of_what_it_measured(tmp_path, capsys):
    out = tmp_path / "b.json"
    numbers = benchmark_runs.main(["--steps", "3", "--runs", "2", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "ratio (runs per second, group / solo)" in printed and "batched layers" in printed
    assert numbers["ratio"] == pytest.approx(numbers["solo_seconds"] / numbers["group_seconds"])
    assert numbers["batched_over_vmap"] == pytest.approx(
        numbers["vmap_step_seconds"] / numbers["batched_step_seconds"])
    assert load_results(out)["data"] == numbers


@pytest.mark.parametrize("argv, message", [
    (["--runs", "1"], "--runs must be >= 2"),
    (["--estimator", "nope"], "unknown estimator 'nope'"),
    (["--network", "gmm-vae", "--device", "tpu"], "device 'tpu' is not a device name"),
    (["--steps", "0"], "--steps must be >= 1"),
])
def test_bad_flags_give_one_line_errors(argv, message):
    with pytest.raises(SystemExit) as error:
        benchmark_runs.main(argv)
    assert message in str(error.value) and "\n" not in str(error.value)
