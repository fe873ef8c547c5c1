"""One HTTP grammar for the fast path and aiohttp: request heads, If-None-Match, Connection.

The fast path (fastpath.py) may answer a request only when aiohttp would have read it
the same way, so a head reaches it only after two checks:

1. llhttp, through httptools, accepts it: the parser aiohttp's C extension runs, in the
   same strict mode aiohttp uses for requests (no lenient flags), ending the message
   right at the head's blank line (no body follows).
2. Rules at least as strict as the ones aiohttp adds on top of llhttp: its size limits
   (passed to aiohttp explicitly from ``AIOHTTP_LIMITS``, so both sides use the same
   numbers whatever the installed aiohttp's defaults), exactly one Host, no repeated
   singleton header, no NUL; and, stricter still, nothing unusual at all, checked here
   whatever the llhttp version: only visible ASCII, CRLF line ends, no obs-fold, GET or
   HEAD of a plain path over HTTP/1.1, no body, no Transfer-Encoding, Expect or Upgrade,
   and a Connection header that is absent, ``close`` or ``keep-alive``.

Anything that fails either check is not an error here: it is aiohttp's to answer.
``etag_matches`` and ``connection_tokens`` are the one reading of those two headers, used
by the fast path and by the aiohttp handlers alike. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import NamedTuple

import httptools

# aiohttp's per-request limits (its defaults as of 3.10+), set on aiohttp explicitly.
MAX_LINE_SIZE = 8190  # the request line
MAX_FIELD_SIZE = 8190  # one header's name and value together
MAX_HEADERS = 128
AIOHTTP_LIMITS = {
    "max_line_size": MAX_LINE_SIZE,
    "max_field_size": MAX_FIELD_SIZE,
    "max_headers": MAX_HEADERS,
}

# The longest head the fast path reads, complete or not; a longer one goes to aiohttp,
# which applies the limits above (real clients send a few hundred bytes). Being no longer
# than either line limit, no line of a head this size can break them.
MAX_HEAD = min(MAX_LINE_SIZE, MAX_FIELD_SIZE)

# The heads the fast path takes, whatever the llhttp version: "GET" or "HEAD", a path of
# visible ASCII, "HTTP/1.1"; then header lines "token:value" with values of visible
# ASCII, space and tab (so no obs-fold continuation line, no control byte, nothing
# non-ASCII); every line ended by CRLF, then the empty line.
_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_FIELD = _TOKEN + rb"+:[\t\x20-\x7e]*\r\n"
_PLAIN_HEAD = re.compile(rb"(GET|HEAD) (/[\x21-\x7e]*) HTTP/1\.1\r\n((?:" + _FIELD + rb")*)\r\n")
# Any unfinished prefix of a plain head (of any method, version and target: what aiohttp
# will make of those is its own business): part of the request line, or the request line
# and whole header lines then part of one more (or the CR of the empty line).
_LINE = rb"[\x21-\x7e][\x20-\x7e]*\r\n"
_PLAIN_START = re.compile(
    rb"(?:" + _LINE + rb"(?:" + _FIELD + rb")*(?:" + _TOKEN + rb"+(?::[\t\x20-\x7e]*\r?)?|\r)?"
    rb"|[\x21-\x7e][\x20-\x7e]*\r?)?"
)

# aiohttp refuses a second copy of these (RFC 9110 singletons).
_SINGLETONS = frozenset(
    {
        b"content-length",
        b"content-location",
        b"content-range",
        b"content-type",
        b"etag",
        b"host",
        b"max-forwards",
        b"server",
        b"transfer-encoding",
        b"user-agent",
    }
)
# A body, or a protocol switch: never the fast path's.
_NOT_PLAIN_GET = frozenset(
    {
        b"content-length",
        b"transfer-encoding",
        b"expect",
        b"upgrade",
        b"http2-settings",
        b"sec-websocket-key",
        b"sec-websocket-key1",
        b"sec-websocket-key2",
    }
)
_WATCHED = _SINGLETONS | _NOT_PLAIN_GET | {b"if-none-match", b"connection"}
_KEEP_ALIVE_TOKENS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"close"}),
    frozenset({"keep-alive"}),
)


class RequestHead(NamedTuple):  # a tuple: built for every request the fast path answers
    """A plain GET or HEAD the fast path may answer."""

    method: bytes  # b"GET" or b"HEAD"
    target: bytes
    if_none_match: tuple[str, ...]  # every If-None-Match field line
    close: bool  # Connection: close
    user_agent: bytes


def etag_matches(if_none_match: Iterable[str], etag: str) -> bool:
    """Does the client already hold ``etag``? ``if_none_match`` is every If-None-Match field
    line of the request: together they are one comma-separated list (RFC 9110 5.3), compared
    weakly (13.1.2). ``*`` matches; an empty field (rebar3, cold) names nothing."""
    for field in if_none_match:
        for candidate in field.split(","):
            value = candidate.strip()
            if value == "*" or value.removeprefix("W/") == etag:
                return True
    return False


def connection_tokens(connection: Iterable[str]) -> frozenset[str]:
    """The options of every Connection field line, lowercased (RFC 9110 7.6.1): whole
    comma-separated tokens, so ``x-not-close`` is not ``close``."""
    parts = (part.strip().lower() for field in connection for part in field.split(","))
    return frozenset(part for part in parts if part)


def plain_start(data: bytes) -> bool:
    """Is ``data``, a head not finished yet, plain so far, with nothing aiohttp would refuse
    already? If not (bare LF line ends, binary, too long, a bad token...), aiohttp must have
    it now, with any complete request before it in the same read: aiohttp would answer that
    read with one 400 (llhttp reports most errors at the first bad byte)."""
    if not data:
        return True
    if len(data) > MAX_HEAD or _PLAIN_START.fullmatch(data) is None:
        return False
    try:  # a parser of its own: the connection's is fed whole heads only
        httptools.HttpRequestParser(_Ignore()).feed_data(data)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return False
    whole_lines = data.split(b"\r\n")[1:-1]  # past the request line, before the unfinished
    return _judge_fields(whole_lines) is not None


class _Ignore:
    """llhttp callbacks: none."""


class HeadReader:
    """Reads one connection's request heads: llhttp must accept each one, then the rules
    above decide; what the answer needs is taken from the plain head llhttp accepted.

    Fed one whole head at a time (up to and including its blank line), the parser ends
    each message exactly there and starts the next one clean; once a head is refused the
    connection belongs to aiohttp and this reader is dropped.
    """

    __slots__ = ("_complete", "_parser")

    def __init__(self) -> None:
        self._complete = False
        self._parser = httptools.HttpRequestParser(self)  # calls only the callbacks defined

    def on_message_complete(self) -> None:
        self._complete = True

    def read(self, head: bytes) -> RequestHead | None:
        """The request in ``head`` if the fast path may answer it, else None (aiohttp's)."""
        # Runs for every request the fast path answers: one regex, llhttp, one pass over
        # the header lines.
        plain = _PLAIN_HEAD.fullmatch(head) if len(head) <= MAX_HEAD else None
        if plain is None:
            return None
        self._complete = False
        try:
            self._parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None  # malformed, or a protocol switch
        if not self._complete:  # llhttp does not end the message here: a body follows
            return None
        method, target, block = plain.groups()
        fields = _judge_fields(block.split(b"\r\n")[:-1])
        if fields is None or not fields[3]:
            return None  # unusual headers, or no Host
        if_none_match, connection, user_agent, _ = fields
        close = False
        if connection:
            tokens = connection_tokens(connection)
            if tokens not in _KEEP_ALIVE_TOKENS:
                return None  # upgrade, several options, unknown ones: aiohttp decides
            close = "close" in tokens
        # tuple.__new__ rather than RequestHead(...): the same tuple, built in C.
        return tuple.__new__(RequestHead, (method, target, if_none_match, close, user_agent))


def _judge_fields(lines: list[bytes]) -> tuple[tuple[str, ...], list[str], bytes, bool] | None:
    """Header lines ("Name:value", plain): If-None-Match, Connection, User-Agent and
    whether Host was there; None if aiohttp refuses them (too many, a singleton twice) or
    they ask for a body or a protocol switch."""
    if len(lines) > MAX_HEADERS:
        return None
    seen: set[bytes] = set()
    if_none_match: list[str] = []
    connection: list[str] = []
    user_agent = b""
    for line in lines:
        raw_name, _, value = line.partition(b":")
        name = raw_name.lower()
        if name not in _WATCHED:
            continue  # Accept, TE...: the common case, one set lookup
        if name in _NOT_PLAIN_GET or name in seen:
            return None
        if name in _SINGLETONS:
            seen.add(name)
        if name == b"if-none-match":
            if_none_match.append(value.strip(b" \t").decode("ascii"))
        elif name == b"connection":
            connection.append(value.strip(b" \t").decode("ascii"))
        elif name == b"user-agent":
            user_agent = value.strip(b" \t")
    return tuple(if_none_match) if if_none_match else (), connection, user_agent, b"host" in seen
