"""Remembering, for a while, that an upstream host cannot be reached, and saying so once.

The circuit breaker pauses a host after a few failures in a row; this is the
policy's shorter memory for a host whose misses should not be retried at all for
a while (the builds host behind ``/installs/*``, which a locked-down network never
reaches and which every Hex 2.3+ run asks for): one failed attempt is remembered
for ``ttl`` seconds, during which callers answer at once without trying. The log
gets one line when the host goes down and one when it answers again, never one
per request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger("hexproxy.outage")


class Outage:
    def __init__(self, what: str, ttl: float, clock: Callable[[], float]) -> None:
        self.what = what  # how the log names the host, e.g. "builds host https://builds.hex.pm"
        self.ttl = ttl
        self.clock = clock
        self.reason = ""  # why it is down; "" while it is not known to be down
        self._until = 0.0

    def remembered(self) -> str | None:
        """The reason while a failure is remembered (do not try), else None (try)."""
        if self.reason and self.clock() < self._until:
            return self.reason
        return None

    def failed(self, reason: str, consequence: str) -> None:
        """An attempt failed: remember it for ``ttl`` seconds; log only the first time."""
        if not self.reason:
            log.warning("%s cannot be reached (%s): %s", self.what, reason, consequence)
        self.reason = reason
        self._until = self.clock() + self.ttl

    def answered(self) -> None:
        """An attempt got an answer (any HTTP status): the host is back."""
        if self.reason:
            log.info("%s answers again", self.what)
        self.reason = ""
        self._until = 0.0
