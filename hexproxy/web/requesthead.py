"""One HTTP grammar for the fast path and aiohttp: request heads, If-None-Match, Connection.

The fast path (fastpath.py) may answer a request only when aiohttp would have read it
the same way, so a head reaches it only after two checks:

1. llhttp, through httptools, accepts it. llhttp is the parser aiohttp's C extension
   runs, in the same strict mode aiohttp uses for requests (no lenient flags): bare LF,
   obs-fold, bad tokens, control bytes and bad lengths are errors there as here.
2. Rules at least as strict as the ones aiohttp adds on top of llhttp: its size limits
   (passed to aiohttp explicitly from ``AIOHTTP_LIMITS``, so both sides use the same
   numbers whatever the installed aiohttp's defaults), exactly one Host, no repeated
   singleton header, no NUL; and, stricter still, nothing unusual at all: only visible
   ASCII, CRLF line ends, GET or HEAD over HTTP/1.1, no body, no Transfer-Encoding,
   Expect or Upgrade, and a Connection header that is absent, ``close`` or ``keep-alive``.

Anything that fails either check is not an error here: it is aiohttp's to answer.
``etag_matches`` and ``connection_tokens`` are the one reading of those two headers, used
by the fast path and by the aiohttp handlers alike. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

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

# A plain head, checked before llhttp sees it: a request line of visible ASCII and spaces,
# then header lines "token:value" (no space before the colon, no obs-fold continuation
# line), values of visible ASCII, space and tab, every line ended by CRLF, then the empty
# line. These hold whatever the llhttp version.
_LINE = rb"[\x21-\x7e][\x20-\x7e]*\r\n"
_FIELD = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:[\t\x20-\x7e]*\r\n"
_PLAIN_HEAD = re.compile(_LINE + rb"(?:" + _FIELD + rb")*\r\n")
# What an unfinished plain head can look like so far: any prefix of the above.
_PLAIN_START = re.compile(
    rb"(?:" + _LINE + rb"(?:" + _FIELD + rb")*)?"
    rb"(?:[\x21-\x7e][\t\x20-\x7e]*|[!#$%&'*+.^_`|~0-9A-Za-z-]+)?\r?"
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
_KEEP_ALIVE_TOKENS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({"close"}),
    frozenset({"keep-alive"}),
)


@dataclass(frozen=True, slots=True)
class RequestHead:
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
    """Could ``data`` (no blank line yet) still become a head the fast path takes? When it
    cannot (bare LF line ends, binary, too long), aiohttp must see it now, not wait."""
    return len(data) <= MAX_HEAD and _PLAIN_START.fullmatch(data) is not None


class HeadReader:
    """Reads one connection's request heads with llhttp, then with the rules above.

    Fed one whole head at a time (up to and including its blank line), the parser ends
    each message exactly there and starts the next one clean; once a head is refused the
    connection belongs to aiohttp and this reader is dropped.
    """

    __slots__ = ("_complete", "_fields", "_parser", "_url")

    def __init__(self) -> None:
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._complete = False
        self._parser = httptools.HttpRequestParser(self)

    # llhttp's callbacks (httptools calls only the ones defined).
    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_message_complete(self) -> None:
        self._complete = True

    def read(self, head: bytes) -> RequestHead | None:
        """The request in ``head`` if the fast path may answer it, else None (aiohttp's)."""
        if len(head) > MAX_HEAD or _PLAIN_HEAD.fullmatch(head) is None:
            return None
        self._url, self._fields, self._complete = b"", [], False
        parser = self._parser
        try:
            parser.feed_data(head)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            return None  # malformed, or a protocol switch
        # Complete right at the blank line: no body follows, nothing was left unread.
        if not self._complete or parser.get_http_version() != "1.1":
            return None
        method = parser.get_method()
        if method != b"GET" and method != b"HEAD":
            return None
        return _judge(method, self._url, self._fields)


def _judge(method: bytes, target: bytes, fields: list[tuple[bytes, bytes]]) -> RequestHead | None:
    if len(fields) > MAX_HEADERS or not target.startswith(b"/"):
        return None  # too many headers, or not a plain path (absolute form, "*")
    seen: set[bytes] = set()
    if_none_match: list[str] = []
    connection: list[str] = []
    user_agent = b""
    for raw_name, value in fields:
        name = raw_name.lower()
        if name in _NOT_PLAIN_GET:
            return None
        if name in _SINGLETONS:
            if name in seen:
                return None
            seen.add(name)
        if name == b"if-none-match":
            if_none_match.append(value.decode("ascii"))
        elif name == b"connection":
            connection.append(value.decode("ascii"))
        elif name == b"user-agent":
            user_agent = value
    if b"host" not in seen:
        return None
    tokens = connection_tokens(connection) if connection else frozenset()
    if tokens not in _KEEP_ALIVE_TOKENS:
        return None  # upgrade, several options, unknown ones: aiohttp decides
    return RequestHead(method, target, tuple(if_none_match), "close" in tokens, user_agent)
