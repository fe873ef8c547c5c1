"""``/installs/*`` when the builds host cannot answer, and offline misses of it.

Hex 2.3+ asks the mirror for ``/installs/hex-1.x.csv`` on every run, and a
locked-down network never reaches the builds host behind it. Every Hex takes a
failed update check as "no update information", so a miss the builds host cannot
serve is answered at once with ``InstallsUnavailable`` (a 404 without
``x-hex-message``), and one failed attempt is remembered for ``negative_ttl``
(an ``Outage``) so that the misses after it do not try again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..errors import InstallsUnavailable, UpstreamError
from ..store.cachekey import CacheKey
from .outage import Outage

log = logging.getLogger("hexproxy.cache")


class BuildsHost:
    """The policy's view of the builds host behind ``/installs/*``."""

    def __init__(self, shown_url: str, retry_after: float, clock: Callable[[], float]) -> None:
        self.outage = Outage(f"builds host {shown_url}", retry_after, clock)
        self.retry_after = retry_after
        self._offline_logged = False

    def down(self) -> str | None:
        """Why the host is remembered as down (then do not ask it), else None."""
        return self.outage.remembered()

    def answered(self) -> None:
        """It gave an answer (any HTTP status): it is up."""
        self.outage.answered()

    def check(self, key: CacheKey) -> None:
        """While a failed attempt is remembered, answer at once instead of trying again."""
        reason = self.outage.remembered()
        if reason is not None:
            raise _unavailable(key, reason)

    def failed(self, key: CacheKey, error: UpstreamError) -> InstallsUnavailable:
        """An attempt failed: remember it; returns the error to answer ``key`` with."""
        self.outage.failed(
            error.message,
            f"/installs/* not held in the cache is answered 404 (Hex: no update information), "
            f"trying again at most every {self.retry_after:g}s",
        )
        return _unavailable(key, error.message)

    def offline_miss(self, key: CacheKey) -> InstallsUnavailable:
        """Offline, and not held: the same quiet 404, said once in the log."""
        if not self._offline_logged:
            self._offline_logged = True
            log.warning(
                "offline: %s is not in the cache; /installs/* not held is answered 404, "
                "which Hex takes as no update information",
                key,
            )
        return InstallsUnavailable(f"{key} is not in this offline cache")


def _unavailable(key: CacheKey, reason: str) -> InstallsUnavailable:
    return InstallsUnavailable(
        f"{key}: the builds host could not answer ({reason}) and this proxy holds no copy"
    )
