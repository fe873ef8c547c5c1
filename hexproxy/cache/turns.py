"""Taking turns with the other worker processes to fetch a registry file or installs CSV.

The in-process flight (``flights.py``) makes one request per object per worker; this
makes it one per cache directory. The flight's task takes the object's lock file
(``store.locks.turn``) before it asks upstream; a worker that finds it taken waits
(polling, without blocking its loop) and, when its turn comes, first looks at what the
worker before it left behind: the stored copy, or its verdict (``verdicts.py``). A
worker killed mid-fetch lets go of its lock with its last breath (the kernel closes its
descriptors), so the next one takes over; none waits longer than ``patience``.

Tarballs, docs and installer builds take their turns in ``upstream.download``, with
the same lock files.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from ..errors import UpstreamTimeout
from ..store.cachekey import CacheKey
from ..store.locks import NoTurn, turn
from ..store.storage import FileStorage


class Turns:
    def __init__(self, storage: FileStorage, patience: float) -> None:
        self.storage = storage
        self.patience = patience
        self._waiting: set[CacheKey] = set()

    def waiting(self, key: CacheKey) -> bool:
        """Is this process waiting for another worker's fetch of ``key``? (Then its
        silence is that worker's to count, and a client told to wait hears why.)"""
        return key in self._waiting

    @contextlib.asynccontextmanager
    async def turn(self, key: CacheKey) -> AsyncIterator[None]:
        lock_file = self.storage.lock_path(key.path.replace("/", "_"))
        try:
            async with turn(lock_file, self.patience, lambda: self._waiting.add(key)):
                self._waiting.discard(key)
                yield
        except NoTurn:
            raise UpstreamTimeout(f"{key}: another worker is still fetching it") from None
        finally:
            self._waiting.discard(key)
