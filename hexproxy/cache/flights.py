"""Single flight inside one process: one task per key at a time, shared by every caller.

The first caller for a key starts the task; callers that arrive while it runs join it
and share its result (or its error), never a stream: each re-reads what it needs from
the result. The entry goes when the task ends, so the next caller starts afresh. Across
worker processes, the task itself takes its turn (``turns.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(slots=True)
class Flight(Generic[T]):
    task: asyncio.Task[T]
    # Set by the first caller whose deadline passed while waiting on it: the silence is
    # counted against upstream once per flight, not once per waiting client.
    reported_slow: bool = False


class Flights(Generic[K, T]):
    def __init__(self) -> None:
        self._running: dict[K, Flight[T]] = {}

    def join(self, key: K, start: Callable[[], Coroutine[Any, Any, T]], name: str) -> Flight[T]:
        """The running flight for ``key``, started with ``start()`` if there is none."""
        flight = self._running.get(key)
        if flight is None:
            flight = Flight(asyncio.create_task(start(), name=name))
            self._running[key] = flight
            flight.task.add_done_callback(lambda task: self._land(key, task))
        return flight

    def _land(self, key: K, task: asyncio.Task[T]) -> None:
        flight = self._running.get(key)
        if flight is not None and flight.task is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved: waiters that gave up must not leave it unread

    def tasks(self) -> list[asyncio.Task[T]]:
        return [flight.task for flight in self._running.values()]

    def __len__(self) -> int:
        return len(self._running)
