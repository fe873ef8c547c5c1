"""Per-object backoff and the negative cache: the memory that keeps a failing or missing
object from costing one upstream request per client request."""

from __future__ import annotations

from hexproxy.cache.backoff import Backoff, Negative
from hexproxy.errors import BadSignature, UpstreamTimeout
from hexproxy.store.cachekey import package_key

KEY = package_key("yew")


def test_interval_doubles_from_one_second_up_to_the_cap() -> None:
    backoff = Backoff(cap=30)
    now = 1000.0
    intervals = []
    for _ in range(7):
        failure = backoff.failed(KEY, BadSignature("bad signature"), now)
        intervals.append(failure.until - now)
        now = failure.until  # the next attempt, as soon as it is allowed
    assert intervals == [1, 2, 4, 8, 16, 30, 30]


def test_held_until_the_interval_ends_then_free() -> None:
    backoff = Backoff(cap=30)
    backoff.failed(KEY, UpstreamTimeout("upstream timed out for /packages/yew"), 100.0)
    held = backoff.holding(KEY, 100.5)
    assert held is not None
    assert held.reason == "upstream timed out for /packages/yew (backing off)"
    assert backoff.holding(KEY, 101.0) is None
    assert backoff.holding(package_key("oak"), 100.5) is None


def test_the_repeated_error_keeps_its_status_and_says_why() -> None:
    backoff = Backoff(cap=30)
    backoff.failed(KEY, UpstreamTimeout("upstream timed out for /packages/yew"), 0.0)
    held = backoff.holding(KEY, 0.1)
    assert held is not None
    again = held.again()
    assert again.http_status == 504
    assert again.message == "upstream timed out for /packages/yew (backing off)"


def test_success_and_long_quiet_start_over() -> None:
    backoff = Backoff(cap=8)
    for now in (0.0, 1.0, 3.0):
        backoff.failed(KEY, BadSignature("x"), now)
    backoff.succeeded(KEY)
    assert backoff.failed(KEY, BadSignature("x"), 10.0).until == 11.0
    backoff.failed(KEY, BadSignature("x"), 11.0)  # 2 s
    # Quiet for longer than the cap after the last interval ended: a first failure again.
    assert backoff.failed(KEY, BadSignature("x"), 30.0).until == 31.0


def test_a_cap_below_one_second_caps_the_first_interval_too() -> None:
    backoff = Backoff(cap=0.3)
    assert backoff.failed(KEY, BadSignature("x"), 0.0).until == 0.3


def test_memory_is_bounded() -> None:
    backoff = Backoff(cap=30, limit=100)
    negative = Negative(limit=100)
    for i in range(1000):
        backoff.failed(package_key(f"p{i}"), BadSignature("x"), 0.0)
        negative.add(package_key(f"p{i}"), 60.0)
    assert len(backoff) == 100 and len(negative) == 100
    # The newest are kept.
    assert backoff.holding(package_key("p999"), 0.5) is not None
    assert negative.active(package_key("p999"), 1.0)
    assert not negative.active(package_key("p0"), 1.0)


def test_negative_entries_expire() -> None:
    negative = Negative()
    negative.add(KEY, 60.0)
    assert negative.active(KEY, 59.9)
    assert not negative.active(KEY, 60.0)
    assert len(negative) == 0
