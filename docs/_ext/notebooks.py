"""Each tutorial (a jupytext py:percent file) also as a Jupyter notebook the reader can download.

At ``builder-inited`` every ``tutorials/*.py`` is written as ``_generated/notebooks/NAME.ipynb``
(no outputs: the reader's Jupyter or Colab runs it); the pages link to it with the ``download``
role, which copies the file into the built site, so the link works offline.
"""

from pathlib import Path


def _write_notebooks(app):
    import jupytext

    source = Path(app.srcdir) / "tutorials"
    target = Path(app.srcdir) / "_generated" / "notebooks"
    target.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("[0-9]*.py")):
        notebook = jupytext.read(path, fmt="py:percent")
        out = target / f"{path.stem}.ipynb"
        text = jupytext.writes(notebook, fmt="ipynb")
        if not out.exists() or out.read_text() != text:  # unchanged files keep their mtime
            out.write_text(text)


def setup(app):
    app.connect("builder-inited", _write_notebooks)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
