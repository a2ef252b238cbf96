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
from typing import Any, Iterable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

__all__ = ["StudyConfig", "Paths", "progress", "save_results", "load_results", "save_figure",
           "metadata", "atomic_write", "resolve_device", "Timer"]


@dataclass(frozen=True)
class StudyConfig:
    seed: int = 0  # seeds torch and numpy at the start of the run
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    quick: bool = False  # the small scale: every study runs in a few minutes on a 2-core CPU
    threads: int = 1  # torch CPU threads (0: torch's default, one per core); see torch_threads

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Paths:
    """Where a run writes: ``results/`` for raw numbers, ``figures/`` for the plots."""

    root: Path = ROOT

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def results_file(self, study: str) -> Path:
        return self.results / f"{study}.json"


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"error: --device {name}: not a device torch knows; "
                         "use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name} asked for CUDA, but torch sees no CUDA device; use --device cpu")
    return device


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
    return platform.processor() or platform.machine() or "cpu"


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
    folder becomes relative to it, any other keeps only its last part (``.../name``)."""
    text = str(text)
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


def check_writable(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and refuse, with ValueError, one that cannot be written
    (before any work, so that nothing computed is lost for want of a place to save it)."""
    folder = Path(folder)
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


def load_results(path: Path, study: str | None = None) -> dict:
    """A results file as saved by :func:`save_results`; with ``study``, one that study made.

    Anything else (a missing file, a folder, a file that is not JSON or not a results file, the
    results of another study) stops with a one-line message that says what it is.
    """
    path = Path(path)
    if not path.exists():
        raise SystemExit(f"error: no saved results at {path}; run the study first")
    if path.is_dir():
        raise SystemExit(f"error: {path} is a folder, not a results file; give a "
                         "results/STUDY.json file")
    try:
        with open(path, encoding="utf-8") as handle:
            results = json.load(handle)
    except PermissionError:
        raise SystemExit(f"error: cannot read {path}: permission denied") from None
    except UnicodeDecodeError:
        raise SystemExit(f"error: {path} is not a results file (not text: an image or other "
                         "binary file?); give a results/STUDY.json file") from None
    except json.JSONDecodeError as error:
        raise SystemExit(f"error: {path} is not valid JSON ({error}); re-run the study") from None
    if (not isinstance(results, dict) or not isinstance(results.get("metadata"), dict)
            or "data" not in results):
        raise SystemExit(f"error: {path} is JSON but not a results file (no metadata and data); "
                         "give a results/STUDY.json file that a study wrote")
    made_by = results["metadata"].get("study")
    if study is not None and made_by != study:
        raise SystemExit(f"error: {path} holds the results of {made_by!r}, not of {study!r}; "
                         f"use python -m experiments.{str(made_by).replace('-', '_')} for it")
    return results


_FIGURE_LISTENERS: list = []


@contextmanager
def announce_figures(report):
    """Call ``report(path)`` inside the block as each figure file is written (progress while a
    study draws: its figures take seconds)."""
    _FIGURE_LISTENERS.append(report)
    try:
        yield
    finally:
        _FIGURE_LISTENERS.remove(report)


def save_figure(fig, paths: Paths, name: str, results_path: Path, script: str) -> list[Path]:
    """Save ``fig`` as PNG and PDF under figures/, with a footnote naming what produced it.

    Figures drawn from quick-scale results get a ``-quick`` suffix, so a quick run never
    overwrites the figures of a full one.
    """
    if Path(results_path).stem.endswith("-quick"):
        name += "-quick"
    try:
        source = Path(results_path).resolve().relative_to(paths.root.resolve())
    except ValueError:
        source = Path(results_path).name
    # Below everything the figure holds (bbox_inches="tight" makes room for it), so that it never
    # sits on an axis label.
    fig.text(0.995, -0.01, f"{script} -> {source}", ha="right", va="top", fontsize=6,
             color="0.5")
    written = []
    for suffix in ("png", "pdf"):
        target = paths.figures / f"{name}.{suffix}"
        # No creation date in the PDF: redrawing from the same results gives the same bytes.
        metadata = {"CreationDate": None} if suffix == "pdf" else None
        atomic_write(target, lambda tmp, s=suffix, m=metadata: fig.savefig(
            tmp, format=s, dpi=150, bbox_inches="tight", metadata=m))
        written.append(target)
        for report in _FIGURE_LISTENERS:
            report(target)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return written


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
            raise SystemExit(f"error: no results file {results}; "
                             f"run `python -m experiments {name}` first")
    loaded = [load_results(results, name) for results in files]
    print(summary(loaded[0]) if len(loaded) == 1 else table(loaded))
    return 0


def describe_fields(config_class) -> str:
    """The fields of a Config with their defaults and comments, read from its source, for --help."""
    rows = []
    for match in re.finditer(r"^    (\w+): [\w\[\], ]+ = (.+?)(?:  # (.*))?$",
                             inspect.getsource(config_class), re.M):
        name, default, comment = match.groups()
        rows.append(f"  {name} = {default}" + (f"\n      {comment}" if comment else ""))
    return "config fields (--set FIELD=VALUE; tuples as comma-separated lists):\n" + "\n".join(rows)
