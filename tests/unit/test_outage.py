"""Outage: one failure remembered for ttl seconds of the given clock; logged on change only."""

from __future__ import annotations

import logging

import pytest

from hexproxy.cache.outage import Outage


def test_a_failure_is_remembered_for_ttl_then_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    now = [1000.0]
    outage = Outage("builds host http://b", 60, lambda: now[0])
    assert outage.remembered() is None
    caplog.set_level(logging.INFO, "hexproxy.outage")
    outage.failed("refused", "answering 404")
    assert outage.remembered() == "refused"
    now[0] += 59.9
    assert outage.remembered() == "refused"
    now[0] += 0.1
    assert outage.remembered() is None  # time to try again
    outage.failed("refused again", "answering 404")  # still down: no second warning
    assert outage.remembered() == "refused again"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "builds host http://b cannot be reached (refused): answering 404"
    ]
    outage.answered()
    assert outage.remembered() is None
    assert caplog.records[-1].getMessage() == "builds host http://b answers again"
    outage.failed("reset", "answering 404")  # down again after being up: said again
    assert caplog.records[-1].levelno == logging.WARNING


def test_an_answer_while_up_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "hexproxy.outage")
    outage = Outage("builds host", 60, lambda: 0.0)
    outage.answered()
    assert caplog.records == []
