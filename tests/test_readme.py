"""The README stays true: its estimator table is the registry's, its figures exist."""

import re
from pathlib import Path

from estimators.__main__ import table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_estimator_table_is_the_registry():
    block = README.split("<!-- estimators-table -->")[1].split("<!-- /estimators-table -->")[0]
    assert block.strip() == table().strip(), "regenerate the table with `python -m estimators`"


def test_first_lines_give_the_two_fresh_machine_commands():
    head = README[: README.index("## ")]
    assert "python -m experiments all --quick" in head
    assert 'pip install -e ".[test]" && python -m pytest' in head
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pytest -q" in ci


def test_every_linked_figure_and_result_exists():
    links = re.findall(r"\]\(((?:figures|results|data)/[^)\s]+)\)", README)
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
