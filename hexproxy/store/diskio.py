"""Opening cache files from coroutines without making the event loop wait for the disk.

``storage.py`` is synchronous by design; coroutines run its calls (and any other
open, stat or read) through ``asyncio.to_thread``. Opening a file is the one
call that needs more care: if the coroutine awaiting the thread is cancelled (its
client went away), the thread still opens the file, and nobody would close it.
``open_fd`` closes such an orphan as soon as the thread hands it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path


async def open_fd(path: Path, flags: int = os.O_RDONLY, mode: int = 0o644) -> int:
    """``os.open`` in a thread; raises what it raises (FileNotFoundError, ...)."""
    return await fd_from_thread(lambda: os.open(path, flags, mode))


async def fd_from_thread(opener: Callable[[], int]) -> int:
    """Run ``opener`` (which returns a new descriptor) in a thread; if the caller is
    cancelled meanwhile, the descriptor is closed when the thread hands it back."""
    opening = asyncio.ensure_future(asyncio.to_thread(opener))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_orphan)
        raise


def _close_orphan(opening: asyncio.Future[int]) -> None:
    if opening.cancelled() or opening.exception() is not None:
        return
    with contextlib.suppress(OSError):
        os.close(opening.result())
