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
