"""Checkpoints of a training: written whole or not at all, checked whole before a resume.

A checkpoint holds only tensors and plain Python values (``torch.load(path, weights_only=True)``
reads it): the runs' stacked networks and Adam states, their histories, counters and random
stream states (:mod:`experiments.mnist.streams`), so a resumed run ends with the same
parameters, bit for bit on the CPU, as one that was never interrupted.

On disk it is a small envelope ``{"format", "sha256", "payload"}``: the payload is the
``torch.save`` of the state, as bytes, and its SHA-256 is checked before anything is loaded, so
a flipped byte, a truncated or empty file, or a file of something else is refused with one line
that names it instead of resuming from it (so is a file holding anything but tensors and plain
values: nothing else is ever unpickled). Writes go through a temporary file in the same folder
and a rename (:func:`experiments.common.atomic_write`); one left by a kill during a write is
removed at the next start, by the trainer that holds the checkpoint's lock (:func:`remove_stale`).
The same envelope carries the paper programme's shipped weights (:func:`save_checked`).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
from pathlib import Path

import torch

from ..common import atomic_write

__all__ = ["FORMAT", "CheckedFileError", "CheckpointError", "save_checkpoint", "load_checkpoint",
           "save_checked", "load_checked", "remove_stale"]

FORMAT = "vae-gradients MNIST training checkpoint, version 2"


class CheckedFileError(ValueError):
    """A checksummed file that cannot be used: ``problem`` says what is wrong with it, the
    message adds ``how`` to go on (each caller words its own: flags differ between commands)."""

    def __init__(self, problem: str, how: str = ""):
        self.problem, self.how = problem, how
        super().__init__(f"{problem}; {how}" if how else problem)


class CheckpointError(CheckedFileError):
    """A checkpoint that cannot be resumed from; the message names the file and what is wrong."""


_HOW = "start afresh with a new --checkpoint path (or --overwrite)"


def save_checked(path: str | os.PathLike, state, format: str) -> Path:
    """``state`` (tensors and plain values) at ``path`` in the envelope ``{"format", "sha256",
    "payload"}``, through a temporary file and a rename."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    envelope = {"format": format, "sha256": hashlib.sha256(payload).hexdigest(),
                "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    return atomic_write(Path(path), lambda tmp: torch.save(envelope, tmp))


def _load(source, path: Path, error, how: str, what: str):
    """``torch.load(source, weights_only=True)``; anything that is not such a file is refused
    in one line: the loader fails in many ways on foreign bytes (a text file starting with "h"
    raises KeyError, a pickle of anything but tensors and plain values UnpicklingError)."""
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except PermissionError:
        raise error(f"cannot read {path}: permission denied", how) from None
    except MemoryError:
        raise
    except Exception as failure:  # noqa: BLE001: nothing an unreadable file raises may escape
        if isinstance(source, io.BytesIO):  # a payload that matched its checksum
            problem = (f"{path} holds something other than tensors and plain values, which is "
                       f"never loaded ({type(failure).__name__})")
        elif path.stat().st_size == 0:
            problem = f"{path} is empty"
        else:
            problem = f"{path} is truncated or not {what} ({type(failure).__name__})"
        raise error(problem, how) from None


def load_checked(path: str | os.PathLike, format: str, *,
                 what: str = "a checkpoint of this trainer",
                 error=CheckpointError, how: str = _HOW):
    """What :func:`save_checked` wrote at ``path``, after checking its format and checksum.

    A flipped byte, a truncated, empty or foreign file, or one holding anything but tensors and
    plain values raises ``error`` (a :class:`CheckedFileError`) with one line naming the file.
    """
    path = Path(path)
    envelope = _load(path, path, error, how, what)
    if not isinstance(envelope, dict) or envelope.get("format") != format:
        found = envelope.get("format") if isinstance(envelope, dict) else type(envelope).__name__
        raise error(f"{path} is not {what} (format {found!r}, expected {format!r})", how)
    payload = envelope.get("payload")
    if not torch.is_tensor(payload) or payload.dtype != torch.uint8:
        raise error(f"{path} has no payload", how)
    data = payload.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != envelope.get("sha256"):
        raise error(f"{path} is damaged: its contents do not match the checksum stored with "
                    "them", how)
    return _load(io.BytesIO(data), path, error, how, what)


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    return save_checked(path, state, FORMAT)


def load_checkpoint(path: str | os.PathLike, how: str = _HOW) -> dict:
    """The state saved by :func:`save_checkpoint` at ``path``, checked against its checksum;
    ``how`` is the advice a refusal ends with."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"the checkpoint {path} is a folder", "give --checkpoint a file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; drop --resume to start afresh")
    state = load_checked(path, FORMAT, how=how)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds a {type(state).__name__}, not a training state",
                              how)
    return state


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that a write of ``path`` killed midway left beside it.

    Call it only while holding ``path``'s lock (:mod:`experiments.mnist.lock`): then no live
    process is writing one of them.
    """
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for temporary in stale:
        temporary.unlink(missing_ok=True)
    return stale
