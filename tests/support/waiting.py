"""Waiting for a condition instead of sleeping for a guess.

A test that sleeps a fixed time and then asserts is a race: on a loaded machine the
thing it waits for can take longer. `wait_until` polls the condition and returns the
moment it holds; its guard is a hang guard, far above the expected time, and its
failure names what never happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

HANG_GUARD = 30.0


async def wait_until(
    condition: Callable[[], object], what: str, *, guard: float = HANG_GUARD
) -> None:
    """Return once ``condition()`` is true; fail after ``guard`` seconds, naming ``what``."""
    deadline = time.monotonic() + guard
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {guard:.0f}s waiting for {what}")
        await asyncio.sleep(0.01)
