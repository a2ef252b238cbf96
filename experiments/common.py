"""What every study shares: configs, progress bars, and results saved with what produced them.

A study module defines ``NAME``, ``SUMMARY``, a frozen ``Config`` dataclass (a subclass of
:class:`StudyConfig`, each field commented) with a ``quick()`` preset, ``run(config, paths) ->
results path`` and ``plot(results, paths) -> figure paths``. ``run`` writes raw numbers and
metadata atomically; ``plot`` reads only what ``run`` saved, so figures can be redrawn anywhere.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["StudyConfig", "Paths", "progress", "save_results", "load_results", "save_figure",
           "metadata", "atomic_write", "resolve_device", "Timer", "drawn_data_digest",
           "drawn_data_only", "figure_digest"]


@dataclass(frozen=True)
class StudyConfig:
    seed: int = 0  # seeds torch and numpy at the start of the run
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    quick: bool = False  # the small scale: every study runs in a few minutes on a 2-core CPU
    threads: int = 1  # torch CPU threads (0: torch's default, one per core); see torch_threads

    # The device types the study computes on: a study whose integrals and small networks gain
    # nothing from a GPU says ("cpu",), and --device refuses the rest before any work.
    DEVICES: ClassVar[tuple] = ("cpu", "cuda")

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Paths:
    """Where a run writes: ``results/`` for raw numbers, ``figures/`` for the plots.

    ``figures_root``, when given, holds ``figures/`` instead of ``root``: the figures command
    reads the results under one folder and draws into another.
    """

    root: Path = ROOT
    figures_root: Path | None = None

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def figures(self) -> Path:
        return (self.root if self.figures_root is None else self.figures_root) / "figures"

    def results_file(self, study: str) -> Path:
        return self.results / f"{study}.json"


def resolve_device(name: str, supported: tuple = ("cpu", "cuda"), study: str = "the study"):
    """The torch device ``name`` names ("cpu", "cuda", "cuda:N", or "auto": cuda where torch
    sees one and ``supported`` holds it, else cpu); SystemExit with one line for a name torch
    does not know, a device type outside ``supported`` (meta, mps, ...), or a CUDA device torch
    cannot see."""
    import torch

    if name == "auto":
        return torch.device("cuda" if "cuda" in supported and torch.cuda.is_available()
                            else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SystemExit(f"error: --device {name}: not a device torch knows; "
                         "use cpu, cuda, cuda:N or auto") from None
    if device.type not in supported:  # meta and mps among them: no study computes there
        if supported == ("cpu",):
            raise SystemExit(f"error: --device {name}: {study} computes on the CPU only; use "
                             "--device cpu or auto")
        raise SystemExit(f"error: --device {name}: {study} computes on cpu or cuda devices "
                         "only; use --device cpu, cuda, cuda:N or auto")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"error: --device {name} asked for CUDA, but torch sees no CUDA "
                             "device; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise SystemExit(f"error: --device {name}: torch sees {count} CUDA device(s), "
                             f"cuda:0 to cuda:{count - 1}")
    return device


def study_device(config: StudyConfig, study: str):
    """The device a study computes on, from ``config.device`` and the types its Config supports
    (see :func:`resolve_device`)."""
    return resolve_device(config.device, type(config).DEVICES, study)


def max_threads() -> int:
    """The most torch threads a command accepts: four per CPU core this process may use (more
    only make threads wait for each other; tens of thousands crash torch's thread pool)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 4 * max(cores, 1)


def check_threads(threads, flag: str = "--threads") -> None:
    """ValueError with one line unless ``threads`` is an integer in 0 .. :func:`max_threads`."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not (
            0 <= threads <= max_threads()):
        raise ValueError(f"{flag} must be >= 0 (0: torch's default) and at most "
                         f"{max_threads()} (four per CPU core), got {threads}")


def check_output_file(path: Path, flag: str = "--out") -> None:
    """ValueError with one line unless ``path`` can receive a results file: not a folder, and
    its folder creatable and writable. For commands that save only after minutes of work."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file, e.g. {path / 'numbers.json'}")
    existing = next(parent for parent in path.parents if parent.exists())
    if not existing.is_dir():
        raise ValueError(f"{flag} {path} lies under {existing}, which is a file, not a folder; "
                         f"choose another {flag}")
    try:
        check_writable(path.parent, f"the folder of {flag}")
    except ValueError as error:
        raise ValueError(f"{error}; choose another {flag}") from None


def progress(iterable: Iterable | None = None, **kwargs):
    """A tqdm progress bar on stderr, silenced when EXPERIMENTS_NO_PROGRESS is set."""
    from tqdm.auto import tqdm

    kwargs.setdefault("disable", bool(os.environ.get("EXPERIMENTS_NO_PROGRESS")))
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


@contextmanager
def torch_threads(threads: int | None):
    """Run torch on ``threads`` CPU threads inside the block (0 or None: leave them), then
    restore the previous count.

    The studies' networks and integrands are small: a thread pool costs more than it saves on
    them, and on a shared CPU, where its threads wait for each other, ten times more (the MNIST
    trainer's example: 0.6 s on an idle 2-core machine, 40 s beside one other busy process with
    torch's default of two threads). So every command defaults to one thread.
    """
    import torch

    if threads is not None:
        check_threads(threads)
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def _git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (commit or "unknown") + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count())  # the cores this process may use, as --threads counts them
    return f"{platform.processor() or platform.machine() or 'cpu'} CPU, {cores} cores"


def metadata(config: StudyConfig, study: str, wall_seconds: float, module: str = "experiments",
             argv: list[str] | None = None) -> dict:
    """Everything needed to say what produced a result: ``python -m module argv`` among it
    (``argv`` defaults to the process's own arguments)."""
    import matplotlib
    import scipy
    import torch

    return {
        "study": study,
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "command": " ".join([Path(sys.executable).name, "-m", module,
                             *map(machine_free, sys.argv[1:] if argv is None else argv)]),
        "git_commit": _git_commit(),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "matplotlib": matplotlib.__version__,
        },
        "device": config.device,
        "device_name": _device_name(config.device),
        "cpu_count": os.cpu_count(),
        "wall_seconds": round(wall_seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def machine_free(text: str) -> str:
    """A command-line word without this machine's folders: an absolute path inside the working
    folder becomes relative to it, any other keeps only its last part (``.../name``); so does
    the value of a ``FIELD=/path`` word (``--set state=/path``)."""
    text = str(text)
    key, equals, value = text.partition("=")
    if equals and not os.path.isabs(text) and os.path.isabs(value):
        return f"{key}={machine_free(value)}"
    if not os.path.isabs(text):
        return text
    path = Path(text)
    try:
        return str(path.relative_to(Path.cwd())) or "."
    except ValueError:
        return f".../{path.name}"


def _jsonable(value: Any):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "detach"):  # torch tensors
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def check_writable(folder: Path, what: str, create: bool = True) -> None:
    """Create ``folder`` if needed and refuse, with ValueError, one that cannot be written
    (before any work, so that nothing computed is lost for want of a place to save it).

    With ``create=False`` nothing is made: the folder, or the nearest folder above it that
    exists, must be writable (the first file saved makes the rest), so that a command that ends
    up writing nothing leaves no empty folders behind.
    """
    folder = Path(folder)
    if not create:
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise ValueError(f"cannot create {what} {folder} ({existing} is not a folder)")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(f"{what} {folder} is not writable (permission denied)")
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"cannot create {what} {folder} ({error.strerror or error})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {folder} is not writable (permission denied)")


def atomic_write(path: Path, write) -> Path:
    """Write through a temporary file in the same folder, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600; saved results are for everyone
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save_results(path: Path, data: dict, meta: dict) -> Path:
    """Save raw numbers with their metadata as one JSON file, atomically."""
    def write(temporary):
        with open(temporary, "w") as handle:
            # metadata readable at a glance; the raw numbers compact
            handle.write('{"metadata": ' + json.dumps(_jsonable(meta), indent=1) + ',\n "data": ')
            json.dump(_jsonable(data), handle, separators=(",", ":"), allow_nan=True)
            handle.write("}\n")

    return atomic_write(path, write)


class _HugeInteger(ValueError):
    pass


def _bounded_int(text: str) -> int:
    # Python reads any JSON integer exactly; numpy then overflows on one beyond int64, far from
    # where it was read. No study writes one, so such a file is refused as it is read.
    if len(text.lstrip("-")) > 19:
        raise _HugeInteger(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


def _writer_of(metadata: dict) -> str | None:
    """The command that writes results like these: the module its metadata's command ran, if it
    exists."""
    from . import STUDIES

    study = metadata.get("study")
    if study in STUDIES:
        return f"python -m {STUDIES[study]}"
    match = re.search(r"-m (experiments(?:\.\w+)+)", str(metadata.get("command", "")))
    if match:
        import importlib.util

        try:
            if importlib.util.find_spec(match.group(1)) is not None:
                return f"python -m {match.group(1)}"
        except (ImportError, ValueError):
            pass
    return None


def load_results(path: Path, study: str | None = None) -> dict:
    """A results file as saved by :func:`save_results`; with ``study``, one that study made.

    Anything else (a missing file, a folder, a file that is not JSON or not a results file, the
    results of another study, numbers no study writes) stops with a one-line message that says
    what it is.
    """
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"error: no saved results at {path}; run the study first")
    if path.is_dir():
        raise SystemExit(f"error: {path} is a folder, not a results file; give a "
                         "results/STUDY.json file")
    try:
        with open(path, encoding="utf-8") as handle:
            results = json.load(handle, parse_int=_bounded_int)
    except PermissionError:
        raise SystemExit(f"error: cannot read {path}: permission denied") from None
    except UnicodeDecodeError:
        raise SystemExit(f"error: {path} is not a results file (not text: an image or other "
                         "binary file?); give a results/STUDY.json file") from None
    except json.JSONDecodeError as error:
        raise SystemExit(f"error: {path} is not valid JSON ({error}); re-run the study") from None
    except _HugeInteger as error:
        raise SystemExit(f"error: {path} holds {error}, a number no study writes; it is damaged:"
                         " re-run the study") from None
    if (not isinstance(results, dict) or not isinstance(results.get("metadata"), dict)
            or "data" not in results):
        raise SystemExit(f"error: {path} is JSON but not a results file (no metadata and data); "
                         "give a results/STUDY.json file that a study wrote")
    made_by = results["metadata"].get("study")
    if not isinstance(made_by, str) or not made_by:
        raise SystemExit(f"error: {path} does not say which study wrote it (its metadata's "
                         f"study is {json.dumps(made_by)}); give a results/STUDY.json file that a study "
                         "wrote")
    if study is not None and made_by != study:
        from . import STUDIES

        writer = _writer_of(results["metadata"])
        raise SystemExit(f"error: {path} holds the results of {made_by!r}, not of {study!r}; "
                         + (f"use {writer} for it" if made_by in STUDIES else
                            f"{writer} wrote it" if writer else f"give a results file of {study}"))
    return results


def check_parts_kept(path: Path, config) -> None:
    """Refuse, before any work, a run of some of a study's parts that would replace a results
    file holding more of them (a toy-only run of the discrete study replaced its half hour of
    sigmoid belief networks)."""
    wanted = getattr(config, "parts", None)
    if wanted is None or not Path(path).is_file():
        return
    try:
        with open(path, encoding="utf-8") as handle:
            saved = json.load(handle).get("metadata", {}).get("config", {}).get("parts")
    except (OSError, ValueError, AttributeError):
        return  # not a results file: nothing of it to keep
    if not isinstance(saved, list):
        return
    dropped = [part for part in saved if part not in wanted]
    if dropped:
        everything = ",".join([*wanted, *dropped])
        raise SystemExit(f"error: {path} holds parts {', '.join(map(str, saved))}; this run of "
                         f"{', '.join(wanted)} would replace it without "
                         f"{', '.join(map(str, dropped))}: run parts={everything}, or write "
                         "elsewhere with --out DIR")


class ResultsMismatch(Exception):
    """Raised inside :func:`reading`: a results file whose data the study's code cannot read."""


@contextmanager
def reading(results: dict, path: Path):
    """Turn what a plot or a summary raises on a results file it cannot read (a missing key, a
    wrong type, a number out of range: valid JSON that is not what this version of the study
    writes) into :class:`ResultsMismatch` with one line that names the file and what to do."""
    try:
        yield
    except (KeyError, TypeError, OverflowError) as error:  # what a missing or odd entry raises
        what = (f"no entry {error.args[0]!r}" if isinstance(error, KeyError) and error.args
                else f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        commit = str(results.get("metadata", {}).get("git_commit", "")).split("+")[0]
        hint = (f", or use the code of commit {commit[:10]}, which wrote it"
                if re.fullmatch(r"[0-9a-f]{7,40}", commit) else "")
        raise ResultsMismatch(f"{path} is not what this version of "
                              f"{results['metadata'].get('study')} writes ({what}); re-run the "
                              f"study{hint}") from error


_FIGURE_LISTENERS: list = []
_DIGEST_COLLECTORS: list = []


@contextmanager
def announce_figures(report):
    """Call ``report(path)`` inside the block as each figure file is written (progress while a
    study draws: its figures take seconds)."""
    _FIGURE_LISTENERS.append(report)
    try:
        yield
    finally:
        _FIGURE_LISTENERS.remove(report)


@contextmanager
def drawn_data_only():
    """Inside the block :func:`save_figure` writes nothing: it records each figure's
    :func:`drawn_data_digest` in the dict this yields (figure name -> digest) and closes it.

    Building a figure's artists takes a fraction of the time of rasterising it, so the digests of
    every figure can be checked against the committed images quickly.
    """
    found: dict = {}
    _DIGEST_COLLECTORS.append(found)
    try:
        yield found
    finally:
        _DIGEST_COLLECTORS.remove(found)


DIGEST_KEY = "Drawn-data"  # the PNG text entry, and the PDF keyword's prefix, of the digest


class _Digest:
    """SHA-256 over a canonical form of values: text as UTF-8, numbers rounded to float32 (so
    that a last-bit difference between machines does not count as another figure)."""

    def __init__(self):
        import hashlib

        self.hash = hashlib.sha256()

    def text(self, *values) -> None:
        for value in values:
            self.hash.update(repr(value).encode("utf-8") + b"\x00")

    def numbers(self, values) -> None:
        array = np.ma.filled(np.ma.asarray(values, dtype=np.float64), np.nan)
        with np.errstate(over="ignore"):  # beyond float32's range: inf, which is what is drawn
            array = np.ascontiguousarray(array, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0
        array[np.isnan(array)] = np.nan  # one bit pattern for every NaN
        self.text(array.shape)
        self.hash.update(array.tobytes())


def _rgba(colour):
    from matplotlib.colors import to_rgba_array

    try:
        return to_rgba_array(colour)
    except (ValueError, TypeError):
        return np.zeros((0, 4))


def _text_state(digest: _Digest, text) -> None:
    if text is None:
        digest.text(None)
        return
    digest.text(text.get_text(), text.get_fontsize(), text.get_ha(), text.get_va(),
                text.get_rotation(), text.get_visible())
    digest.numbers(text.get_position())
    digest.numbers(_rgba(text.get_color()))
    if hasattr(text, "xyann"):  # an annotation: where it points, and from where
        digest.numbers(text.xy)
        digest.numbers(text.xyann)


def _legend_state(digest: _Digest, legend) -> None:
    if legend is None:
        digest.text(None)
        return
    anchor = legend._bbox_to_anchor
    digest.text("legend", legend._loc, getattr(legend, "_outside_loc", None),
                getattr(legend, "_ncols", None), legend.prop.get_size(), legend.get_frame_on(),
                None if anchor is None else tuple(np.round(anchor.bounds, 6)))
    _text_state(digest, legend.get_title())
    for text in legend.get_texts():
        _text_state(digest, text)
    handles = getattr(legend, "legend_handles", None)
    for handle in legend.legendHandles if handles is None else handles:
        if handle is not None:
            _artist_state(digest, handle, with_data=False)


def _artist_state(digest: _Digest, artist, with_data: bool = True) -> None:
    from matplotlib.collections import Collection
    from matplotlib.image import AxesImage
    from matplotlib.legend import Legend
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.text import Text

    digest.text(type(artist).__name__, artist.get_visible(), artist.get_label(),
                artist.get_alpha(), artist.get_zorder())
    if isinstance(artist, Line2D):
        digest.text(artist.get_linestyle(), artist.get_linewidth(), artist.get_marker(),
                    artist.get_markersize(), artist.get_drawstyle())
        for colour in (artist.get_color(), artist.get_markerfacecolor(),
                       artist.get_markeredgecolor()):
            digest.numbers(_rgba(colour))
        if with_data:
            digest.numbers(artist.get_xydata())
    elif isinstance(artist, Collection):
        digest.numbers(_rgba(artist.get_facecolor()))
        digest.numbers(_rgba(artist.get_edgecolor()))
        digest.numbers(np.ravel(artist.get_linewidth()))
        digest.text(str(artist.get_linestyle()))
        if artist.get_array() is not None:  # a colour-mapped collection: values, map, limits
            digest.text(artist.get_cmap().name, artist.get_clim())
            digest.numbers(artist.get_array())
        if hasattr(artist, "levels"):
            digest.numbers(artist.levels)
        if with_data:
            digest.numbers(artist.get_offsets())
            for path in artist.get_paths():
                digest.numbers(path.vertices)
    elif isinstance(artist, AxesImage):
        digest.text(artist.get_cmap().name, artist.get_clim(), artist.get_interpolation())
        digest.numbers(artist.get_extent())
        digest.numbers(artist.get_array())
    elif isinstance(artist, Rectangle):
        digest.numbers(artist.get_bbox().bounds)
        digest.numbers(_rgba(artist.get_facecolor()))
        digest.numbers(_rgba(artist.get_edgecolor()))
        digest.text(artist.get_hatch(), artist.get_linestyle())
    elif isinstance(artist, Patch):
        digest.numbers(artist.get_path().vertices)
        digest.numbers(_rgba(artist.get_facecolor()))
        digest.numbers(_rgba(artist.get_edgecolor()))
    elif isinstance(artist, Legend):
        _legend_state(digest, artist)
    elif isinstance(artist, Text):
        _text_state(digest, artist)


def _axis_state(digest: _Digest, axis) -> None:
    from matplotlib.ticker import FixedFormatter, FixedLocator

    digest.text(axis.get_scale())
    for locator, formatter in ((axis.get_major_locator(), axis.get_major_formatter()),
                               (axis.get_minor_locator(), axis.get_minor_formatter())):
        digest.text(type(locator).__name__, type(formatter).__name__)
        if isinstance(locator, FixedLocator):
            digest.numbers(locator.locs)
        if isinstance(formatter, FixedFormatter):
            digest.text(list(formatter.seq))
    digest.text(sorted((k, repr(v)) for k, v in getattr(axis, "_major_tick_kw", {}).items()))
    _text_state(digest, axis.label)


def drawn_data_digest(fig) -> str:
    """A digest of what ``fig`` shows, taken from its artists without rasterising it.

    It covers the figure's size, layout and texts, and for every axes its place in the grid, its
    titles, labels, scales, limits set by hand, fixed ticks and tick labels, legends, and the data,
    colours and styles of its lines, collections, patches, images and texts. Limits and ticks that
    matplotlib chooses itself are left out: they follow from the data, and are the part most
    likely to move between matplotlib versions.
    """
    from matplotlib.axis import Axis
    from matplotlib.spines import Spine

    digest = _Digest()
    digest.numbers(fig.get_size_inches())
    engine = fig.get_layout_engine()
    digest.text(type(engine).__name__,
                sorted((k, repr(v)) for k, v in (engine.get() if engine else {}).items()))
    _text_state(digest, getattr(fig, "_suptitle", None))
    for text in fig.texts:
        _text_state(digest, text)
    for legend in fig.legends:
        _legend_state(digest, legend)
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if spec is not None:
            grid = spec.get_gridspec()
            digest.text([int(v) for v in spec.get_geometry()], list(grid.get_width_ratios()),
                        list(grid.get_height_ratios()))
        digest.text(ax.get_visible(), ax.axison, ax.get_aspect(), ax.get_label())
        for where in ("left", "center", "right"):
            _text_state(digest, ax._left_title if where == "left" else
                        ax.title if where == "center" else ax._right_title)
        for axis, by_hand, limits in ((ax.xaxis, not ax.get_autoscalex_on(), ax.get_xlim),
                                      (ax.yaxis, not ax.get_autoscaley_on(), ax.get_ylim)):
            _axis_state(digest, axis)
            if by_hand:
                digest.numbers(limits())
        for artist in ax.get_children():
            if artist is ax.patch or isinstance(artist, (Spine, Axis)) or artist in (
                    ax.title, ax._left_title, ax._right_title):
                continue
            _artist_state(digest, artist)
    return digest.hash.hexdigest()


def save_figure(fig, paths: Paths, name: str, results_path: Path, script: str) -> list[Path]:
    """Save ``fig`` as PNG and PDF under figures/, with a footnote naming what produced it and,
    inside each file, the :func:`drawn_data_digest` of what it shows.

    Figures drawn from quick-scale results get a ``-quick`` suffix, so a quick run never
    overwrites the figures of a full one.
    """
    if Path(results_path).stem.endswith("-quick"):
        name += "-quick"
    try:
        source = Path(results_path).resolve().relative_to(paths.root.resolve())
    except ValueError:
        source = Path(results_path).name
    # Above everything the figure holds (bbox_inches="tight" makes room for it), so that it never
    # sits on a label or a legend. Not below: a legend placed "outside lower" by the constrained
    # layout moves down onto it when the tight bounding box is applied.
    fig.text(0.995, 1.0, f"{script} -> {source.as_posix()}", ha="right", va="bottom", fontsize=6,
             color="0.5")
    import matplotlib.pyplot as plt

    digest = drawn_data_digest(fig)
    targets = [paths.figures / f"{name}.{suffix}" for suffix in ("png", "pdf")]
    if _DIGEST_COLLECTORS:
        for found in _DIGEST_COLLECTORS:
            found[name] = digest
        plt.close(fig)
        return targets
    for target in targets:
        suffix = target.suffix[1:]
        # No creation date in the PDF: redrawing from the same results gives the same bytes.
        metadata = ({DIGEST_KEY: digest} if suffix == "png" else
                    {"CreationDate": None, "Keywords": f"{DIGEST_KEY} {digest}"})
        atomic_write(target, lambda tmp, s=suffix, m=metadata: fig.savefig(
            tmp, format=s, dpi=150, bbox_inches="tight", metadata=m))
        for report in _FIGURE_LISTENERS:
            report(target)
    plt.close(fig)
    return targets


def figure_digest(path: Path) -> str | None:
    """The drawn-data digest saved inside a figure file by :func:`save_figure` (None if none)."""
    path = Path(path)
    if path.suffix == ".png":
        from PIL import Image

        with Image.open(path) as image:
            return image.text.get(DIGEST_KEY)
    match = re.search(rb"/Keywords \(" + DIGEST_KEY.encode() + rb" ([0-9a-f]{64})\)",
                      path.read_bytes())
    return match.group(1).decode() if match else None


def seed_everything(seed: int) -> None:
    import random

    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def summary_main(name: str, summary, argv=None, table=None, quick_fallback: bool = False) -> int:
    """``python -m experiments.MODULE [RESULTS]``: print a study's key numbers from saved results.

    With ``table`` (a function of a list of results), several files may be given and
    ``table(results)`` of them all is printed; one file still prints ``summary``. With
    ``quick_fallback``, the default file is NAME-quick.json where NAME.json does not exist.
    """
    import argparse

    default, quick = Paths().results_file(name), Paths().results_file(name + "-quick")
    shown = f"{default}, else {quick}" if quick_fallback else f"{default}"
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments.{name.replace('-', '_')}",
        description=f"Print the key numbers of saved {name} results"
                    + ("; several files give one table." if table else "."))
    if table is None:
        parser.add_argument("results", nargs="?", type=Path, default=None,
                            help=f"a results file written by the study (default: {shown})")
    else:
        parser.add_argument("results", nargs="*", type=Path,
                            help=f"results files written by the study (default: {shown})")
    given = parser.parse_args(argv).results
    files = [given] if isinstance(given, Path) else list(given or [])
    if not files:
        files = [quick if quick_fallback and not default.exists() and quick.exists()
                 else default]
    for results in files:
        if not results.exists():
            raise SystemExit(f"error: no results file {results}; run `python -m experiments "
                             f"{name}` first, which writes runs/full/results/{name}.json (give "
                             "that file), or add --out . to write the repository's results/")
    loaded = [load_results(results, name) for results in files]
    try:
        with reading(loaded[0], files[0]):
            if len(loaded) == 1:
                text = summary(loaded[0])
        if len(loaded) > 1:
            for results, path in zip(loaded, files):  # name the file a table cannot read
                with reading(results, path):
                    table([results])
            text = table(loaded)
    except ResultsMismatch as error:
        raise SystemExit(f"error: {error}") from None
    print(text)
    return 0


def describe_fields(config_class) -> str:
    """The fields of a Config with their defaults and comments, read from its source (or from
    ``config_class`` itself when it is that source text), for --help."""
    source = config_class if isinstance(config_class, str) else inspect.getsource(config_class)
    rows = []
    for match in re.finditer(r"^    (\w+): [\w\[\], ]+ = (.+?)(?:  # (.*))?$", source, re.M):
        name, default, comment = match.groups()
        rows.append(f"  {name} = {default}" + (f"\n      {comment}" if comment else ""))
    return "config fields (--set FIELD=VALUE; tuples as comma-separated lists):\n" + "\n".join(rows)
