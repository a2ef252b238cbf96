"""Render the estimators' "Approximates / With / Requires / References" blocks as field lists.

The docstrings write them as aligned plain text (``Approximates:  the gradient of ...``), readable
in a terminal; autodoc would run each block into one paragraph. Each labelled block becomes a
reST field (``:Approximates: ...``), its continuation lines indented under it, so the rendered
API reference shows the equation an estimator implements beside its name.
"""

import re

# The docstrings are plain text with a little reST (``literals`` and :role:`targets`): the math in
# them (|x|, a * b, z_k, sigma_) must not be read as substitutions, emphasis or link targets.
_PROTECTED = re.compile(r"(``.+?``|:[\w:]+:`[^`]+`|`[^`]+`_?)")


def _escape(text: str) -> str:
    bullet = re.match(r"^(\s*\* )", text)  # a list item's marker stays a marker
    if bullet:
        return bullet.group(1) + _escape(text[bullet.end():])
    parts = _PROTECTED.split(text)
    for i in range(0, len(parts), 2):  # the even parts lie outside any protected span
        part = parts[i].replace("\\", "\\\\").replace("*", "\\*").replace("|", "\\|")
        parts[i] = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", part)
    return "".join(parts)


LABELS = ("Approximates", "With", "Requires", "References", "Returns", "Options", "Raises",
          "Shapes")
_LABEL = re.compile(r"^(\s*)(" + "|".join(LABELS) + r"):\s+(.*)$")


def _fields(app, what, name, obj, options, lines):
    out, inside, indent = [], False, ""
    for line in (_escape(line) for line in lines):
        match = _LABEL.match(line)
        if match:
            if not inside and out and out[-1].strip():
                out.append("")  # a field list starts a block of its own
            indent = match.group(1)
            out.append(f"{indent}:{match.group(2)}: {match.group(3)}")
            inside = True
        elif inside and line.strip() and line.startswith(indent + " "):
            out.append(f"{indent}   {line.strip()}")  # a continuation of the field above
        else:
            if inside and line.strip():
                out.append("")  # text after the fields: end the list first
            inside = False
            out.append(line)
    lines[:] = out


def setup(app):
    app.connect("autodoc-process-docstring", _fields)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
