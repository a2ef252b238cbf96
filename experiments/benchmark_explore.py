"""How live the tutorials' sliders feel: the time of one move of every control.

    python -m experiments.benchmark_explore [--control NAME] [--repeats 3] [--threads 1]

For each control of :mod:`experiments.explore` (the functions behind the tutorials' sliders),
every value of every knob is drawn in turn (the others at their starting values), each drawing
rendered to pixels as a notebook would show it, ``repeats`` times. It prints the median and the
slowest move, and, as the baseline measured in the same run, the time of rendering an empty
figure of the same size: what any redraw costs before the control computes anything. A move
should take at most about half a second on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import statistics
import sys
import time

BUDGET_SECONDS = 0.5


def load_controls() -> dict:
    """Every control of experiments.explore (importing each module registers its controls)."""
    import experiments.explore as explore

    for module in pkgutil.iter_modules(explore.__path__):
        importlib.import_module(f"experiments.explore.{module.name}")
    return explore.CONTROLS


def _time_draw(draw, plt) -> tuple[float, tuple]:
    started = time.perf_counter()
    figure = draw()
    figure.canvas.draw()  # rasterise, as the notebook's display does
    elapsed = time.perf_counter() - started
    size = tuple(figure.get_size_inches())
    plt.close(figure)
    return elapsed, size


def measure(control, repeats: int, plt) -> dict:
    moves, size = [], (6.4, 4.8)
    control.draw(**control.start())  # the first call pays for caches a reader's first view fills
    for knob, values in control.knobs.items():
        for value in values:
            chosen = {**control.start(), knob: value}
            for _ in range(repeats):
                elapsed, size = _time_draw(lambda: control.draw(**chosen), plt)
                moves.append((elapsed, f"{knob}={value}"))
    empty = [_time_draw(lambda: plt.figure(figsize=size), plt)[0] for _ in range(repeats)]
    slowest = max(moves)
    return {"median": statistics.median(m for m, _ in moves), "slowest": slowest[0],
            "slowest_at": slowest[1], "empty": statistics.median(empty), "moves": len(moves)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.benchmark_explore",
                                     description=__doc__.split("\n\n")[1].strip())
    parser.add_argument("--control", action="append", help="a control's name (repeatable; "
                                                             "default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="draws per knob value (3)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    torch.set_num_threads(max(args.threads, 1))
    controls = load_controls()
    unknown = sorted(set(args.control or ()) - set(controls))
    if unknown:
        parser.error(f"unknown control(s) {', '.join(unknown)}; the controls: "
                     f"{', '.join(sorted(controls))}")
    names = args.control or sorted(controls)
    print(f"{'control':28s} {'moves':>5s} {'median':>9s} {'slowest':>9s}  {'empty figure':>12s} "
          f"{'median / empty':>14s}  verdict")
    slow = []
    for name in names:
        row = measure(controls[name], args.repeats, plt)
        verdict = "live" if row["slowest"] <= BUDGET_SECONDS else f"slow at {row['slowest_at']}"
        if row["slowest"] > BUDGET_SECONDS:
            slow.append(name)
        print(f"{name:28s} {row['moves']:5d} {1e3 * row['median']:7.0f}ms {1e3 * row['slowest']:7.0f}ms"
              f"  {1e3 * row['empty']:10.0f}ms {row['median'] / row['empty']:14.1f}  {verdict}")
    print(f"budget: {BUDGET_SECONDS * 1e3:.0f} ms a move; {len(names) - len(slow)} of {len(names)} "
          "controls within it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
