"""Shared pieces of the fault and abuse suite: the proxy under test (in this process, or
``hexproxy serve`` as users start it), many clients at once, an upstream that can hold a
body half-way or lie about sizes, and an independent check of everything in the cache."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from hexproxy.registry import verify_package
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.support.keys import test_private_key
from tests.support.proxy_process import ProxyProcess, ProxyProcesses

CLIENTS = 200


@dataclass
class Served:
    """A proxy under test: built with ``create_app`` in this process (``process`` is None),
    or the real ``hexproxy serve`` in its own process, fast path on."""

    host: str
    port: int
    cache_dir: Path
    process: ProxyProcess | None = None
    cache: Any = None  # the in-process proxy's Cache (None for ``serve``)

    def make_url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    async def settle(self) -> None:
        """Wait (bounded) until the cache state is final (see ``settle``)."""
        if self.process is None:
            await settle(self.cache_dir)
            return
        # Another process: only what is visible from outside, its temp files.
        for _ in range(200):
            if not partial_files(self.cache_dir):
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"temp files left behind: {partial_files(self.cache_dir)}")


StartProxy = Callable[..., Awaitable[Served]]

# The in-process test config's upstream timeouts (tests/conftest.py), for ``serve`` too.
_TEST_SETTINGS = {
    "upstream__connect_timeout": 1.0,
    "upstream__read_timeout": 2.0,
    "upstream__stale_timeout": 0.5,
}


@pytest.fixture(params=["create_app", "serve"])
async def start_proxy(
    request: pytest.FixtureRequest,
    make_proxy: ProxyFactory,
    upstream: Upstream,
    tmp_path: Path,
    public_key_file: Path,
) -> AsyncIterator[StartProxy]:
    """``await start_proxy(upstream__url=url, cache__negative_ttl=0)``: a running proxy, once
    in this process and once as ``hexproxy serve`` (every process stopped at teardown)."""
    processes = ProxyProcesses(tmp_path / "proxies", public_key_file)

    async def start(**overrides: Any) -> Served:
        if request.param == "create_app":
            client = await make_proxy(**overrides)
            return Served(client.host, client.port, tmp_path / "cache", cache=client.app[CACHE])
        values = {**_TEST_SETTINGS, "upstream__builds_url": upstream.url, **overrides}
        url = values.pop("upstream__url", upstream.url)
        settings = {name.replace("__", "_").upper(): value for name, value in values.items()}
        cache_dir = tmp_path / "cache"
        process = await processes.start(url, cache_dir, **settings)
        return Served("127.0.0.1", process.port, cache_dir, process)

    try:
        yield start
    finally:
        await processes.stop_all()


@dataclass(frozen=True)
class Answer:
    status: int  # 0: the connection broke before any status line
    body: bytes | None  # None: the transfer broke part-way


async def get_many(
    url: str, count: int, *, seconds: float = 30.0, headers: Mapping[str, str] | None = None
) -> list[Answer]:
    """``count`` simultaneous GETs of ``url``, each on its own connection."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    client_timeout = aiohttp.ClientTimeout(total=seconds)
    async with aiohttp.ClientSession(
        connector=connector, timeout=client_timeout, auto_decompress=False
    ) as session:

        async def one() -> Answer:
            try:
                async with session.get(url, headers=headers) as resp:
                    try:
                        return Answer(resp.status, await resp.read())
                    except (aiohttp.ClientError, TimeoutError):
                        return Answer(resp.status, None)
            except (aiohttp.ClientError, TimeoutError):
                return Answer(0, None)

        return list(await asyncio.gather(*(one() for _ in range(count))))


def assert_never_wrong(answers: list[Answer], expected: bytes) -> None:
    """Each client got the exact bytes or an error or a broken transfer: never other bytes."""
    for answer in answers:
        if answer.status == 200 and answer.body is not None:
            assert answer.body == expected, (
                f"a client got {len(answer.body)} wrong bytes with status 200"
            )
        else:
            assert answer.status != 200 or answer.body is None


def cache_problems(cache_dir: Path, files: Mapping[str, bytes]) -> list[str]:
    """Everything stored that is not a verified copy of upstream's real file, re-checked
    here from scratch: tarballs against the sha256 signed in their package's registry
    entry, registry files against upstream's bytes and signature."""
    problems: list[str] = []
    public_key = test_private_key().public_key()
    for path in sorted(cache_dir.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(cache_dir).as_posix()
        if rel.endswith(".meta") or rel.startswith(("locks/", "tmp/", "state/")):
            continue
        if rel.startswith("tarballs/"):
            problems += _tarball_problems(rel, path.read_bytes(), files, public_key)
        elif rel.startswith("registry/"):
            upstream_path = rel.removeprefix("registry/")
            if files.get(upstream_path) != path.read_bytes():
                problems.append(f"{rel}: not upstream's registry file")
    return problems


def _tarball_problems(
    rel: str, body: bytes, files: Mapping[str, bytes], public_key: object
) -> list[str]:
    filename = rel.rsplit("/", 1)[-1]
    name, _, rest = filename.partition("-")
    version = rest.removesuffix(".tar")
    package = verify_package(
        files[f"packages/{name}"],
        public_key,  # type: ignore[arg-type]
        repository="hexpm",
        name=name,
        max_uncompressed=64 * 1024 * 1024,
    )
    release = package.release(version)
    if release is None or release.outer_checksum != hashlib.sha256(body).digest():
        return [f"{rel}: sha256 does not match the signed outer checksum"]
    return []


# Held for the life of the server, by design: the entry index's connection and the
# evictor's lock. Readers of stored objects are what must come and go.
LONG_LIVED = ("index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm", "evictor.lock")


def open_files_under(root: Path) -> list[str]:
    """Files under ``root`` this process holds open (the in-process proxy's readers)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if target.is_relative_to(root) and target.name not in LONG_LIVED:
            found.append(str(target))
    return found


def _serving() -> int:
    """Requests still being handled in this loop (proxy's and fake upstream's); idle
    keep-alive connections do not count. Test-only introspection of aiohttp."""
    busy = 0
    for task in asyncio.all_tasks():
        coro = task.get_coro()
        if getattr(coro, "__qualname__", "") != "RequestHandler.start":
            continue
        frame = getattr(coro, "cr_frame", None)
        handler = frame.f_locals.get("self") if frame is not None else None
        busy += bool(getattr(handler, "_request_in_progress", False))
    return busy


async def settle(cache_dir: Path) -> None:
    """Wait (bounded) until every request handler has returned, fetches that outlive
    their clients have cleaned up their temp files and every reader has closed its file:
    only then is the cache state final. (A handler can still be closing its reader after
    its client has all the bytes; tearing the server down then would cancel that.)"""
    for _ in range(200):
        if not _serving() and not partial_files(cache_dir) and not open_files_under(cache_dir):
            return
        await asyncio.sleep(0.025)
    raise AssertionError(
        f"left behind: {_serving()} handlers, temp files {partial_files(cache_dir)}, "
        f"open files {open_files_under(cache_dir)}"
    )


def partial_files(cache_dir: Path) -> list[str]:
    """Temp files that are still lying around (allowed only while a fetch runs)."""
    tmp = cache_dir / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


@dataclass
class ThrottledRepo:
    """An upstream that sends bodies in 64 KiB chunks, optionally without a length, and
    can serve arbitrary bytes at any path (``override``). Until ``hold`` (if given) is
    set, each body longer than one chunk stops after its first: a download under way."""

    files: dict[str, bytes]
    chunked: bool = False
    hold: asyncio.Event | None = None
    override: dict[str, bytes] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path.lstrip("/")
        self.counts[path] = self.counts.get(path, 0) + 1
        body = self.override.get(path, self.files.get(path))
        if body is None:
            return web.Response(status=404)
        response = web.StreamResponse(headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
        if not self.chunked:
            response.content_length = len(body)
        await response.prepare(request)
        step = 64 * 1024
        for start in range(0, len(body), step):  # bounded by the body size
            await response.write(body[start : start + step])
            self.sent[path] = self.sent.get(path, 0) + len(body[start : start + step])
            if self.hold is not None and start + step < len(body):
                await self.hold.wait()
        await response.write_eof()
        return response
