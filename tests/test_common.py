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
