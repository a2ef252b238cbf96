"""MathJax served by the site itself, so that equations render with no network.

Sphinx's math extension loads MathJax from a CDN by default; the built pages must work offline.
The MathJax 3 files come from the ``sphinx-mathjax-offline`` distribution on PyPI (its import
name is not a valid module name, so it is located through its installed files, not imported).
Only what the CommonHTML output of TeX input needs is copied: the combined component, its fonts,
the TeX extensions it may autoload, and the menu's pieces.
"""

from importlib import metadata
from pathlib import Path

from sphinx.util.fileutil import copy_asset

NEEDED = ("tex-chtml.js", "output/chtml/fonts", "input/tex/extensions", "a11y", "ui")


def _mathjax_source() -> Path:
    try:
        distribution = metadata.distribution("sphinx-mathjax-offline")
    except metadata.PackageNotFoundError:
        raise RuntimeError("the docs need sphinx-mathjax-offline: pip install -e '.[docs]'") from None
    return Path(distribution.locate_file("sphinx-mathjax-offline/static/mathjax"))


def _copy(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    source, target = _mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    for part in NEEDED:
        if (source / part).is_dir():
            copy_asset(str(source / part), str(target / part))
        else:
            target.mkdir(parents=True, exist_ok=True)
            copy_asset(str(source / part), str(target))


def setup(app):
    _mathjax_source()  # fail at once, not after the build, if the files are missing
    app.config.mathjax_path = "mathjax/tex-chtml.js"
    app.connect("build-finished", _copy)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
