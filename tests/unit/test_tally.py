"""The counters workers share (hexproxy/web/tally.py): summed over slots, kept across a
worker's replacement, bounded when a slot fills up."""

from __future__ import annotations

import os

from hexproxy.web import tally
from hexproxy.web.tally import Board, Tally


def test_a_read_sums_counters_over_every_slot() -> None:
    board = Board(3)
    first, second = Tally(board, 0), Tally(board, 2)
    first.add(("requests", "/names", 200, "HIT"))
    second.add(("requests", "/names", 200, "HIT"), 4)
    second.add(("requests", "/names", 404, "-"))
    first.add(("response_bytes", "/names"), 641)
    totals = board.read()
    assert totals.value("requests", "/names", 200, "HIT") == 5
    assert totals.family("requests") == [(("/names", 200, "HIT"), 5), (("/names", 404, "-"), 1)]
    assert totals.value("response_bytes", "/names") == 641
    assert totals.requests == {0: 1, 2: 5}  # slot 1 never had a worker
    assert totals.workers == {0: os.getpid(), 2: os.getpid()}


def test_a_replacement_adopts_its_slot_and_counters_never_drop() -> None:
    board = Board(2)
    dead = Tally(board, 1)
    dead.add(("requests", "/names", 200, "HIT"), 7)
    dead.add(("packages", "alpha"), 3)
    board.vacate(1)  # the parent reaped it
    assert board.read().value("requests", "/names", 200, "HIT") == 7
    assert 1 not in board.read().workers

    successor = Tally(board, 1)
    successor.add(("requests", "/names", 200, "HIT"))
    successor.add(("packages", "beta"))
    totals = board.read()
    assert totals.value("requests", "/names", 200, "HIT") == 8
    assert totals.family("packages") == [(("alpha",), 3), (("beta",), 1)]
    assert totals.workers == {1: os.getpid()}
    # No name was written twice: the slot grows with new keys only.
    assert board.header(1)[1] == 3


def test_gauges_count_for_live_workers_only() -> None:
    board = Board(2)
    Tally(board, 0).set(("~process_open_fds",), 10)
    gone = Tally(board, 1)
    gone.set(("~process_open_fds",), 32)
    gone.add(("process_cpu_us",), 5)
    assert board.read().value("~process_open_fds") == 42
    board.vacate(1)
    totals = board.read()
    assert totals.value("~process_open_fds") == 10
    assert totals.value("process_cpu_us") == 5  # a counter stays


def test_a_name_torn_by_a_crash_is_written_over() -> None:
    board = Board(1)
    Tally(board, 0).add(("requests", "/names", 200, "HIT"))
    # A worker killed after writing a name but before counting it in the header.
    names = board.names(0)
    end = 2 + int.from_bytes(names[0:2], "little")
    names[end : end + 6] = b'\x40\x00["zz'
    successor = Tally(board, 0)
    successor.add(("packages", "alpha"))
    totals = board.read()
    assert totals.family("packages") == [(("alpha",), 1)]
    assert totals.value("requests", "/names", 200, "HIT") == 1


def test_a_metric_with_too_many_labels_shares_one_counter_beyond_its_limit() -> None:
    board = Board(1)
    counts = Tally(board, 0)
    many = tally.FAMILY_LIMIT + 100  # more package names than one metric may have
    for n in range(many):
        counts.add(("packages", f"p{n}"))
    counts.add(("requests", "/names", 200, "HIT"))
    totals = board.read()
    packages = dict(totals.family("packages"))
    assert sum(packages.values()) == many
    assert packages[(tally.OVERFLOW,)] == 100
    assert len(packages) == tally.FAMILY_LIMIT + 1
    assert totals.value("requests", "/names", 200, "HIT") == 1  # other metrics unaffected
    # A replacement knows the limit is reached.
    Tally(board, 0).add(("packages", "late"))
    assert dict(board.read().family("packages"))[(tally.OVERFLOW,)] == 101


def test_a_counter_keeps_its_place_and_adds_like_add() -> None:
    board = Board(1)
    slot = Tally(board, 0)
    key = ("requests", "/packages/{name}", 200, "HIT")
    slot.add(("packages", "alpha"))
    place = slot.counter(key)  # registered on first use, like add
    assert slot.counter(key) == place and slot.counter(("packages", "alpha")) != place
    slot.values[place] += 3
    slot.add(key, 2)
    assert slot.own(key) == 5 and board.read().value(*key) == 5
