"""Lock files through which the worker processes sharing a cache directory take turns.

An ``flock(2)`` on a file under ``locks/``: the kernel releases it when the
descriptor closes, so a worker that crashes never leaves one held.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def open_lock(path: Path) -> int:
    """A descriptor on the lock file ``path``, created (with its directory) if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


def try_lock(fd: int) -> bool:
    """Take the exclusive lock without waiting; False while another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


@contextlib.contextmanager
def held_if_free(path: Path) -> Iterator[bool]:
    """Hold the lock for the block if no other process does; yields whether we hold it."""
    fd = open_lock(path)
    try:
        yield try_lock(fd)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold the lock for the block, waiting for it (call from a thread, not the loop)."""
    fd = open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
