"""One HTTP grammar: ``hexproxy serve`` answers every request head the same with its fast
path on as with it off (aiohttp alone), status and body, over raw sockets.

Two real proxies run side by side on one fake upstream, both warmed the same way, so the
fast path could answer the cached objects: ``fast`` (the default) and ``plain``
(``server.fast_path = false``). Each request is sent on a fresh connection to each,
followed by one more request with ``Connection: close``, and every answer up to the
close is compared: a disagreement about where a request ends shows as a different
sequence of answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import small_tree
from tests.fakes.hex_repo import FakeHexRepo
from tests.support.keys import test_private_key
from tests.support.proxy_process import ProxyProcess, ProxyProcesses
from tests.support.repo import build_repo

pytestmark = pytest.mark.asyncio(loop_scope="module")

HANG_GUARD = 10.0  # seconds; a hang is a finding, not a wait
CLOSE = b"GET /packages/beta HTTP/1.1\r\nHost: end\r\nConnection: close\r\n\r\n"
CACHED = ("/packages/alpha", "/packages/beta", "/names", "/tarballs/gamma-0.1.0.tar")


FILES = build_repo(small_tree(), test_private_key())


def etag_of(path: str) -> str:
    return '"' + hashlib.sha256(FILES[path.lstrip("/")]).hexdigest() + '"'


@dataclass
class Pair:
    fast: ProxyProcess
    plain: ProxyProcess

    @property
    def files(self) -> dict[str, bytes]:  # not a field: hypothesis prints its arguments
        return FILES

    def etag(self, path: str) -> str:
        return etag_of(path)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(
    tmp_path_factory: pytest.TempPathFactory, public_key_file: Path
) -> AsyncIterator[Pair]:
    files = FILES
    upstream = TestServer(FakeHexRepo(dict(files)).app(), host="127.0.0.1")
    await upstream.start_server()
    url = str(upstream.make_url("")).rstrip("/")
    workdir = tmp_path_factory.mktemp("grammar")
    processes = ProxyProcesses(workdir, public_key_file)
    try:
        common = {"UPSTREAM_BUILDS_URL": url, "CACHE_REGISTRY_TTL": "1h"}
        fast = await processes.start(url, workdir / "cache-fast", **common)
        plain = await processes.start(
            url, workdir / "cache-plain", SERVER_FAST_PATH="false", **common
        )
        for proxy in (fast, plain):
            for path in CACHED * 2:  # stored, then known to this process
                answers = await exchange(proxy, get(path))
                assert answers and answers[0][0] == 200, (path, answers)
        yield Pair(fast, plain)
    finally:
        await processes.stop_all()
        await upstream.close()


def get(path: str, *fields: str, close: bool = True) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x", *fields]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


Answer = tuple[int, bytes]  # status (-1: an unfinished answer, 0: reset), body


async def exchange(proxy: ProxyProcess, payload: bytes) -> list[Answer]:
    """Send ``payload`` on a new connection; every answer until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    received = bytearray()
    reset = False
    try:
        writer.write(payload)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(HANG_GUARD):
            while chunk := await reader.read(65536):
                received += chunk
    except ConnectionResetError:
        reset = True
    except TimeoutError:
        raise AssertionError(f"no close within {HANG_GUARD} s: {bytes(received[:300])!r}") from None
    finally:
        writer.transport.abort()
    answers = parse_answers(bytes(received))
    return [*answers, (0, b"")] if reset else answers


def parse_answers(data: bytes) -> list[Answer]:
    answers: list[Answer] = []
    while data:
        head, blank, rest = data.partition(b"\r\n\r\n")
        if not blank:
            return [*answers, (-1, data)]
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        fields = dict(line.lower().split(b": ", 1) for line in lines[1:])
        length = int(fields.get(b"content-length", b"0"))
        if rest.startswith(b"HTTP/1.") or status == 304:
            length = 0  # an answer to HEAD: the length is the GET's
        answers.append((status, rest[:length]))
        data = rest[length:]
    return answers


async def both(pair: Pair, payload: bytes) -> list[Answer]:
    """The answers, after checking the two proxies agree on them."""
    fast = await exchange(pair.fast, payload)
    plain = await exchange(pair.plain, payload)
    assert summary(fast) == summary(plain), payload[:400]
    assert fast == plain, payload[:400]
    return fast


def summary(answers: list[Answer]) -> list[tuple[int, int]]:
    return [(status, len(body)) for status, body in answers]


# ----- the hostile requests the issue lists, and their neighbours -----

SMUGGLED = b"GET /packages/beta HTTP/1.1\r\nHost: xyzxy\r\n\r\n"  # 44 bytes
assert len(SMUGGLED) == 44
_AIOHTTP = tuple(int(part) for part in aiohttp.__version__.split(".")[:2])
HOSTILE: dict[str, tuple[bytes, list[int]]] = {
    # A bare LF inside a value: a "second header" only to a lax parser, followed by the
    # 44 bytes it would read as a body. aiohttp refuses the head; so must the fast path.
    "bare-LF-in-value-then-smuggled": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nX-A: a\nContent-Length: 44\r\n\r\n" + SMUGGLED,
        [400],
    ),
    "NUL-in-header-name": (b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nX\x00A: 1\r\n\r\n", [400]),
    "paren-in-header-name": (b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nX(A: 1\r\n\r\n", [400]),
    "control-byte-in-value": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n",
        [400],
    ),
    "NUL-in-value": (b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", [400]),
    # aiohttp refuses it from 3.14; 3.13 answers it. The fast path leaves it to aiohttp
    # either way (checked below whatever aiohttp says: both sides must agree).
    "no-Host": (b"GET /packages/alpha HTTP/1.1\r\n\r\n", [400] if _AIOHTTP >= (3, 14) else []),
    "two-Hosts": (b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", [400]),
    "64KB-header-line": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024) + b"\r\n\r\n",
        [400],
    ),
    "10000-headers-in-one-read": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(10_000))
        + b"\r\n",
        [400],
    ),
    "129-headers": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(128))
        + b"\r\n",
        [400],
    ),
    "bare-LF-line-endings": (b"GET /packages/alpha HTTP/1.1\nHost: x\n\n", [400]),
    "bare-CR-line-endings": (b"GET /packages/alpha HTTP/1.1\rHost: x\r\r", [400]),
    "obs-fold": (b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", [400]),
    "space-before-colon": (b"GET /packages/alpha HTTP/1.1\r\nHost : x\r\n\r\n", [400]),
    "chunked-GET": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [200, 200],
    ),
    "odd-Transfer-Encoding": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        [400],
    ),
    "Content-Length-and-chunked": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [400],
    ),
    # A read holding a good request then a bad one: aiohttp answers only the 400.
    "good-then-garbage-in-one-read": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\n\r\n0\r\n\r\n",
        [400],
    ),
    "good-then-the-start-of-a-bad-one": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\n\r\nGET /packages/beta HTTP/1.1\r\nHost : x",
        [400],
    ),
    "close-then-more": (
        b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        [400],
    ),
    # No keep-alive in 1.0: llhttp calls anything after it an error.
    "HTTP/1.0-then-more": (b"GET /packages/alpha HTTP/1.0\r\n\r\n", [400]),
    "binary-garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", [400]),
}


@pytest.mark.parametrize("what", sorted(HOSTILE))
async def test_hostile_request_gets_aiohttps_answer(pair: Pair, what: str) -> None:
    payload, statuses = HOSTILE[what]
    answers = await both(pair, payload + CLOSE)
    assert [status for status, _ in answers][: len(statuses)] == statuses, answers
    if statuses == [400] and not what.endswith("-then-more"):
        # Alone, too: refused at once and closed, never held waiting for more bytes.
        assert [status for status, _ in await both(pair, payload)] == [400]


async def test_two_if_none_match_headers_are_one_list(pair: Pair) -> None:
    etag = pair.etag("/packages/alpha")
    for fields in ([f"If-None-Match: {etag}", 'If-None-Match: "other"'],
                   ['If-None-Match: "other"', f"If-None-Match: {etag}"]):  # fmt: skip
        (answer,) = await both(pair, get("/packages/alpha", *fields))
        assert answer == (304, b""), fields
    (answer,) = await both(pair, get("/packages/alpha", 'If-None-Match: "a"', "If-None-Match: "))
    assert answer == (200, pair.files["packages/alpha"])


async def test_connection_x_not_close_keeps_the_connection(pair: Pair) -> None:
    payload = get("/packages/alpha", "Connection: x-not-close", close=False) + CLOSE
    answers = await both(pair, payload)
    assert answers == [
        (200, pair.files["packages/alpha"]),
        (200, pair.files["packages/beta"]),
    ]


@pytest.mark.parametrize("path", CACHED)
async def test_plain_hits_and_pipelines_agree(pair: Pair, path: str) -> None:
    """Not vacuous: the fast path does answer these (its Server header says so)."""
    payload = get(path, close=False) + b"HEAD " + get(path)[4:]
    answers = await both(pair, payload)
    assert answers == [(200, pair.files[path.lstrip("/")]), (200, b"")]
    assert b"\r\nServer: hexproxy\r\n" in await raw_head(pair.fast, get(path))
    assert b"\r\nServer: hexproxy\r\n" not in await raw_head(pair.plain, get(path))


async def raw_head(proxy: ProxyProcess, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_GUARD)
    finally:
        writer.transport.abort()


# ----- generated heads -----

TOKENS = ["Host", "host", "If-None-Match", "Connection", "User-Agent", "Accept", "X-A",
          "Content-Length", "Transfer-Encoding", "Expect", "Upgrade", "Content-Type"]  # fmt: skip
VALUES = ["x", "", "*", '"nope"', "close", "keep-alive", "x-not-close", "close, x",
          "Keep-Alive", "upgrade", "chunked", "0", "3", "-1", "1,1", "100-continue",
          "h2c", "a\x01b", "a\x00b", "\xe9", "a\tb", "  x  "]  # fmt: skip
ENDS = [b"\r\n"] * 12 + [b"\n", b"\r", b"\r\r\n", b" \r\n"]


@st.composite
def heads(draw: st.DrawFn, etag: str) -> bytes:
    """Mostly well-formed request heads, with every kind of damage mixed in."""
    method = draw(st.sampled_from([b"GET"] * 6 + [b"HEAD", b"POST", b"get", b"G\x00T", b""]))
    target = draw(
        st.sampled_from(
            [*(p.encode() for p in CACHED)] * 3
            + [
                b"/packages/nope",
                b"/packages/alpha?x=1",
                b"/packages/%61lpha",
                b"//packages/alpha",
                b"http://x/packages/alpha",
                b"/packages/alpha#f",
                b"*",
                b"/packages/Alpha",
                b"/tarballs/gamma-9.9.9.tar",
                b"/public_key",
                b"/packages/al pha",
            ]
        )
    )
    version = draw(st.sampled_from([b"HTTP/1.1"] * 6 + [b"HTTP/1.0", b"HTTP/1.2", b"http/1.1"]))
    name = st.sampled_from([t.encode() for t in TOKENS]) | st.binary(min_size=1, max_size=6)
    value = (
        st.sampled_from([v.encode("latin-1") for v in VALUES])
        | st.just(etag.encode())
        | st.just(b"W/" + etag.encode())
        | st.binary(max_size=12)
    )
    colon = st.sampled_from([b": ", b": ", b":", b" : ", b":\t"])
    fields = draw(st.lists(st.tuples(name, colon, value, st.sampled_from(ENDS)), max_size=6))
    head = method + b" " + target + b" " + version + draw(st.sampled_from(ENDS))
    if draw(st.booleans()) or not fields:
        head += b"Host: x\r\n"
    head += b"".join(n + c + v + e for n, c, v, e in fields)
    return head + draw(st.sampled_from(ENDS))


def _with_hostile_examples(test: Any) -> Any:
    """The hostile cases above (but the huge ones), tried before anything generated."""
    for payload, _ in HOSTILE.values():
        if len(payload) < 4096:
            test = example(head=payload, trailer=b"")(test)
    return test


@pytest.mark.slow
@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    head=heads(etag_of("packages/alpha")),
    trailer=st.sampled_from([b"", SMUGGLED, b"0\r\n\r\n", b"xyz"]),
)
@_with_hostile_examples
async def test_fast_path_on_and_off_answer_alike(pair: Pair, head: bytes, trailer: bytes) -> None:
    await both(pair, head + trailer + CLOSE)
