"""The committed figures are in step with the code that draws them, and read at a glance.

Every figure file carries a digest of what it shows (:func:`experiments.common.drawn_data_digest`,
taken from the figure's artists when it is drawn). Re-running each study's plot function on its
committed results without rasterising anything gives the digests the figures would have now: a
plot function changed without a redraw (``python -m experiments figures``) fails here.
"""

import subprocess
from pathlib import Path

import numpy as np
import pytest

from estimators import ESTIMATORS
from experiments import available_studies, common, style

ROOT = Path(__file__).resolve().parents[1]
MAX_WIDTH = 1600  # pixels: wider figures are shrunk past reading on a laptop screen


def _committed(folder: str, pattern: str) -> list[Path]:
    """The files git tracks (a checkout may also hold a user's own quick runs); every file where
    there is no git."""
    if (ROOT / ".git").exists():
        listed = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.split()
        return sorted(ROOT / name for name in listed if Path(name).match(pattern))
    return sorted((ROOT / folder).glob(pattern))


def _redrawn() -> dict:
    """figure name -> (digest of what the code draws now, study): every study's plot function on
    each committed results file the figures command reads, nothing rasterised or written."""
    import gc

    studies = available_studies()
    results = set(_committed("results", "*.json"))
    found = {}
    # The cyclic collector, walking the whole test session's objects again and again while
    # matplotlib makes thousands of small ones, took 40% of this redraw's time.
    gc.disable()
    try:
        with common.drawn_data_only() as digests:
            for name, module in studies.items():
                for path in (ROOT / "results" / f"{name}.json",
                             ROOT / "results" / f"{name}-quick.json"):
                    if path in results:
                        before = set(digests)
                        module.plot(common.load_results(path, name), path, common.Paths(ROOT))
                        found.update({figure: (digests[figure], path.name)
                                      for figure in set(digests) - before})
    finally:
        gc.enable()
        gc.collect()
    return found


def test_every_committed_figure_shows_what_its_plot_code_draws_from_its_results():
    drawn = _redrawn()
    committed = {path.stem: path for path in _committed("figures", "*.png")}
    assert drawn, "no committed results were drawn"
    assert set(drawn) == set(committed), (
        f"figures without results or code: {sorted(set(committed) - set(drawn))}; "
        f"drawn but not committed: {sorted(set(drawn) - set(committed))}")
    stale = []
    for name, (digest, source) in sorted(drawn.items()):
        for suffix in ("png", "pdf"):
            path = ROOT / "figures" / f"{name}.{suffix}"
            if not path.exists() or common.figure_digest(path) != digest:
                stale.append(f"{path.name} (from {source})")
    assert not stale, ("figures out of step with the code that draws them; redraw them with "
                       f"`python -m experiments figures` and commit them: {', '.join(stale)}")


def test_committed_figures_are_at_most_1600_pixels_wide():
    from PIL import Image

    wide = []
    for path in _committed("figures", "*.png"):
        with Image.open(path) as image:
            if image.size[0] > MAX_WIDTH:
                wide.append(f"{path.name} ({image.size[0]} px)")
    assert not wide, f"figures wider than {MAX_WIDTH} px: {wide}"


# ------------------------------------------------------------------------------------------------
# The digest: the same drawing gives the same digest, any change to what is shown another one
# ------------------------------------------------------------------------------------------------


def _drawing(**change):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = {"y": [1.0, 2.0, 4.0], "color": "C0", "label": "pathwise", "loc": "upper left",
                "title": "(a) variance", "ticks": None, "figsize": (4, 3), "scale": "log",
                "band": 0.1, "linestyle": "-"}
    settings.update(change)
    fig, ax = plt.subplots(figsize=settings["figsize"], layout="constrained")
    ax.plot([1, 2, 3], settings["y"], color=settings["color"], label=settings["label"],
            linestyle=settings["linestyle"])
    ax.fill_between([1, 2, 3], np.asarray(settings["y"]) - settings["band"],
                    np.asarray(settings["y"]) + settings["band"], alpha=0.2)
    ax.set_yscale(settings["scale"])
    ax.set_title(settings["title"])
    ax.legend(loc=settings["loc"])
    if settings["ticks"] is not None:
        ax.set_yticks(settings["ticks"], [f"{t:g}" for t in settings["ticks"]])
    digest = common.drawn_data_digest(fig)
    plt.close(fig)
    return digest


@pytest.mark.parametrize("change", [
    {"y": [1.0, 2.0, 4.5]}, {"color": "C1"}, {"label": "stl"}, {"loc": "lower right"},
    {"title": "(a) variances"}, {"ticks": [1, 2, 4]}, {"figsize": (4, 3.2)},
    {"scale": "linear"}, {"band": 0.2}, {"linestyle": "--"},
], ids=lambda change: next(iter(change)))
def test_the_digest_changes_with_anything_the_figure_shows(change):
    assert _drawing() == _drawing()  # the same drawing, the same digest
    assert _drawing(**change) != _drawing()


def test_a_figure_file_holds_its_digest_and_drawing_only_writes_nothing(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = common.Paths(tmp_path)
    with common.drawn_data_only() as digests:
        common.save_figure(plt.figure(), paths, "f", tmp_path / "results" / "r.json", "s.py")
    assert list(digests) == ["f"] and not list(tmp_path.iterdir())
    written = common.save_figure(plt.figure(), paths, "f", tmp_path / "results" / "r.json",
                                 "s.py")
    assert [common.figure_digest(path) for path in written] == [digests["f"]] * 2


# ------------------------------------------------------------------------------------------------
# The palette: a hue per family, a style per member
# ------------------------------------------------------------------------------------------------


def test_every_registry_estimator_belongs_to_one_family():
    members = [name for _, names in style.FAMILIES.values() for name in names]
    assert len(members) == len(set(members))
    assert set(ESTIMATORS) <= set(members), set(ESTIMATORS) - set(members)


def test_estimators_stay_apart_a_family_shares_its_hue():
    import colorsys

    from matplotlib.colors import to_rgb

    drawn = {name: style.estimator_style(name) for name in ESTIMATORS}
    looks = {(s["color"], str(s["linestyle"]), s["marker"]) for s in drawn.values()}
    assert len(looks) == len(drawn)  # twenty estimators, twenty looks
    for family, (_, names) in style.FAMILIES.items():
        hues = [colorsys.rgb_to_hls(*to_rgb(style.color(name)))[0] for name in names]
        assert np.ptp(hues) < 0.02, family  # one hue, several shades
        within = {(str(style.estimator_style(n)["linestyle"]), style.estimator_style(n)["marker"])
                  for n in names}
        assert len(within) == len(names), family  # members apart by line style and marker
    bases = sorted(colorsys.rgb_to_hls(*to_rgb(base))[0] for base, _ in style.FAMILIES.values()
                   if colorsys.rgb_to_hls(*to_rgb(base))[2] > 0.2)  # the grey has no hue
    gaps = np.diff(bases + [bases[0] + 1])
    assert gaps.min() > 0.04  # families' hues far apart on the colour wheel
    # labels built on a registry name draw like it; the NVIL variant as its family's own member
    assert style.estimator_style("iwae:5") == style.estimator_style("iwae")
    assert style.family_of("score_function+nvil") == "score function"


def test_plain_log_ticks_label_a_short_log_axis_in_plain_numbers():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (short, wide) = plt.subplots(1, 2)
    short.plot([1, 2], [0.17, 6.1])
    wide.plot([1, 2], [1e-3, 1e4])
    for ax in (short, wide):
        ax.set_yscale("log")
        style.plain_log_ticks(ax)
    labels = [short.yaxis.get_major_formatter()(t, 0) for t in short.get_yticks()]
    assert labels == ["0.2", "0.5", "1", "2", "5"]
    assert type(wide.yaxis.get_major_formatter()).__name__ == "LogFormatterSciNotation"
    plt.close(fig)
