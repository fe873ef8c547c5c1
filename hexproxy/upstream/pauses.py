"""A host's breaker pause, shared by the worker processes through a state file.

The worker whose breaker opens writes ``state/pauses/<host>`` (when the pause ends, by
the wall clock, and why); the others' breakers take it as their own, so a dead or
black-holed upstream costs one worker's failures, not every worker's. A successful
request removes it, and the workers holding that pause close their breakers too.

When the pause runs out, one worker probes the host: the one that takes the lock file
``state/pauses/<host>.probe`` (an ``flock``, released when its probe ends, or by the
kernel if that worker dies); the others keep holding back until the probe's outcome
(a new pause, or none) reaches them.

Reading costs a ``stat`` (and a read only when the file changed): before every upstream
request, and at most every ``CHECK_EVERY`` seconds for the breaker's state otherwise.
Cache hits never look.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable

from ..store.locks import open_lock, try_lock
from ..store.statefiles import StateDir

CHECK_EVERY = 0.5  # seconds


class SharedPause:
    def __init__(self, state: StateDir, host: str, wall: Callable[[], float] = time.time) -> None:
        self.state = state
        self.name = f"pauses/{host}"
        self.wall = wall
        self._checked = -math.inf  # time.monotonic() of the last stat
        self._signature: tuple[int, int] | None = None
        self._seen: tuple[float, str] | None = None
        self._probe: int | None = None  # the descriptor holding the probe's lock

    def claim_probe(self) -> bool:
        """May this worker probe the host now? False while another worker does."""
        if self._probe is not None:
            return True
        # On the loop: an open and an flock(LOCK_NB), once per pause that runs out.
        try:
            fd = open_lock(self.state.path(self.name + ".probe"))
        except OSError:
            return True  # no lock file to be had: each worker probes for itself
        if try_lock(fd):
            self._probe = fd
            return True
        os.close(fd)
        return False

    def probe_over(self) -> None:
        if self._probe is not None:
            os.close(self._probe)  # lets the next worker probe
            self._probe = None

    def publish(self, seconds: float, reason: str) -> float | None:
        """Tell the other workers this host is paused for ``seconds``; returns when the
        pause ends, or None if it could not be told (each worker keeps its own then)."""
        # Written on the loop: a few bytes, only when a breaker opens.
        until = self.wall() + seconds
        self._checked = -math.inf
        try:
            self.state.write(self.name, {"until": until, "reason": reason})
        except OSError:
            return None
        return until

    def withdraw(self) -> None:
        with contextlib.suppress(OSError):
            self.state.remove(self.name)
        self._checked = -math.inf

    def seconds_left(self, until: float) -> float:
        return until - self.wall()

    def current(self, force: bool) -> tuple[float, str] | None:
        """The pause published (its end, by the wall clock, and its reason), if any."""
        now = time.monotonic()
        if not force and now - self._checked < CHECK_EVERY:
            return self._seen
        self._checked = now
        # A stat on the loop: a file in a directory the kernel holds in memory.
        signature = self._stat()
        if signature != self._signature:
            self._signature = signature
            self._seen = self._read() if signature is not None else None
        return self._seen

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.state.path(self.name).stat()
        except OSError:
            return None
        # Each write is a new file (a rename): its inode tells it apart from the last.
        return (st.st_ino, st.st_mtime_ns)

    def _read(self) -> tuple[float, str] | None:
        try:
            value = self.state.read(self.name)
        except OSError:
            return None
        if value is None:
            return None
        until, reason = value.get("until"), value.get("reason")
        if not isinstance(until, int | float) or not isinstance(reason, str):
            return None
        return float(until), reason
