"""The documentation pages' code runs as a reader would run it.

Each page with ``{code-cell}`` blocks is a notebook (myst-nb executes it when the site is built,
so its outputs are never typed in); here each page's cells run in order in one fresh namespace,
in a reader's float32 session, so a broken example fails the suite before it fails the build.
"""

import re
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CELL = re.compile(r"^```\{code-cell\}[^\n]*\n(.*?)^```", re.S | re.M)


def _cells(path: Path) -> list[str]:
    cells = []
    for body in CELL.findall(path.read_text()):
        lines = body.splitlines()
        while lines and re.match(r"^:\w[\w-]*:", lines[0]):  # a cell's options (:tags: ...)
            lines.pop(0)
        cells.append("\n".join(lines) + "\n")
    return cells


PAGES = sorted(p for p in (ROOT / "docs").rglob("*.md")
               if "_build" not in p.parts and _cells(p))


def test_some_pages_have_code():
    assert PAGES


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT / "docs")) for p in PAGES])
def test_page_code_runs_in_order(path, monkeypatch):
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("VAE_GRADIENTS_STATIC", "1")
    torch.set_default_dtype(torch.float32)  # a reader's session, not the suite's float64
    namespace = {"__name__": "__page__"}
    try:
        for index, cell in enumerate(_cells(path)):
            exec(compile(cell, f"{path.name}, cell {index + 1}", "exec"), namespace)
    finally:
        plt.close("all")
