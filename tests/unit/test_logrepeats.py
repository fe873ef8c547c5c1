"""Repeated log lines are aggregated: one line per interval with a count."""

from __future__ import annotations

import asyncio
import logging

from hexproxy.web.logrepeats import Repeats
from tests.support.clock import Clock


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger("hexproxy.test.repeats")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_repeats_within_an_interval_become_one_line_with_a_count() -> None:
    sink, clock = Collect(), Clock(0.0)
    log = _logger(Repeats(sink, interval=10, clock=clock))
    for _ in range(413):
        log.info("serving stale %s: %s", "/packages/yew", "upstream answered 500")
        clock.advance(0.01)
    log.warning("another line")
    assert sink.lines == [
        "INFO serving stale /packages/yew: upstream answered 500",
        "WARNING another line",
    ]
    clock.advance(10)
    # The next repeat, after the interval: the count so far goes out, this one is counted.
    log.info("serving stale %s: %s", "/packages/yew", "upstream answered 500")
    assert sink.lines[2:] == [
        "INFO serving stale /packages/yew: upstream answered 500 (x412 in the last 14 s)"
    ]


def test_a_steady_stream_costs_one_line_per_interval() -> None:
    sink, clock = Collect(), Clock(0.0)
    handler = Repeats(sink, interval=10, clock=clock)
    log = _logger(handler)
    for _ in range(6000):  # 60 s at 100 lines a second
        log.warning("GET /tarballs/big-1.1.0.tar: upstream timed out")
        clock.advance(0.01)
    handler.close()
    assert 6 <= len(sink.lines) <= 8
    assert all(line.startswith("WARNING GET /tarballs/big-1.1.0.tar") for line in sink.lines)
    # Every line is accounted for: the first, then the counts.
    assert 1 + sum(int(line.rsplit("(x", 1)[1].split()[0]) for line in sink.lines[1:]) == 6000


def test_one_reason_for_many_objects_is_one_line_and_other_reasons_stay_apart() -> None:
    sink, clock = Collect(), Clock(0.0)
    handler = Repeats(sink, interval=10, clock=clock)
    log = _logger(handler)
    for name in ("yew", "oak", "yew", "elm", "oak"):
        log.info("serving stale /packages/%s: upstream paused after repeated failures", name)
        log.warning("GET /tarballs/%s-1.0.0.tar: upstream answered 500", name)
    log.info("serving stale /packages/yew: registry signature does not verify")
    clock.advance(10)
    handler.close()
    assert sink.lines == [
        "INFO serving stale /packages/yew: upstream paused after repeated failures",
        "WARNING GET /tarballs/yew-1.0.0.tar: upstream answered 500",
        "INFO serving stale /packages/yew: registry signature does not verify",
        "INFO serving stale /packages/oak: upstream paused after repeated failures"
        " (x4 in the last 10 s, 3 objects)",
        "WARNING GET /tarballs/oak-1.0.0.tar: upstream answered 500"
        " (x4 in the last 10 s, 3 objects)",
    ]


def test_close_reports_what_is_still_counted() -> None:
    sink, clock = Collect(), Clock(0.0)
    handler = Repeats(sink, interval=10, clock=clock)
    log = _logger(handler)
    for _ in range(3):
        log.error("verification failed for /packages/yew: bad signature")
    clock.advance(2)
    handler.close()
    assert sink.lines == [
        "ERROR verification failed for /packages/yew: bad signature",
        "ERROR verification failed for /packages/yew: bad signature (x2 in the last 2 s)",
    ]


async def test_a_timer_reports_lines_that_stopped_repeating() -> None:
    sink = Collect()
    handler = Repeats(sink, interval=0.05)
    log = _logger(handler)
    for _ in range(5):
        log.info("upstream paused")
    for _ in range(200):  # bounded wait for the loop's timer
        if len(sink.lines) == 2:
            break
        await asyncio.sleep(0.01)
    assert sink.lines[0] == "INFO upstream paused"
    assert sink.lines[1].startswith("INFO upstream paused (x4 in the last ")
    handler.close()
