"""Checkpoints of a training: written whole or not at all, checked whole before a resume.

A checkpoint holds only tensors and plain Python values (``torch.load(path, weights_only=True)``
reads it): the runs' stacked networks and Adam states, their histories, counters and random
stream states (:mod:`experiments.mnist.streams`), so a resumed run ends with the same
parameters, bit for bit on the CPU, as one that was never interrupted.

On disk it is a small envelope ``{"format", "sha256", "payload"}``: the payload is the
``torch.save`` of the state, as bytes, and its SHA-256 is checked before anything is loaded, so
a flipped byte, a truncated or empty file, or a file of something else is refused with one line
that names it instead of resuming from it. Writes go through a temporary file in the same folder
and a rename (:func:`experiments.common.atomic_write`); one left by a kill during a write is
removed at the next start (:func:`remove_stale`).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import zipfile
from pathlib import Path

import torch

from ..common import atomic_write

__all__ = ["FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "remove_stale"]

FORMAT = "vae-gradients MNIST training checkpoint, version 2"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file and what is wrong."""


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    envelope = {"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
                "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    return atomic_write(Path(path), lambda tmp: torch.save(envelope, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The state saved by :func:`save_checkpoint` at ``path``, checked against its checksum."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; drop --resume to start afresh")
    how = "start afresh with a new --checkpoint path (or --overwrite)"
    try:
        envelope = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CheckpointError(f"cannot read the checkpoint {path}: permission denied") from None
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError) as error:
        what = "empty" if path.stat().st_size == 0 else "truncated or not a checkpoint"
        raise CheckpointError(f"{path} is {what} ({type(error).__name__}); {how}") from None
    if not isinstance(envelope, dict) or envelope.get("format") != FORMAT:
        found = envelope.get("format") if isinstance(envelope, dict) else type(envelope).__name__
        raise CheckpointError(f"{path} is not a checkpoint of this trainer (format "
                              f"{found!r}, expected {FORMAT!r}); {how}")
    payload = envelope.get("payload")
    if not torch.is_tensor(payload) or payload.dtype != torch.uint8:
        raise CheckpointError(f"{path} has no payload; {how}")
    data = payload.numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != envelope.get("sha256"):
        raise CheckpointError(f"{path} is damaged: its contents do not match the checksum "
                              f"stored with them; {how}")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def remove_stale(path: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that a write of ``path`` killed midway left beside it."""
    path = Path(path)
    stale = sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []
    for temporary in stale:
        temporary.unlink(missing_ok=True)
    return stale
