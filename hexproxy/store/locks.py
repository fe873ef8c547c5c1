"""Lock files through which the worker processes sharing a cache directory take turns.

An ``flock(2)`` on a file under ``locks/``: the kernel releases it when the
descriptor closes, so a worker that crashes (even SIGKILLed) never leaves one held.

A lock file whose turn is over is removed by its holder, so ``locks/`` does not grow
with every object ever fetched. That opens the classic race: a process that opened
the file just before it was removed would lock a file no longer there, while the
next one creates and locks a new file of the same name, and both would think they
hold the turn. So whoever takes a lock checks, once it holds it, that the name still
refers to the file it locked (same device and inode), and starts over if not. Only a
holder removes the file, and only while holding it, so a check that passed stays true
until its holder lets go.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

from .diskio import fd_from_thread

log = logging.getLogger("hexproxy.locks")

POLL = 0.02  # seconds between attempts while another process holds a turn


class NoTurn(TimeoutError):
    """Another process held the lock for longer than we would wait."""


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


def still_named(fd: int, path: Path) -> bool:
    """Does ``path`` still name the file open on ``fd`` (not removed, not replaced)?"""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def release(fd: int, path: Path) -> None:
    """End a turn: remove the lock file (while still holding it), then let go."""
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """Hold the lock for the block, waiting for it (call from a thread, not the loop);
    the lock file is removed when the block ends."""
    while True:
        fd = open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if still_named(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it as we waited: lock the file there now
    try:
        yield
    finally:
        release(fd, path)


@contextlib.asynccontextmanager
async def turn(
    path: Path, patience: float, waiting: Callable[[], None] | None = None
) -> AsyncIterator[None]:
    """Hold the lock at ``path`` for the block, from a coroutine: while another process
    holds it, poll (the loop never blocks on it) for up to ``patience`` seconds, then
    raise NoTurn; ``waiting()`` is called at each such poll. A cache directory
    where no lock file can be made (read-only, full) still serves: the block runs
    without one."""
    try:
        fd: int | None = await _take(path, time.monotonic() + patience, waiting)
    except OSError as exc:
        log.warning("no lock file %s (%s); going ahead without it", path.name, exc.strerror)
        fd = None
    try:
        yield
    finally:
        if fd is not None:
            # Synchronous on purpose: the name must go before the lock does, even when
            # the block was cancelled (an unlink in a directory in memory does not wait
            # for the disk).
            release(fd, path)


async def _take(path: Path, deadline: float, waiting: Callable[[], None] | None) -> int:
    while True:
        fd = await fd_from_thread(lambda: open_lock(path))
        try:
            # flock(LOCK_NB) and stat never wait for the disk: fine on the loop.
            while not try_lock(fd):
                if waiting is not None:
                    waiting()
                if time.monotonic() > deadline:
                    raise NoTurn(f"{path.name} is held by another process")
                await asyncio.sleep(POLL)
            if still_named(fd, path):
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder removed it as we waited: lock the file there now
