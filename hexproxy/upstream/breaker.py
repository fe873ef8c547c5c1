"""A circuit breaker for the upstream, so a dead upstream costs one timeout, not one per request.

After ``threshold`` consecutive failures the upstream is considered down for
``retry_after`` seconds: requests are answered from the cache at once. When
the pause ends, one request is let through as a probe; its outcome closes the
circuit again or starts a new pause.

With ``shared`` (``pauses.py``) the worker processes share their pauses: one that opens
tells the others, which take it as their own, a success anywhere closes them all, and
one probe at a time goes out for all of them.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from .pauses import SharedPause


class State(enum.Enum):
    UP = "up"
    DOWN = "down"  # failures seen, still trying
    PAUSED = "paused"  # circuit open: not contacting upstream until the pause ends


class CircuitBreaker:
    def __init__(
        self,
        threshold: int,
        retry_after: float,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedPause | None = None,
    ) -> None:
        self.threshold = threshold
        self.retry_after = retry_after
        self.clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.last_error = ""
        self.shared = shared
        self._shared_until: float | None = None  # the end of the shared pause we hold

    @property
    def state(self) -> State:
        self._sync(force=False)
        if self._opened_at is not None and not self._pause_over():
            return State.PAUSED
        return State.DOWN if self.failures else State.UP

    def _pause_over(self) -> bool:
        return self._opened_at is not None and self.clock() - self._opened_at >= self.retry_after

    def allow(self) -> bool:
        """May a request go upstream now? Claims the single probe when a pause ends."""
        self._sync(force=True)
        if self._opened_at is None:
            return True
        if not self._pause_over() or self._probing:
            return False
        if self.shared is not None and not self.shared.claim_probe():
            return False  # another worker is probing
        self._probing = True
        return True

    def _probe_over(self) -> None:
        self._probing = False
        if self.shared is not None:
            self.shared.probe_over()

    def record_success(self) -> None:
        if self.shared is not None and (self._opened_at is not None or self._shared_until):
            self.shared.withdraw()
        self._close()

    def _close(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._probe_over()
        self.last_error = ""
        self._shared_until = None

    def record_failure(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        if self.failures >= self.threshold:
            self._opened_at = self.clock()
            if self.shared is not None:
                self._shared_until = self.shared.publish(self.retry_after, reason)
        # Only now: the next worker to probe must find the new pause first.
        self._probe_over()

    def _sync(self, force: bool) -> None:
        """Take the pause another worker published, or close when it was lifted."""
        if self.shared is None:
            return
        seen = self.shared.current(force)
        if seen is None:
            if self._shared_until is not None:
                self._close()  # another worker's request succeeded
            return
        until, reason = seen
        left = self.shared.seconds_left(until)
        if left <= 0 or (self._shared_until is not None and until <= self._shared_until):
            return  # over, or the one we hold
        self._opened_at = self.clock() - max(self.retry_after - left, 0.0)
        self.failures = max(self.failures, self.threshold)
        self.last_error = reason
        self._probe_over()
        self._shared_until = until

    def seconds_until_retry(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.retry_after - (self.clock() - self._opened_at))
