"""The fast path's reading of request heads, and the one reading of If-None-Match and
Connection (tests/faults/test_request_grammar.py checks them against aiohttp itself)."""

from __future__ import annotations

import pytest

from hexproxy.web.requesthead import (
    MAX_HEAD,
    MAX_HEADERS,
    HeadReader,
    RequestHead,
    connection_tokens,
    etag_matches,
    plain_start,
)

ETAG = '"abc"'


@pytest.mark.parametrize(
    ("fields", "matches"),
    [
        ([], False),
        ([""], False),  # rebar3's empty header when it holds nothing
        ([ETAG], True),
        ([f"W/{ETAG}"], True),  # weak comparison
        (['"x", "abc"'], True),
        (['"x"', ETAG], True),  # two field lines are one list
        ([ETAG, '"x"'], True),
        (['"x"', '"y"'], False),
        (["*"], True),
        (['"abcd"'], False),
        (["abc"], False),  # unquoted is not the same tag
    ],
)
def test_etag_matches(fields: list[str], matches: bool) -> None:
    assert etag_matches(fields, ETAG) is matches


@pytest.mark.parametrize(
    ("fields", "tokens"),
    [
        ([], set()),
        (["close"], {"close"}),
        (["Close"], {"close"}),
        (["x-not-close"], {"x-not-close"}),
        (["keep-alive, close"], {"keep-alive", "close"}),
        (["keep-alive", " Close "], {"keep-alive", "close"}),
        ([" , ,close,"], {"close"}),
    ],
)
def test_connection_tokens(fields: list[str], tokens: set[str]) -> None:
    assert connection_tokens(fields) == tokens


def head(*lines: str, request: str = "GET /packages/plug HTTP/1.1") -> bytes:
    return ("\r\n".join([request, *lines]) + "\r\n\r\n").encode("latin-1")


def test_a_plain_get_is_read() -> None:
    read = HeadReader().read(
        head("Host: x", 'If-None-Match: "a"', "User-Agent: rebar/3.24", 'If-None-Match: "b"')
    )
    assert read == RequestHead(b"GET", b"/packages/plug", ('"a"', '"b"'), False, b"rebar/3.24")


@pytest.mark.parametrize(
    ("connection", "close"), [("close", True), ("CLOSE", True), ("keep-alive", False)]
)
def test_connection_close_and_keep_alive(connection: str, close: bool) -> None:
    read = HeadReader().read(head("Host: x", f"Connection: {connection}"))
    assert read is not None and read.close is close


def test_one_reader_reads_a_connections_heads_in_turn() -> None:
    reader = HeadReader()
    for path in ("/names", "/versions", "/packages/a"):
        read = reader.read(head("Host: x", request=f"HEAD {path} HTTP/1.1"))
        assert read is not None and read.target == path.encode() and read.method == b"HEAD"


REFUSED = {
    "HTTP/1.0": head("Host: x", request="GET / HTTP/1.0"),
    "POST": head("Host: x", "Content-Length: 0", request="POST / HTTP/1.1"),
    "lowercase method": head("Host: x", request="get / HTTP/1.1"),
    "no Host": head("Accept: */*"),
    "two Hosts": head("Host: x", "Host: x"),
    "two User-Agents": head("Host: x", "User-Agent: a", "User-Agent: a"),
    "Content-Length": head("Host: x", "Content-Length: 0"),
    "Transfer-Encoding": head("Host: x", "Transfer-Encoding: chunked"),
    "Expect": head("Host: x", "Expect: 100-continue"),
    "Upgrade": head("Host: x", "Connection: upgrade", "Upgrade: websocket"),
    "Connection x-not-close": head("Host: x", "Connection: x-not-close"),
    "Connection with two options": head("Host: x", "Connection: keep-alive, close"),
    "bare LF in a value": b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\nContent-Length: 4\r\n\r\n",
    "bare LF line ends": b"GET / HTTP/1.1\nHost: x\n\r\n\r\n",
    "bare CR": b"GET / HTTP/1.1\r\nHost: x\rY\r\n\r\n",
    "NUL in a name": b"GET / HTTP/1.1\r\nHost: x\r\nX\x00A: 1\r\n\r\n",
    "paren in a name": head("Host: x", "X(A: 1"),
    "space before the colon": head("Host : x"),
    "control byte in a value": head("Host: x", "X-A: a\x01b"),
    "obs-text in a value": head("Host: x", "X-A: \xe9"),
    "obs-fold": head("Host: x", "X-A: a", " b"),
    "too many headers": head("Host: x", *(f"X-{i}: v" for i in range(MAX_HEADERS))),
    "head over MAX_HEAD": head("Host: x", "X-A: " + "a" * MAX_HEAD),
    "absolute form": head("Host: x", request="GET http://x/packages/plug HTTP/1.1"),
    "leading empty line": b"\r\n" + head("Host: x"),
}


@pytest.mark.parametrize("what", sorted(REFUSED))
def test_anything_unusual_is_left_to_aiohttp(what: str) -> None:
    assert HeadReader().read(REFUSED[what]) is None


def test_the_longest_head_taken_is_max_head() -> None:
    longest = head("Host: x", "X-A: ")
    longest = head("Host: x", "X-A: " + "a" * (MAX_HEAD - len(longest)))
    assert len(longest) == MAX_HEAD
    assert HeadReader().read(longest) is not None
    assert HeadReader().read(longest.replace(b"X-A: ", b"X-A: a")) is None


def test_plain_start_waits_only_for_what_could_still_be_taken() -> None:
    full = head("Host: x", 'If-None-Match: "a"')
    assert all(plain_start(full[:end]) for end in range(len(full) - 1))
    for unfinished in (
        b"GET / HTTP/1.1\nHost: x\n",  # bare LF line ends: aiohttp answers now
        b"GET / HTTP/1.1\r\nHost : x\r\n",
        b"GET / HTTP/1.1\r\nX-A: a\r\n b",
        b"\x16\x03\x01\x02\x00",  # TLS to a plain-HTTP port
        b"GET /" + b"a" * MAX_HEAD,
        b"get / HTTP/1.1\r\n",  # llhttp refuses at the first byte: so does aiohttp, at once
        b"GET / HTTP/1.1X",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\nAcc",
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\nAcc",
        b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * (MAX_HEADERS + 1),
    ):
        assert not plain_start(unfinished), unfinished
