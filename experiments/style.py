"""How every figure draws an estimator: one hue per family, one line style and marker per member.

Twenty estimators do not stay apart in one palette of distinct colours (matplotlib's tab10 gave
``pathwise_analytic_kl`` and ``vimco`` one brown). So each family of :data:`FAMILIES` (the score
functions, the pathwise ones, the estimators of the K-sample bound, ...) has a hue of its own,
and its members differ by shade, line style and marker: a reader tells the family at a glance
and the member from the legend. Every registry entry belongs to exactly one family (a test
checks it, so a new estimator gets its place here); labels built on a registry name (``iwae:5``,
``score_function+nvil``) draw like it, or as the family's next member.
"""

from __future__ import annotations

import colorsys
import zlib

from estimators import ESTIMATORS

__all__ = ["FAMILIES", "COLORS", "RC_PARAMS", "color", "estimator_style", "family_of",
           "legend_handle", "plain_log_ticks", "rc_context", "mean_and_se", "plot_band",
           "paired_difference", "paired_summary"]

# family -> (its hue, as a base colour; its members, in registry order). Hues far apart; the
# exact sum is grey, the colour of the exact references the figures draw in black.
FAMILIES = {
    "score function": ("#1f64b4", ("score_function", "score_function_ema", "score_function_loo",
                                   "score_function_optimal", "score_function_autodiff",
                                   "score_function+nvil")),
    "pathwise": ("#2a9a3a", ("pathwise", "pathwise_analytic_kl", "stl")),
    "K-sample bound": ("#8a3fb0", ("iwae", "dreg", "vimco")),
    "measure-valued": ("#9a8a10", ("measure_valued", "measure_valued_coupled")),
    "relaxation": ("#e8730c", ("gumbel_softmax", "straight_through")),
    "relaxed control variate": ("#d0306a", ("rebar", "relax")),
    "antithetic": ("#139a94", ("arm", "disarm")),
    "exact sum": ("#6e6e6e", ("enumeration",)),
}
# Member i of a family draws with the i-th line style and marker (the first solid with circles).
LINE_STYLES = ["-", "--", ":", "-.", (0, (6, 1.5, 1, 1.5, 1, 1.5)), (0, (3, 1))]
MARKERS = ["o", "s", "^", "D", "v", "P"]


def _shade(base: str, index: int, count: int) -> str:
    """The family's hue at the member's lightness: darkest first, none as pale as to vanish."""
    from matplotlib.colors import to_hex, to_rgb

    hue, lightness, saturation = colorsys.rgb_to_hls(*to_rgb(base))
    if count > 1:  # around the base's own lightness; wider for the larger families
        span = 0.16 if count <= 3 else 0.26
        lightness = min(max(lightness + span * (index / (count - 1) - 0.5), 0.22), 0.62)
    return to_hex(colorsys.hls_to_rgb(hue, lightness, saturation))


_STYLES = {}
for _family, (_base, _members) in FAMILIES.items():
    for _index, _name in enumerate(_members):
        _STYLES[_name] = {"family": _family,
                          "color": _shade(_base, _index, len(_members)),
                          "linestyle": LINE_STYLES[_index % len(LINE_STYLES)],
                          "marker": MARKERS[_index % len(MARKERS)]}

COLORS = {name: _STYLES[name]["color"] for name in ESTIMATORS if name in _STYLES}
_EXTRA_PALETTE = ["#000080", "#008080", "#800000", "#4b0082", "#daa520", "#2f4f4f",
                  "#ff1493", "#00ced1", "#a0522d", "#000000"]

# Shared defaults: legible at the size the figures are shown in the README.
RC_PARAMS = {
    "font.size": 9.5,
    "axes.titlesize": 10,
    "axes.labelsize": 9.5,
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


def _known(name: str) -> str | None:
    """The registry (or family) name a label is built on: ``iwae:5`` -> ``iwae``."""
    if name in _STYLES:
        return name
    base = name.split(":")[0]
    return base if base in _STYLES else None


def family_of(name: str) -> str | None:
    known = _known(name)
    return _STYLES[known]["family"] if known else None


def estimator_style(name: str) -> dict:
    """``color``, ``linestyle`` and ``marker`` of an estimator (or a label built on one); a
    name of no family gets a colour of its own, stable across runs, solid with circles."""
    known = _known(name)
    if known:
        return {key: _STYLES[known][key] for key in ("color", "linestyle", "marker")}
    return {"color": _EXTRA_PALETTE[zlib.crc32(name.encode()) % len(_EXTRA_PALETTE)],
            "linestyle": "-", "marker": "o"}


def color(name: str) -> str:
    """The colour of an estimator: its family's hue at its own shade."""
    return estimator_style(name)["color"]


def legend_handle(name: str, label: str | None = None, **overrides):
    """A legend entry that shows an estimator's line style and marker together."""
    from matplotlib.lines import Line2D

    style = dict(estimator_style(name), markersize=4.5, linewidth=1.4)
    style.update(overrides)
    return Line2D([], [], label=name if label is None else label, **style)


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Label a log axis that spans less than about two decades with plain numbers (0.2, 0.5,
    1, 2, 5) instead of matplotlib's 6×10⁰ minor labels; wider axes keep their powers of ten.
    Call it after everything is drawn: it reads the axis's limits."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    which = ax.yaxis if axis == "y" else ax.xaxis
    low, high = ax.get_ylim() if axis == "y" else ax.get_xlim()
    if which.get_scale() != "log" or not 0 < low < high or math.log10(high / low) > 2.2:
        return
    steps = (1, 2, 3, 5) if math.log10(high / low) < 1.2 else (1, 2, 5)
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(low)) - 1,
                                          math.ceil(math.log10(high)) + 1)
             for m in steps if low <= m * 10.0 ** e <= high]
    if len(ticks) < 2:
        return
    which.set_major_locator(FixedLocator(ticks))
    which.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    which.set_minor_formatter(NullFormatter())


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
