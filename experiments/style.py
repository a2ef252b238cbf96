"""One colour per estimator, so that every figure of every study reads the same way."""

from __future__ import annotations

import zlib

from estimators import ESTIMATORS

__all__ = ["COLORS", "RC_PARAMS", "color", "rc_context"]

# matplotlib's tab10 for the registry, then five of tab20b for the entries after the tenth (each
# registry entry keeps its index, so its colour); darker hues, far from those, for any other name.
_REGISTRY_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
                     "#393b79", "#637939", "#843c39", "#b5cf6b", "#d6616b"]
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
