"""One writer per file or folder: an exclusive lock held for the whole of a training or invocation.

Two trainers started on one new checkpoint path both found it absent, both trained, and the file
held whichever finished last; a second trainer's start-up cleanup could remove the first one's
temporary file in the middle of its write. So a trainer holds its checkpoint's lock, and the
paper programme its state folder's, from before its first check to its end, and a second one is
refused at once, in one line naming the process that holds it. The lock is ``fcntl.flock`` on a
small file beside the path (``.NAME.lock``): the kernel releases it when its holder exits, however
it exits (a SIGKILL included), so a lock file left behind never blocks anyone; the holder removes
it when it finishes.

Where ``fcntl`` does not exist (Windows) nothing is locked.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover: not POSIX
    fcntl = None

__all__ = ["LockHeld", "lock_file", "holding"]


class LockHeld(ValueError):
    """Another live process holds the lock; the message names it and what to do."""


def lock_file(path: str | os.PathLike) -> Path:
    """The lock file of ``path``: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def _holder(descriptor: int) -> str:
    try:
        text = os.pread(descriptor, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        text = ""
    return f"process {text}" if text.isdigit() else "another process"


@contextmanager
def holding(path: str | os.PathLike, what: str, how: str):
    """Hold ``path``'s lock inside the block; raise :class:`LockHeld` ("WHAT is in use by process
    N; HOW") at once if another process holds it."""
    if fcntl is None:
        yield
        return
    target = lock_file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    while True:
        descriptor = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: held
            holder = _holder(descriptor)
            os.close(descriptor)
            raise LockHeld(f"{what} is in use by {holder}; {how}") from None
        # The holder before us may have removed the file between our open and our lock: then we
        # hold a file nobody else will look at, and must take the one at the path.
        try:
            same = os.fstat(descriptor).st_ino == os.stat(target).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(descriptor)
    try:
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()}\n".encode())
        yield
    finally:
        # Removed while still held, so that whoever opens the path next makes a new file.
        target.unlink(missing_ok=True)
        os.close(descriptor)
