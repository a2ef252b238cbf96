"""The interactive controls of the tutorials: a plain function behind each slider.

Each tutorial that lets the reader move a knob (the scale of q, a cost function's k, a
temperature, the copies of a bit) calls :func:`interact` with a *plain* drawing function
``draw(**values) -> matplotlib Figure`` and the knob's values. In Jupyter with ipywidgets the
reader gets sliders that redraw on every move; anywhere else (a script, the test suite, the
built documentation site) the figure is drawn once at the starting values. The drawing
functions live in the modules of this package, one per tutorial topic, and each module lists
them in ``CONTROLS`` so that ``python -m experiments.benchmark_explore`` can time every move
and the tests can call every one.

A control must feel live: whatever does not depend on the knob is computed once, outside
``draw``; exact curves are vectorised; Monte Carlo points use a size that answers in time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["Control", "interact", "live", "register", "CONTROLS"]


@dataclass(frozen=True)
class Control:
    """One knob of a tutorial: the function it redraws and the values it can take.

    ``draw(**{name: value, ...}) -> Figure``; ``knobs`` maps each knob's name to the values a
    slider offers, in slider order; ``initial`` the value each starts at.
    """

    name: str
    draw: Callable
    knobs: dict = field(default_factory=dict)
    initial: dict = field(default_factory=dict)
    description: str = ""

    def start(self) -> dict:
        return dict(self.initial)


CONTROLS: dict[str, Control] = {}


def register(name: str, draw: Callable, description: str = "", start: dict | None = None,
             **knobs: Sequence) -> Control:
    """Add a control to :data:`CONTROLS`: each knob's values in slider order; ``start`` the
    starting values (default: each knob's first value)."""
    if not knobs:
        raise ValueError(f"control {name!r} needs at least one knob")
    initial = {knob: values[0] for knob, values in knobs.items() if len(values)}
    initial.update(start or {})
    for knob, values in knobs.items():
        if initial.get(knob) not in list(values):
            raise ValueError(f"control {name!r}: knob {knob!r} starts at {initial.get(knob)!r}, "
                             f"which is not one of its values")
    control = Control(name, draw, {k: list(v) for k, v in knobs.items()}, initial, description)
    CONTROLS[name] = control
    return control


def live() -> bool:
    """True in a Jupyter kernel with ipywidgets, outside the documentation build."""
    if os.environ.get("VAE_GRADIENTS_STATIC"):
        return False
    try:
        from IPython import get_ipython
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def interact(control: Control, **start):
    """Sliders for ``control`` in Jupyter; elsewhere its figure at the starting values.

    ``start`` overrides starting values (each must be one of the knob's values).
    """
    values = control.start()
    for name, value in start.items():
        if name not in control.knobs:
            raise ValueError(f"{control.name} has no knob {name!r}; its knobs: "
                             f"{', '.join(control.knobs)}")
        if value not in control.knobs[name]:
            raise ValueError(f"{control.name}: {name}={value!r} is not one of its values "
                             f"{control.knobs[name]}")
        values[name] = value
    if not live():
        figure = control.draw(**values)
        try:
            from IPython import get_ipython
        except ImportError:
            return figure
        if get_ipython() is None:
            return figure  # a script: the figure is the caller's
        from IPython.display import display
        import matplotlib.pyplot as plt

        display(figure)  # a notebook without sliders (the built site): the figure, shown once
        plt.close(figure)
        return None
    import ipywidgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    def redraw(**chosen):  # interactive() shows what this displays, under the sliders
        figure = control.draw(**chosen)
        display(figure)
        plt.close(figure)

    sliders = {name: ipywidgets.SelectionSlider(options=options, value=values[name],
                                                description=name, continuous_update=False)
               for name, options in control.knobs.items()}
    display(ipywidgets.interactive(redraw, **sliders))  # draws once at the starting values
    return None
