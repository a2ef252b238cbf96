"""One colour per estimator, so that every figure of every study reads the same way."""

from __future__ import annotations

import zlib

from estimators import ESTIMATORS

__all__ = ["COLORS", "RC_PARAMS", "color", "rc_context", "mean_and_se", "plot_band",
           "paired_difference", "paired_summary"]

# matplotlib's tab10 for the registry, then five of tab20b for the entries after the tenth, then
# seven more of tab20b and tab20c for the estimators of discrete latents (each registry entry
# keeps its index, so its colour); darker hues, far from those, for any other name.
_REGISTRY_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
                     "#393b79", "#637939", "#843c39", "#b5cf6b", "#d6616b",
                     "#e7ba52", "#6b6ecf", "#ce6dbd", "#8c6d31", "#000000",
                     "#fd8d3c", "#756bb1"]
_EXTRA_PALETTE = ["#000080", "#008080", "#800000", "#4b0082", "#daa520", "#2f4f4f",
                  "#ff1493", "#00ced1", "#a0522d", "#000000"]

COLORS = {name: _REGISTRY_PALETTE[i % len(_REGISTRY_PALETTE)]
          for i, name in enumerate(ESTIMATORS)}

# Shared defaults: legible at the size the figures are shown in the README.
RC_PARAMS = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 8.5,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def rc_context():
    """The shared rcParams for the figures drawn inside ``with rc_context():``, nothing after."""
    import matplotlib

    return matplotlib.rc_context(RC_PARAMS)


def color(name: str) -> str:
    """The colour of an estimator: fixed for registry names, stable for any other name."""
    if name in COLORS:
        return COLORS[name]
    return _EXTRA_PALETTE[zlib.crc32(name.encode()) % len(_EXTRA_PALETTE)]


def mean_and_se(values):
    """The mean over runs (axis 0) and its standard error, ignoring NaN entries (a run that
    diverged); with one run the standard error is 0, so a band shows no spread rather than none."""
    import numpy as np

    values = np.asarray(values, dtype=float)
    counts = np.sum(~np.isnan(values), axis=0)
    mean = np.nanmean(values, axis=0) if values.size else values
    if values.shape[0] < 2:
        return mean, np.zeros_like(mean)
    spread = np.nanstd(values, axis=0, ddof=1)
    return mean, np.where(counts > 1, spread / np.sqrt(np.maximum(counts, 1)), 0.0)


def plot_band(ax, x, runs, *, label=None, alpha=0.18, **line):
    """The mean over runs (the rows of ``runs``) as a line, with a band of +-1 standard error."""
    mean, se = mean_and_se(runs)
    (drawn,) = ax.plot(x, mean, label=label, **line)
    ax.fill_between(x, mean - se, mean + se, color=drawn.get_color(), alpha=alpha, linewidth=0)
    return drawn


def paired_difference(first, second) -> tuple[float, float, bool]:
    """(mean, s.e., beyond) of first - second over runs paired by index (run r of two
    estimators shares its seed: its initialisation and data), ignoring pairs with a NaN;
    ``beyond`` says whether the difference exceeds twice its standard error."""
    import numpy as np

    difference = np.asarray(first, dtype=float) - np.asarray(second, dtype=float)
    difference = difference[~np.isnan(difference)]
    if difference.size < 2:
        return (float(difference.mean()) if difference.size else float("nan")), float("nan"), False
    mean = float(difference.mean())
    se = float(difference.std(ddof=1) / np.sqrt(difference.size))
    return mean, se, abs(mean) > 2 * se


def paired_summary(finals: dict, runs: int, what: str, width: int = 24, digits: int = 2) -> list:
    """Lines saying how far each entry of ``finals`` (name -> one final number per run, run r of
    each entry sharing its seed) trails the best one, run for run: mean ± s.e. of the paired
    differences, starred where they exceed 2 s.e. Empty with one entry or one run."""
    import numpy as np

    if len(finals) < 2 or runs < 2:
        return []
    best = max(finals, key=lambda name: np.nanmean(finals[name]))
    lines = [f"paired differences of {what} to {best} (the best), over {runs} runs: "
             "mean ± s.e.; * beyond 2 s.e."]
    for name, values in sorted(finals.items(), key=lambda item: -np.nanmean(item[1])):
        if name != best:
            mean, se, beyond = paired_difference(values, finals[best])
            lines.append(f"  {name:{width}s} {mean:+.{digits}f} ± {se:.{digits}f}"
                         + (" *" if beyond else ""))
    return lines
