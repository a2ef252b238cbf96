"""One colour per estimator, so that every figure of every study reads the same way."""

from __future__ import annotations

import zlib

from estimators import ESTIMATORS

__all__ = ["COLORS", "color"]

# matplotlib's tab10 for the registry; darker hues, far from those, for any other name.
_REGISTRY_PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                     "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
_EXTRA_PALETTE = ["#000080", "#008080", "#800000", "#4b0082", "#daa520", "#2f4f4f",
                  "#ff1493", "#00ced1", "#a0522d", "#000000"]

COLORS = {name: _REGISTRY_PALETTE[i % len(_REGISTRY_PALETTE)]
          for i, name in enumerate(ESTIMATORS)}


def color(name: str) -> str:
    """The colour of an estimator: fixed for registry names, stable for any other name."""
    if name in COLORS:
        return COLORS[name]
    return _EXTRA_PALETTE[zlib.crc32(name.encode()) % len(_EXTRA_PALETTE)]
