"""Sphinx configuration of the documentation site (``sphinx-build -W -b html docs docs/_build/html``).

Tutorials are jupytext "py:percent" files under ``tutorials/``, executed by myst-nb at build time
(outputs are never committed). Pages with ``{code-cell}`` blocks are MyST notebooks, executed too.
Nothing is fetched at build or view time: MathJax is served from the site itself, no intersphinx
inventories, no widget scripts from a CDN.
"""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent / "_ext"))
# Executed pages draw their interactive controls as static figures in the built site (a slider
# needs a live kernel); the kernels myst-nb starts inherit this environment.
os.environ["VAE_GRADIENTS_STATIC"] = "1"
# Figures drawn in executed pages are shown inline, whatever backend the caller set (CI sets Agg).
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
os.environ.setdefault("EXPERIMENTS_NO_PROGRESS", "1")

project = "vae-gradients"
author = "the vae-gradients authors"
copyright = "2026, the vae-gradients authors"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "offline_math",  # _ext/offline_math.py: MathJax from the site itself, no CDN
    "approximates",  # _ext/approximates.py: Approximates / With / Requires as field lists
    "notebooks",  # _ext/notebooks.py: each tutorial also as an .ipynb to download
]

source_suffix = {".md": "myst-nb", ".py": "myst-nb"}
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
exclude_patterns = ["_build", "_ext", "_generated", "_tools", "conf.py", "**/.ipynb_checkpoints",
                    "**/__pycache__", "changelog/README.md"]

# Every tutorial runs at each build; an error in any cell fails the build.
nb_execution_mode = os.environ.get("DOCS_EXECUTE", "force")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_ipywidgets_js = {}  # no require.js or widget manager from a CDN: the pages work offline
nb_output_stderr = "remove"  # progress bars and warnings belong in a terminal, not on a page
# Cells that return Markdown (the registry and the results tables) render it as MyST, whose
# pipe tables CommonMark, myst-nb's default for outputs, leaves as text.
nb_render_markdown_format = "myst"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # the torch.distributions docstrings are reST of their own
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}

html_theme = "furo"
html_title = "vae-gradients"
html_static_path = []
html_show_sourcelink = False
html_last_updated_fmt = None
