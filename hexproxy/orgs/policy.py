"""The policy for hex.pm organizations' repositories: who gets which cached object, when.

An organization's files are cached like public ones (verified the same way, with
hexpm's key and ``repository`` = the organization; tarballs checked against the
verified package's outer checksum; stored through the same storage and the same
``Download``), but every answer is for one credential: ``grants.decide`` says
whether this request's credential may have the cached copy now, must be put to
upstream first, or gets nothing.

Single-flight is per (object, credential): two clients with different keys never
share an upstream answer, so each gets exactly what its own key allows. Requests
with the same key share one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ..cache.entries import Counters, Entry, Status, StoredFile
from ..cache.flights import Flights
from ..cache.gate import Gate
from ..cache.policy import Cache
from ..config import Config
from ..errors import (
    CredentialNotListed,
    CredentialRequired,
    HexproxyError,
    NotCached,
    NotConfirmed,
    NotFound,
    UpstreamError,
    UpstreamRefused,
    UpstreamTimeout,
    UpstreamUnavailable,
    VerificationError,
)
from ..registry import Package
from ..store.cachekey import CacheKey, Kind, package_key
from ..store.storage import FileStorage
from ..units import format_duration
from ..upstream.breaker import State
from ..upstream.client import Upstream
from ..upstream.download import Download
from .asking import Asker
from .credentials import Credential, Keyring
from .grants import Action, Facts, Grants, Windows, decide
from .store import OrgStore

log = logging.getLogger("hexproxy.orgs")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Served:
    """What one request gets: a registry entry, a stored file or a running fetch."""

    held: Entry[object] | StoredFile | Download
    status: Status
    stale_note: str | None = None  # why a stale copy was served (for x-hex-message)


def org_repos_beside(cache: Cache) -> OrgRepos:
    """Organizations' repositories on the public cache's storage, gate, upstream client and
    counters (one cache directory, one connection pool, one set of figures)."""
    return OrgRepos(cache.config, cache.storage, cache.upstream, cache.gate, cache.counters)


class OrgRepos:
    def __init__(
        self,
        config: Config,
        storage: FileStorage,
        upstream: Upstream,
        gate: Gate,
        counters: Counters,
        clock: Callable[[], float] = time.time,
        secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.upstream = upstream
        self.counters = counters
        self.clock = clock
        self.keyring = Keyring(config.orgs.keys, secret)
        self.grants = Grants()
        self.windows = Windows(config.orgs.auth_ttl, config.orgs.offline_grace)
        self.asker = Asker(upstream, self.grants, lambda: self.clock())
        self.store = OrgStore(config, storage, gate, counters, lambda: self.clock())
        self._flights: Flights[tuple[CacheKey, bytes], Any] = Flights()
        self._downloads: dict[tuple[CacheKey, bytes], Download] = {}

    @property
    def offline(self) -> bool:
        return self.config.upstream.offline

    def credential(self, header: str | None) -> Credential | None:
        return self.keyring.credential(header)

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = self._flights.tasks()
        tasks += [d.task for d in self._downloads.values() if d.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ----- the decision, and what each outcome means -----

    def _facts(
        self, key: CacheKey, credential: Credential | None, held: bool, fresh: bool
    ) -> Facts:
        return Facts(
            has_credential=credential is not None,
            cached=held,
            fresh=fresh,
            accepted_age=(
                self.grants.age(credential.digest, key.org, self.clock()) if credential else None
            ),
            offline=self.offline,
            listed=credential is not None and key.org in credential.listed_for,
            upstream_down=self.upstream.orgs.breaker.state is State.PAUSED,
        )

    def _settle(
        self,
        action: Action,
        key: CacheKey,
        held: Entry[object] | StoredFile | None,
        facts: Facts,
        failure: HexproxyError | None,
    ) -> Served:
        """Every outcome but ASK: an answer from the cache, or the error that explains why not."""
        org = key.org
        if action is Action.REFUSE:
            raise CredentialRequired(
                f"{key} needs a key for organization {org}: mix sends one only to a trusted "
                "hexpm URL (mix hex.repo set hexpm --url, or HEX_TRUSTED_MIRROR_URL), "
                f"rebar3 the repo_key of its hexpm:{org} repo"
            )
        if action is Action.NOT_LISTED:
            raise CredentialNotListed(
                f"this proxy is offline and orgs.keys does not list this key for {org}"
            )
        if action is Action.NOT_CACHED:
            raise NotCached(f"{key} is not in this offline cache")
        if held is not None and action is Action.SERVE:
            return Served(held, Status.HIT)
        if held is not None and action is Action.SERVE_STALE:
            return self._stale(key, held, facts, failure)
        reason = failure.message if failure else self.upstream.orgs.breaker.last_error
        if held is None:
            raise failure or UpstreamUnavailable(
                f"{key}: upstream is paused ({reason}) and this proxy holds no copy"
            )
        raise NotConfirmed(
            f"{key}: upstream cannot confirm this key for {org} ({reason}), and it was not "
            f"accepted within orgs.offline_grace ({format_duration(self.windows.offline_grace)})"
        )

    def _stale(
        self,
        key: CacheKey,
        held: Entry[object] | StoredFile,
        facts: Facts,
        failure: HexproxyError | None,
    ) -> Served:
        reason = failure.message if failure else self.upstream.orgs.breaker.last_error
        age = format_duration(facts.accepted_age or 0.0)
        self.counters.stale_served += 1
        log.info("serving stale %s to a key upstream accepted %s ago: %s", key, age, reason)
        note = (
            f"hexproxy cannot reach upstream ({reason}); {key} is served from its cache "
            f"because upstream accepted your key for {key.org} {age} ago"
        )
        return Served(held, Status.STALE, note)

    async def _ask(
        self,
        key: CacheKey,
        credential: Credential,
        facts: Facts,
        held: Entry[object] | StoredFile | None,
        asking: Callable[[], Coroutine[Any, Any, Served]],
    ) -> Served:
        """Put the request to upstream; if upstream cannot answer, decide again knowing that."""
        if_down = decide(replace(facts, upstream_down=True), self.windows)
        try:
            return await self._flight(
                key, credential, asking, can_fall_back=if_down is Action.SERVE_STALE
            )
        except UpstreamRefused:
            raise
        except (UpstreamError, VerificationError) as exc:
            return self._settle(if_down, key, held, facts, exc)

    async def _flight(
        self,
        key: CacheKey,
        credential: Credential,
        asking: Callable[[], Coroutine[Any, Any, T]],
        *,
        can_fall_back: bool,
    ) -> T:
        """One upstream request per (object, credential) at a time. When a stale copy could
        be served instead, it is waited for at most stale_timeout (and carries on)."""
        flight = self._flights.join((key, credential.digest), asking, f"org request {key}")
        if not can_fall_back:
            result: T = await asyncio.shield(flight.task)
            return result
        try:
            return await asyncio.wait_for(
                asyncio.shield(flight.task), self.config.upstream.stale_timeout
            )
        except TimeoutError:
            if not flight.reported_slow:
                # A black-holed upstream accepts connections and never answers: count the
                # silence (once per request upstream) so the breaker opens after a few.
                flight.reported_slow = True
                self.upstream.orgs.breaker.record_failure("no answer within stale_timeout")
            raise UpstreamTimeout(f"no answer from upstream for {key} yet") from None

    # ----- registry files: names, versions, packages/NAME -----

    async def small(self, key: CacheKey, credential: Credential | None) -> Served:
        entry = await self.store.entry(key)
        fresh = entry is not None and self.store.fresh(entry)
        facts = self._facts(key, credential, entry is not None, fresh)
        action = decide(facts, self.windows)
        if action is not Action.ASK or credential is None:
            return self._settle(action, key, entry, facts, None)
        return await self._ask(
            key, credential, facts, entry, lambda: self._refresh(key, credential, entry)
        )

    async def _refresh(
        self, key: CacheKey, credential: Credential, entry: Entry[object] | None
    ) -> Served:
        etag = entry.meta.upstream_etag if entry else None
        limit = self.config.upstream.max_registry_size
        self.counters.upstream_fetches += 1
        answer = await self.asker.fetch(key, credential, etag=etag, limit=limit)
        return Served(*await self.store.answered(key, entry, answer))

    # ----- immutable files: tarballs and docs -----

    async def file(self, key: CacheKey, credential: Credential | None) -> Served:
        stored = await self.store.stored_file(key)
        facts = self._facts(key, credential, stored is not None, True)
        action = decide(facts, self.windows)
        if action is not Action.ASK or credential is None:
            return self._settle(action, key, stored, facts, None)
        if stored is not None:
            held = stored
            return await self._ask(
                key, credential, facts, stored, lambda: self._confirm(key, credential, held)
            )
        return Served(await self._download(key, credential), Status.MISS)

    async def _confirm(self, key: CacheKey, credential: Credential, stored: StoredFile) -> Served:
        """A stored file, once upstream has accepted this credential for it (304 or 200)."""
        etag = await self.store.upstream_etag(key)
        await self.asker.fetch(key, credential, etag=etag, limit=None)
        return Served(stored, Status.REVALIDATED)

    async def _download(self, key: CacheKey, credential: Credential) -> Download:
        expected = await self._expected_checksum(key, credential)
        running = self._downloads.get((key, credential.digest))
        if running is not None:
            return running
        upstream = self.config.upstream
        download = Download(
            key,
            storage=self.storage,
            upstream=self.upstream,
            expected_sha256=expected,
            max_size=upstream.max_tarball_size,
            lock_timeout=upstream.total_timeout,
            on_verification_failure=lambda k, e: self.counters.failure(f"{k}: {e.message}"),
            open_upstream=lambda: self.asker.stream(key, credential),
            # Another worker's stored copy was authorized by someone else's credential.
            adopt_stored=False,
        )
        flight_key = (key, credential.digest)
        self._downloads[flight_key] = download
        self.counters.upstream_fetches += 1
        download.start()
        assert download.task is not None
        download.task.add_done_callback(lambda _: self._download_done(flight_key, download))
        return download

    def _download_done(self, flight_key: tuple[CacheKey, bytes], download: Download) -> None:
        if self._downloads.get(flight_key) is download:
            del self._downloads[flight_key]

    async def _expected_checksum(self, key: CacheKey, credential: Credential) -> bytes | None:
        """A tarball's signed outer checksum, from the package file this credential may read."""
        if key.kind is not Kind.TARBALL:
            return None
        package_file = package_key(key.name, key.org)
        served = await self.small(package_file, credential)
        release = _package(served.held).release(key.version)
        if release is None and served.status is Status.HIT:
            # Published since we cached the package file: ask once more.
            entry = served.held
            assert isinstance(entry, Entry)
            served = await self._flight(
                package_file,
                credential,
                lambda: self._refresh(package_file, credential, entry),
                can_fall_back=False,
            )
            release = _package(served.held).release(key.version)
        if release is None:
            raise NotFound(f"{key.org}/{key.name} has no release {key.version}")
        if release.outer_checksum is None:
            raise VerificationError(
                f"{key} has no outer checksum in its signed registry entry, so it cannot be "
                "verified"
            )
        return release.outer_checksum

    async def stored_file(self, key: CacheKey) -> StoredFile | None:
        """The stored copy, whoever asks (for warm's bookkeeping, never for serving)."""
        return await self.store.stored_file(key)

    async def public_key_pem(self, org: str, credential: Credential | None) -> bytes:
        """Passed through from upstream for a credential; never cached, never served offline."""
        if credential is None:
            raise CredentialRequired(f"/repos/{org}/public_key needs a key for organization {org}")
        if self.offline:
            raise NotCached(f"/repos/{org}/public_key is not kept by this offline proxy")
        return await self.asker.public_key(org, credential)

    def forget(self, key: CacheKey) -> None:
        self.store.forget(key)


def _package(held: Entry[object] | StoredFile | Download) -> Package:
    assert isinstance(held, Entry) and isinstance(held.decoded, Package)
    return held.decoded
