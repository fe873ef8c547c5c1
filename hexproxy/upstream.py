"""The one HTTP client that talks to upstream (repo.hex.pm, builds.hex.pm or a mirror).

It turns every way a request can fail into the typed errors of ``errors.py``
and reports each outcome to the circuit breaker, so the policy layer only
ever sees "an answer" or "upstream could not answer, and why".
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

import aiohttp

from . import __version__
from .breaker import CircuitBreaker, State
from .cachekey import CacheKey, Kind
from .config import UpstreamConfig
from .errors import (
    CircuitOpen,
    HexproxyError,
    NotFound,
    TooLarge,
    UpstreamError,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
)

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
    )


class Upstream:
    def __init__(self, config: UpstreamConfig, breaker: CircuitBreaker) -> None:
        self.config = config
        self.breaker = breaker
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

    def url_for(self, key: CacheKey) -> str:
        base = self.config.builds_url if key.kind is Kind.INSTALL else self.config.url
        return base.rstrip("/") + key.upstream_path

    def _admit(self) -> None:
        if not self.breaker.allow():
            # Nothing about the last error: it concerns another object, and this text
            # reaches the client and the log for this one (and must not vary, so that
            # the log can aggregate it). The pause itself is logged once, when it starts.
            raise CircuitOpen("upstream paused after repeated failures; try again shortly")

    def record_failure(self, error: UpstreamError) -> None:
        self.count_failure(error.message)
        if self.observer is not None:
            self.observer.failed(error)

    def count_failure(self, reason: str) -> None:
        """Tell the breaker; say so in the log when that opens the circuit."""
        was_paused = self.breaker.state is State.PAUSED
        self.breaker.record_failure(reason)
        if not was_paused and self.breaker.state is State.PAUSED:
            log.warning(
                "upstream paused for %g s after %d failures in a row; the last: %s",
                self.breaker.retry_after,
                self.breaker.failures,
                reason,
            )

    def _succeeded(self) -> None:
        if self.breaker.failures >= self.breaker.threshold:
            log.info("upstream is answering again")
        self.breaker.record_success()

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
        try:
            async with self.open(
                key, headers=headers, accept=(200, 304, 404), confirm=False
            ) as resp:
                body = await self._read_bounded(resp, limit) if resp.status == 200 else b""
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
            self.count_failure(f"{key}: {message}")
            raise
        self._succeeded()
        return fetched

    @contextlib.asynccontextmanager
    async def open(
        self,
        key: CacheKey,
        *,
        headers: dict[str, str] | None = None,
        accept: tuple[int, ...] = (200,),
        confirm: bool = True,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """A streaming GET; a status outside ``accept`` raises (404 as NotFound).

        With ``confirm`` an answer counts as a success for the breaker as soon as its
        headers arrive: a long download in progress is proof enough that upstream
        works, and must not hold the breaker's single probe for its whole length.
        Without it the caller records the success once it has judged the body."""
        self._admit()
        url = self.url_for(key)
        started = time.monotonic()
        try:
            async with self.session.get(url, headers=headers, allow_redirects=True) as resp:
                if self.observer is not None:
                    self.observer.answered(key, resp.status, time.monotonic() - started)
                if resp.status >= 500:
                    raise UpstreamStatus(f"upstream answered {resp.status} for {key}", resp.status)
                if confirm:
                    self._succeeded()
                if resp.status not in accept:
                    if resp.status == 404:
                        raise NotFound(f"{key} not found upstream")
                    raise UpstreamStatus(f"upstream answered {resp.status} for {key}", resp.status)
                yield resp
        except HexproxyError as exc:
            if isinstance(exc, UpstreamError):
                self.record_failure(exc)
            raise
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise self._failed(UpstreamTimeout(f"upstream timed out for {key}")) from None
        except aiohttp.ClientConnectorError as exc:
            raise self._failed(
                UpstreamUnavailable(f"cannot connect to upstream: {_reason(exc)}")
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self._failed(
                UpstreamUnavailable(f"upstream connection failed for {key}: {_reason(exc)}")
            ) from None

    def _failed(self, error: UpstreamError) -> UpstreamError:
        self.record_failure(error)
        return error

    @staticmethod
    async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
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
