"""Every tutorial runs, as a reader would run it, in its smoke mode (``CI`` set: fewer replicates
and steps); the interactive controls behind the sliders draw at every knob's ends."""

import os
import runpy
import time
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("[0-9]*.py"))


@pytest.fixture
def reader_session(monkeypatch):
    """A reader's Python: float32 by default (not the suite's float64), smoke mode, no sliders."""
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("VAE_GRADIENTS_STATIC", "1")
    torch.set_default_dtype(torch.float32)
    yield
    plt.close("all")


def test_there_are_tutorials():
    assert len(TUTORIALS) >= 1


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_in_smoke_mode(path, reader_session, capsys):
    started = time.perf_counter()
    runpy.run_path(str(path), run_name="__main__")
    elapsed = time.perf_counter() - started
    assert capsys.readouterr().out.strip(), f"{path.name} prints the numbers it talks about"
    assert elapsed < 30, f"{path.name} took {elapsed:.0f} s in smoke mode; the budget is seconds"


def _controls():
    import importlib
    import pkgutil

    import experiments.explore as explore

    for module in pkgutil.iter_modules(explore.__path__):
        importlib.import_module(f"experiments.explore.{module.name}")
    return explore.CONTROLS


@pytest.mark.parametrize("name", sorted(_controls()))
def test_every_control_draws_at_the_ends_of_its_knobs(name, reader_session):
    control = _controls()[name]
    for knob, values in control.knobs.items():
        for value in {values[0], values[-1]}:
            figure = control.draw(**{**control.start(), knob: value})
            assert figure.axes, f"{name} with {knob}={value} drew no axes"
            plt.close(figure)


def test_a_control_refuses_a_value_its_slider_does_not_offer():
    from experiments.explore import interact

    control = _controls()["maximum-likelihood"]
    with pytest.raises(ValueError, match="n=7 is not one of its values"):
        interact(control, n=7)
    with pytest.raises(ValueError, match="has no knob 'size'"):
        interact(control, size=10)
