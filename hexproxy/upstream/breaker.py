"""A circuit breaker for the upstream, so a dead upstream costs one timeout, not one per request.

After ``threshold`` consecutive failures the upstream is considered down for
``retry_after`` seconds: requests are answered from the cache at once. When
the pause ends, one request is let through as a probe; its outcome closes the
circuit again or starts a new pause.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable


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
    ) -> None:
        self.threshold = threshold
        self.retry_after = retry_after
        self.clock = clock
        self.failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self.last_error = ""

    @property
    def state(self) -> State:
        if self._opened_at is not None and not self._pause_over():
            return State.PAUSED
        return State.DOWN if self.failures else State.UP

    def _pause_over(self) -> bool:
        return self._opened_at is not None and self.clock() - self._opened_at >= self.retry_after

    def allow(self) -> bool:
        """May a request go upstream now? Claims the single probe when a pause ends."""
        if self._opened_at is None:
            return True
        if not self._pause_over() or self._probing:
            return False
        self._probing = True
        return True

    def record_success(self) -> None:
        self.failures = 0
        self._opened_at = None
        self._probing = False
        self.last_error = ""

    def record_failure(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        self._probing = False
        if self.failures >= self.threshold:
            self._opened_at = self.clock()

    def seconds_until_retry(self) -> float:
        if self._opened_at is None:
            return 0.0
        return max(0.0, self.retry_after - (self.clock() - self._opened_at))
