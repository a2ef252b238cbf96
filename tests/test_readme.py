"""The README stays a true front page: its two commands, its links, its example and what it prints."""

import contextlib
import io
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_first_lines_give_the_two_fresh_machine_commands():
    head = README[: README.index("## ")]
    assert "python -m experiments all --quick" in head
    assert 'pip install -e ".[test]" && python -m pytest' in head
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m pytest -q" in ci


def test_it_is_a_front_page_not_a_manual():
    assert len(README.splitlines()) <= 250


def test_every_linked_file_exists():
    links = re.findall(r"\]\(((?!https?:|#)[^)\s]+)\)", README)
    assert links, "the README links into the documentation"
    missing = [link for link in links if not (ROOT / link.split("#")[0]).exists()]
    assert not missing, f"README links to missing files: {missing}"


def _examples():
    """Each ```python block with the ```text block that follows it (what it prints), if any."""
    return re.findall(r"```python\n(.*?)```(?:\s*\n[^`]*?```text\n(.*?)```)?", README, flags=re.S)


def test_each_example_runs_alone_and_prints_what_the_readme_shows():
    examples = _examples()
    assert examples, "the README has an example"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # a user's session, whatever the suite's default
    try:
        for code, shown in examples:
            _check(code, shown)
    finally:
        torch.set_default_dtype(previous)


def _check(code, shown):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {"__name__": "__readme__"})
    assert out.getvalue().strip(), "the example prints what the README says it shows"
    if shown:
        assert out.getvalue().strip() == shown.strip(), (
            "the README shows other output than its example prints:\n" + out.getvalue())
