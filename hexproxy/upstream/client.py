"""The one HTTP client that talks to upstream (repo.hex.pm, builds.hex.pm or a mirror).

It turns every way a request can fail into the typed errors of ``errors.py``
and reports each outcome to the circuit breaker of the host it went to, so the
policy layer only ever sees "an answer" or "upstream could not answer, and why".

Each upstream host has its own breaker: the repository (``url``), the builds
host (``builds_url``, the ``/installs/*`` files), hex.pm organizations
(``/repos/ORG/...`` under ``url``: hex.pm authorizes those through its API, which
can fail while public files keep flowing) and the API (``api_url``, the few calls
mix makes for organization keys) fail independently; a builds host that a
locked-down network never reaches must not pause package fetches.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from .. import __version__
from ..config import UpstreamConfig
from ..errors import (
    CircuitOpen,
    HexproxyError,
    NotFound,
    TooLarge,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..store.cachekey import CacheKey, Kind
from .breaker import CircuitBreaker, State

USER_AGENT = f"hexproxy/{__version__} (+https://github.com/hexproxy/hexproxy)"

log = logging.getLogger("hexproxy.upstream")


class Observer(Protocol):
    """Told about every exchange with upstream (for metrics); must be cheap and not raise."""

    def answered(self, key: CacheKey, status: int, seconds: float) -> None: ...

    def failed(self, error: UpstreamError) -> None: ...


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int  # 200, 304 or 404
    body: bytes
    etag: str | None
    last_modified: str | None
    decoded: object | None = None  # what the caller's check made of a 200 body


def client_timeout(config: UpstreamConfig) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=config.total_timeout,
        sock_connect=config.connect_timeout,
        sock_read=config.read_timeout,
    )


def new_session(config: UpstreamConfig) -> aiohttp.ClientSession:
    """One session per process; bodies are read raw (registry files stay gzip bytes)."""
    return aiohttp.ClientSession(
        timeout=client_timeout(config),
        auto_decompress=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        # The proxy never acts on proxy settings from its own environment
        # implicitly: an upstream is a direct URL unless configured otherwise.
        trust_env=False,
        # One session serves every client: a cookie set in an answer to one client's
        # credential must never ride along with another client's request.
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@dataclass(frozen=True, slots=True)
class Sent:
    """A whole answer to ``Upstream.send``."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class Host:
    """One upstream host: where its objects live, and its own circuit breaker."""

    name: str  # "repository", "builds", "orgs", "api": what /ready and metrics show
    url: str
    breaker: CircuitBreaker

    @property
    def shown_url(self) -> str:
        """The URL for logs and pages: without any ``user:password@`` it may carry."""
        parts = urlsplit(self.url)
        if "@" not in parts.netloc:
            return self.url
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class Upstream:
    def __init__(self, config: UpstreamConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config

        def breaker() -> CircuitBreaker:
            return CircuitBreaker(config.failure_threshold, config.retry_after, clock)

        self.repository = Host("repository", config.url, breaker())
        self.builds = Host("builds", config.builds_url, breaker())
        self.orgs = Host("orgs", config.url, breaker())
        self.api = Host("api", config.api_url, breaker())
        self.hosts = (self.repository, self.builds, self.orgs, self.api)
        self._session: aiohttp.ClientSession | None = None
        self.observer: Observer | None = None

    async def start(self) -> None:
        """Open the connection pool; it needs the running loop, so not in __init__."""
        if self._session is None:
            self._session = new_session(self.config)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Upstream.start() was not awaited")
        return self._session

    def host_for(self, key: CacheKey) -> Host:
        if key.org:
            return self.orgs
        return self.builds if key.kind is Kind.INSTALL else self.repository

    def breaker_for(self, key: CacheKey) -> CircuitBreaker:
        return self.host_for(key).breaker

    def url_for(self, key: CacheKey) -> str:
        return self.host_for(key).url.rstrip("/") + key.upstream_path

    @staticmethod
    def _admit(host: Host) -> None:
        if not host.breaker.allow():
            # Nothing about the last error: it concerns another object, and this text
            # reaches the client and the log for this one (and must not vary, so that
            # the log can aggregate it). The pause itself is logged once, when it starts.
            raise CircuitOpen(f"{host.name} upstream paused after repeated failures; try again")

    def _record_failure(self, host: Host, error: UpstreamError) -> None:
        self._count(host, error.message)
        if self.observer is not None:
            self.observer.failed(error)

    def count_failure(self, key: CacheKey, reason: str) -> None:
        """A failure the caller saw and this client could not (silence past a deadline,
        a tarball whose checksum is wrong), counted against the host ``key`` lives on."""
        self._count(self.host_for(key), reason)

    @staticmethod
    def _count(host: Host, reason: str) -> None:
        """Tell the host's breaker; say so in the log when that opens its circuit."""
        breaker = host.breaker
        was_paused = breaker.state is State.PAUSED
        breaker.record_failure(reason)
        if not was_paused and breaker.state is State.PAUSED:
            log.warning(
                "%s upstream paused for %g s after %d failures in a row; the last: %s",
                host.name,
                breaker.retry_after,
                breaker.failures,
                reason,
            )

    @staticmethod
    def _succeeded(host: Host) -> None:
        if host.breaker.failures >= host.breaker.threshold:
            log.info("%s upstream is answering again", host.name)
        host.breaker.record_success()

    async def fetch(
        self,
        key: CacheKey,
        *,
        limit: int,
        etag: str | None = None,
        last_modified: str | None = None,
        check: Callable[[bytes], Awaitable[object | None]] | None = None,
    ) -> Fetched:
        """GET a whole (small) object; conditional when validators are given.

        ``check`` judges a 200 body (its result becomes ``Fetched.decoded``). The breaker
        hears of success only once the body is whole and ``check`` accepted it: an
        upstream that answers quickly with bad bytes (a tampered signature, a truncated
        body) is failing, and its failures must add up to open the circuit.
        """
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        host = self.host_for(key)
        try:
            async with self.open(
                key, headers=headers, accept=(200, 304, 404), confirm=False
            ) as resp:
                body = await self.read_bounded(resp, limit) if resp.status == 200 else b""
                fetched = Fetched(
                    resp.status, body, resp.headers.get("ETag"), resp.headers.get("Last-Modified")
                )
            if check is not None and fetched.status == 200:
                fetched = replace(fetched, decoded=await check(fetched.body))
        except UpstreamError:
            raise  # open() has counted it
        except BaseException as exc:
            # Bad bytes count like any other failure; and an exchange cut short (even by
            # cancellation) must not leave the breaker's single probe claimed forever.
            message = exc.message if isinstance(exc, HexproxyError) else type(exc).__name__
            self._count(host, f"{key}: {message}")
            raise
        self._succeeded(host)
        return fetched

    @contextlib.asynccontextmanager
    async def open(
        self,
        key: CacheKey,
        *,
        headers: dict[str, str] | None = None,
        accept: tuple[int, ...] = (200,),
        allow_redirects: bool = True,
        confirm: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streaming GET; a status outside ``accept`` raises (404 as NotFound).

        With ``confirm`` an answer counts as a success for the breaker as soon as its
        headers arrive: a long download in progress is proof enough that upstream
        works, and must not hold the breaker's single probe for its whole length.
        Without it the caller records the success once it has judged the body."""
        host = self.host_for(key)
        self._admit(host)
        url = self.url_for(key)
        started = time.monotonic()
        with self._translating(host, str(key)):
            async with self.session.get(
                url, headers=headers, allow_redirects=allow_redirects
            ) as resp:
                if self.observer is not None:
                    self.observer.answered(key, resp.status, time.monotonic() - started)
                if resp.status >= 500:
                    raise UpstreamStatus(f"upstream answered {resp.status} for {key}", resp.status)
                if confirm:
                    self._succeeded(host)
                if resp.status not in accept:
                    if resp.status == 404:
                        raise NotFound(f"{key} not found upstream")
                    raise UpstreamStatus(f"upstream answered {resp.status} for {key}", resp.status)
                yield resp

    async def send(
        self,
        host: Host,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        body: bytes,
        limit: int,
    ) -> Sent:
        """One whole request to ``host`` (the API), its answer read up to ``limit`` bytes.

        Redirects are not followed: the request may carry a client's credential, which
        must reach that host and no other. Any status is an answer; 5xx counts against
        the host's breaker like every other upstream failure.
        """
        self._admit(host)
        url = host.url.rstrip("/") + path
        what = f"{method} {host.name} {path.partition('?')[0]}"
        with self._translating(host, what):
            async with self.session.request(
                method, url, headers=dict(headers), data=body or None, allow_redirects=False
            ) as resp:
                answer = await self.read_bounded(resp, limit)
                if resp.status >= 500:
                    self._record_failure(
                        host, UpstreamStatus(f"{what}: {resp.status}", resp.status)
                    )
                else:
                    self._succeeded(host)
                return Sent(resp.status, resp.headers.copy(), answer)

    @contextlib.contextmanager
    def _translating(self, host: Host, what: str) -> Iterator[None]:
        """Every way a request to ``host`` can fail becomes one typed UpstreamError, and
        each is reported to ``host``'s breaker (``what`` names the request in messages)."""
        try:
            yield
        except HexproxyError as exc:
            if isinstance(exc, UpstreamError):
                self._record_failure(host, exc)
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise self._failed(host, UpstreamTimeout(f"upstream timed out for {what}")) from None
        except aiohttp.ClientConnectorError as exc:
            raise self._failed(
                host, UpstreamUnavailable(f"cannot connect to upstream: {_reason(exc)}")
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self._failed(
                host, UpstreamUnavailable(f"upstream connection failed for {what}: {_reason(exc)}")
            ) from None

    def _failed(self, host: Host, error: UpstreamError) -> UpstreamError:
        self._record_failure(host, error)
        return error

    @staticmethod
    async def read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > limit:
            raise TooLarge(f"upstream declared {declared} bytes, over the {limit}-byte limit")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise TooLarge(f"upstream body over the {limit}-byte limit")
            chunks.append(chunk)
        return b"".join(chunks)


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]
