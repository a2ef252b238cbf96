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


def test_python_examples_run_as_written(capsys):
    """Every ```python block of the README, in order, in one namespace, as a user would run them."""
    import torch

    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README has no python example"
    torch.set_default_dtype(torch.float32)  # a user's session, not the suite's float64
    namespace: dict = {"__name__": "__readme__"}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    assert capsys.readouterr().out.strip(), "the examples print what they show"
