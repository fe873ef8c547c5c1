"""Access lines carry the same timestamp, milliseconds included, as the other log lines."""

from __future__ import annotations

import io
import json
import re

from hexproxy.web.accesslog import AccessLog, _milliseconds

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"


def logged(log: AccessLog) -> list[str]:
    log.line("127.0.0.1", "GET", "/packages/plug", 200, "HIT", 3821, 0.00041, "rebar3/3.19")
    log.flush()
    assert isinstance(log.stream, io.StringIO)
    return log.stream.getvalue().splitlines()


def test_text_line_has_milliseconds() -> None:
    (line,) = logged(AccessLog(io.StringIO()))
    expected = (
        rf'{STAMP} INFO hexproxy\.access: 127\.0\.0\.1 "GET /packages/plug" 200 HIT 3821B 0\.4ms'
    )
    assert re.fullmatch(expected, line), line


def test_json_time_has_milliseconds() -> None:
    (line,) = logged(AccessLog(io.StringIO(), json_format=True))
    record = json.loads(line)
    assert re.fullmatch(STAMP, record["time"]), record
    assert (record["path"], record["duration_ms"]) == ("/packages/plug", 0.41)


def test_durations_read_as_the_format_would_write_them() -> None:
    """Milliseconds come from a table below 10 ms; the text is what ``:.1f`` writes, but
    for halves, which may round the other way (a log's precision)."""
    for micros in range(0, 12_000, 7):
        seconds = micros / 1e6
        mine, exact = _milliseconds(seconds), f"{seconds * 1000:.1f}"
        assert abs(float(mine) - float(exact)) <= 0.1 + 1e-9, seconds
        assert mine == exact or micros % 100 == 50, seconds
