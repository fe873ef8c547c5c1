"""Counters that every worker of one server adds to, in memory they all share.

With ``--workers N`` a scrape reaches one worker, yet it must report the whole server, and
a counter may never go down while the server runs. So the parent maps one anonymous shared
region (``mmap(-1, …)``: MAP_SHARED, no file, nothing left behind even after a crash)
before it forks, with one *slot* per worker: each worker adds to its own slot only, and
whoever answers a scrape sums every slot. A worker that dies leaves its counts in its slot;
the worker started in its place adopts that slot and adds to the same counters, so totals
never drop and the memory stays N slots however often workers are replaced.

Counting stays what the request path can afford: a dict lookup for the key's index and one
64-bit add in memory, no lock (one writer per slot), no system call.

A slot: a header (owner pid, 0 while vacant; number of keys), CAPACITY counters, then each
key's name (JSON, length-prefixed) appended in the order keys first appeared: the n-th name
is the n-th counter's. The owner writes a name before it raises the key count, and adds to
a counter only after, so a reader that trusts the count sees whole names and never a counter
without one. Keys whose name starts with ``~`` are gauges: the owner sets them, and a reader
sums them over the slots that have a live owner only.
"""

from __future__ import annotations

import json
import mmap
import os
from collections import Counter
from dataclasses import dataclass, field

Key = tuple[str | int, ...]

CAPACITY = 8192  # counters per slot (a server has ~100 request keys, plus one per package)
NAME_BYTES = 512 * 1024  # their names
FAMILY_LIMIT = 2048  # keys per metric (per first element): more share one, labelled OVERFLOW
_HEADER = 16  # pid, key count: two 64-bit words
_SLOT = _HEADER + 8 * CAPACITY + NAME_BYTES
OVERFLOW = "other"  # the label of keys that arrive after a slot is full


class Board:
    """The shared region: ``slots`` of them, mapped before the workers are forked."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        # Pages are only backed once written to: an idle slot costs next to nothing.
        self._map = mmap.mmap(-1, slots * _SLOT)
        self._view = memoryview(self._map)
        self._readers = [_Reader(self, slot) for slot in range(slots)]

    def header(self, slot: int) -> memoryview:
        start = slot * _SLOT
        return self._view[start : start + _HEADER].cast("Q")

    def values(self, slot: int) -> memoryview:
        start = slot * _SLOT + _HEADER
        return self._view[start : start + 8 * CAPACITY].cast("Q")

    def names(self, slot: int) -> memoryview:
        start = slot * _SLOT + _HEADER + 8 * CAPACITY
        return self._view[start : start + NAME_BYTES]

    def vacate(self, slot: int) -> None:
        """Its worker is gone (the parent says so once it has reaped it): its gauges stop
        counting; its counters stay, for the next owner to add to."""
        self.header(slot)[0] = 0

    def read(self) -> Totals:
        """Every slot summed: counters over all slots, gauges over live ones."""
        totals = Totals()
        for reader in self._readers:
            reader.add_to(totals)
        return totals


@dataclass
class Totals:
    """A scrape's view of the whole server."""

    counts: Counter[Key] = field(default_factory=Counter)
    workers: dict[int, int] = field(default_factory=dict)  # slot -> live owner pid
    requests: dict[int, int] = field(default_factory=dict)  # slot -> requests answered

    def family(self, name: str) -> list[tuple[Key, int]]:
        """The keys of one metric (their first element), without it, sorted by label."""
        found = [(key[1:], n) for key, n in self.counts.items() if key[0] == name]
        return sorted(found, key=lambda item: [str(label) for label in item[0]])

    def value(self, *key: str | int) -> int:
        return self.counts[key]


class Tally:
    """One worker's slot: ``add`` is all the request path calls."""

    def __init__(self, board: Board, slot: int) -> None:
        self.board = board
        self.slot = slot
        self._header = board.header(slot)
        self._values = board.values(slot)
        self._names = board.names(slot)
        self._index: dict[Key, int] = {}
        self._families: Counter[str | int] = Counter()  # keys per metric
        self._end = 0  # where the next name goes
        self._adopt()
        self._header[0] = os.getpid()

    def _adopt(self) -> None:
        """Take over what the slot's previous owner counted (a worker replaced)."""
        for index in range(self._header[1]):
            name, self._end = _name_at(self._names, self._end)
            key = _key(name)
            self._index[key] = index
            self._families[key[0]] += 1

    def add(self, key: Key, n: int = 1) -> None:
        index = self._index.get(key)
        if index is None:
            index = self._register(key)
        self._values[index] += n

    def counter(self, key: Key) -> int:
        """Where ``key`` is counted, for a caller that adds to it very often: then
        ``values[counter(key)] += n`` is ``add(key, n)`` without the lookup. A key keeps
        its place for the life of the slot."""
        index = self._index.get(key)
        return self._register(key) if index is None else index

    @property
    def values(self) -> memoryview:
        return self._values

    def set(self, key: Key, value: int) -> None:
        """A gauge (``key[0]`` starts with ``~``): this worker's current value."""
        index = self._index.get(key)
        if index is None:
            index = self._register(key)
        self._values[index] = value

    def own(self, key: Key) -> int:
        """This slot's count for ``key`` (what this worker and its predecessors added)."""
        index = self._index.get(key)
        return 0 if index is None else int(self._values[index])

    def _register(self, key: Key) -> int:
        name = json.dumps(key, separators=(",", ":")).encode()
        full = self._header[1] >= CAPACITY - 64 or self._end + len(name) > NAME_BYTES - 4096
        if self._families[key[0]] >= FAMILY_LIMIT or full:
            # A metric with very many label values (packages, on a huge fleet): later ones
            # share one counter. The last 64 counters and 4 KiB of names are kept for these.
            lumped = (key[0], *[OVERFLOW] * (len(key) - 1))
            index = self._index.get(lumped)
            if index is None:
                if self._header[1] >= CAPACITY:
                    raise RuntimeError("metrics slot is full")  # needs 64 metric names
                index = self._register_name(lumped, json.dumps(lumped).encode())
            self._index[key] = index
            return index
        return self._register_name(key, name)

    def _register_name(self, key: Key, name: bytes) -> int:
        index = self._header[1]
        end = self._end
        self._names[end : end + 2] = len(name).to_bytes(2, "little")
        self._names[end + 2 : end + 2 + len(name)] = name
        self._end = end + 2 + len(name)
        self._values[index] = 0
        self._header[1] = index + 1  # last: readers trust names up to the count
        self._index[key] = index
        self._families[key[0]] += 1
        return index


class _Reader:
    """Reads one slot, remembering the names it decoded: they are only ever appended."""

    def __init__(self, board: Board, slot: int) -> None:
        self.header = board.header(slot)
        self.values = board.values(slot)
        self.buffer = board.names(slot)
        self.names: list[Key] = []
        self.end = 0
        self.slot = slot

    def add_to(self, totals: Totals) -> None:
        pid, count = self.header[0], min(self.header[1], CAPACITY)
        while len(self.names) < count:
            name, self.end = _name_at(self.buffer, self.end)
            self.names.append(_key(name))
        values = self.values[: len(self.names)].tolist()
        requests = 0
        for key, n in zip(self.names, values, strict=True):
            if str(key[0]).startswith("~"):
                if pid:
                    totals.counts[key] += n
                continue
            totals.counts[key] += n
            if key[0] == "requests":
                requests += n
        if pid:
            totals.workers[self.slot] = pid
        if count:
            totals.requests[self.slot] = requests


def _name_at(buffer: memoryview, start: int) -> tuple[bytes, int]:
    length = int.from_bytes(buffer[start : start + 2], "little")
    end = start + 2 + length
    return bytes(buffer[start + 2 : end]), end


def _key(name: bytes) -> Key:
    return tuple(json.loads(name))
