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
import hashlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ..breaker import State
from ..cachekey import CacheKey, Kind, package_key
from ..config import Config
from ..download import Download
from ..entries import Counters, Entry, Status, StoredFile
from ..errors import (
    CredentialNotListed,
    CredentialRequired,
    HexproxyError,
    NotCached,
    NotConfirmed,
    NotFound,
    UpstreamError,
    UpstreamRefused,
    UpstreamStatus,
    UpstreamTimeout,
    UpstreamUnavailable,
    VerificationError,
)
from ..registry import Package, verify_names, verify_package, verify_versions
from ..storage import FileStorage, Meta, sha256_file
from ..units import format_duration
from ..upstream import Upstream
from .asking import Answer, Asker
from .credentials import Credential, Keyring
from .grants import Action, Facts, Grants, Windows, decide

log = logging.getLogger("hexproxy.orgs")

T = TypeVar("T")
MEMORY_BUDGET = 16 * 1024 * 1024  # verified registry files kept in memory


@dataclass(frozen=True, slots=True)
class Served:
    """What one request gets: a registry entry, a stored file or a running fetch."""

    held: Entry | StoredFile | Download
    status: Status
    stale_note: str | None = None  # why a stale copy was served (for x-hex-message)


class OrgRepos:
    def __init__(
        self,
        config: Config,
        storage: FileStorage,
        upstream: Upstream,
        public_key: RSAPublicKey,
        counters: Counters,
        clock: Callable[[], float] = time.time,
        secret: bytes | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        self.upstream = upstream
        self.verify_key = public_key
        self.counters = counters
        self.clock = clock
        self.keyring = Keyring(config.orgs.keys, secret)
        self.grants = Grants()
        self.windows = Windows(config.orgs.auth_ttl, config.orgs.offline_grace)
        self.asker = Asker(upstream, self.grants, lambda: self.clock())
        self._memory: OrderedDict[CacheKey, Entry] = OrderedDict()
        self._memory_bytes = 0
        self._flights: dict[tuple[CacheKey, bytes], asyncio.Task[Any]] = {}
        self._downloads: dict[tuple[CacheKey, bytes], Download] = {}

    @property
    def offline(self) -> bool:
        return self.config.upstream.offline

    def credential(self, header: str | None) -> Credential | None:
        return self.keyring.credential(header)

    async def close(self) -> None:
        tasks: list[asyncio.Task[Any]] = list(self._flights.values())
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
        held: Entry | StoredFile | None,
        facts: Facts,
        failure: HexproxyError | None,
    ) -> Served:
        """Every outcome but ASK: an answer from the cache, or the error that explains why not."""
        org = key.org
        if action is Action.REFUSE:
            raise CredentialRequired(
                f"{key} needs a key for organization {org}; mix sends one only to a trusted "
                "mirror (HEX_TRUSTED_MIRROR_URL), rebar3 from the hexpm:" + org + " repo_key"
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
        held: Entry | StoredFile,
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
        held: Entry | StoredFile | None,
        asking: Callable[[], Coroutine[Any, Any, Served]],
    ) -> Served:
        """Put the request to upstream; if upstream cannot answer, decide again knowing that."""
        try:
            return await self._flight(key, credential, asking, can_fall_back=held is not None)
        except UpstreamRefused:
            raise
        except (UpstreamError, VerificationError) as exc:
            after = decide(replace(facts, upstream_down=True), self.windows)
            return self._settle(after, key, held, facts, exc)

    async def _flight(
        self,
        key: CacheKey,
        credential: Credential,
        asking: Callable[[], Coroutine[Any, Any, T]],
        *,
        can_fall_back: bool,
    ) -> T:
        """One upstream request per (object, credential) at a time; when a cached copy could
        be served instead, wait for it at most stale_timeout (the request carries on)."""
        flight_key = (key, credential.digest)
        task = self._flights.get(flight_key)
        if task is None:
            task = asyncio.create_task(asking(), name=f"org refresh {key}")
            self._flights[flight_key] = task
            task.add_done_callback(lambda t: self._landed(flight_key, t))
        if not can_fall_back:
            result: T = await asyncio.shield(task)
            return result
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.config.upstream.stale_timeout)
        except TimeoutError:
            # A black-holed upstream accepts connections and never answers: count the
            # silence so the breaker opens after a few of them.
            self.upstream.orgs.breaker.record_failure("no answer within stale_timeout")
            raise UpstreamTimeout(f"no answer from upstream for {key} yet") from None

    def _landed(self, flight_key: tuple[CacheKey, bytes], task: asyncio.Task[Any]) -> None:
        if self._flights.get(flight_key) is task:
            del self._flights[flight_key]
        if not task.cancelled():
            task.exception()  # retrieved: waiters that gave up must not leave it unread

    # ----- registry files: names, versions, packages/NAME -----

    async def small(self, key: CacheKey, credential: Credential | None) -> Served:
        entry = await self._entry(key)
        fresh = entry is not None and self._fresh(entry)
        facts = self._facts(key, credential, entry is not None, fresh)
        action = decide(facts, self.windows)
        if action is not Action.ASK or credential is None:
            return self._settle(action, key, entry, facts, None)
        return await self._ask(
            key, credential, facts, entry, lambda: self._refresh(key, credential, entry)
        )

    def _fresh(self, entry: Entry) -> bool:
        return self.clock() - entry.meta.validated_at < self.config.cache.registry_ttl

    async def _refresh(self, key: CacheKey, credential: Credential, entry: Entry | None) -> Served:
        etag = entry.meta.upstream_etag if entry else None
        limit = self.config.upstream.max_registry_size
        self.counters.upstream_fetches += 1
        answer = await self.asker.fetch(key, credential, etag=etag, limit=limit)
        now = self.clock()
        if answer.status == 304:
            if entry is None:
                raise UpstreamStatus(f"upstream answered 304 to a plain GET of {key}", 304)
            return Served(await self._touch(entry, now, answer), Status.REVALIDATED)
        decoded = await self._verify(key, answer.body)
        if entry is not None and entry.body == answer.body:
            return Served(await self._touch(entry, now, answer), Status.REVALIDATED)
        meta = Meta(
            hashlib.sha256(answer.body).hexdigest(),
            len(answer.body),
            now,
            now,
            answer.etag,
            answer.last_modified,
        )
        fresh = Entry(key, answer.body, meta, decoded)
        try:
            await asyncio.to_thread(self.storage.put, key, answer.body, meta)
        except OSError as exc:
            log.warning("cannot store %s (%s); serving it from memory", key, exc.strerror)
        self._remember(fresh)
        return Served(fresh, Status.MISS)

    async def _touch(self, entry: Entry, now: float, answer: Answer) -> Entry:
        meta = entry.meta.revalidated(now)
        if answer.etag or answer.last_modified:
            meta = replace(
                meta, upstream_etag=answer.etag, upstream_last_modified=answer.last_modified
            )
        touched = replace(entry, meta=meta)
        try:
            await asyncio.to_thread(self.storage.write_meta, entry.key, meta)
        except OSError as exc:
            log.warning("cannot record revalidation of %s (%s)", entry.key, exc.strerror)
        self._remember(touched)
        return touched

    async def _verify(self, key: CacheKey, body: bytes) -> object:
        try:
            return await asyncio.to_thread(self.verify_bytes, key, body)
        except VerificationError as exc:
            self.counters.failure(f"{key}: {exc.message}")
            log.error("verification failed for %s: %s", key, exc.message)
            raise

    def verify_bytes(self, key: CacheKey, body: bytes) -> object:
        """Signed by hexpm's key, for this organization (and package name)."""
        limit = self.config.upstream.max_registry_size
        if key.kind is Kind.PACKAGE:
            return verify_package(
                body, self.verify_key, repository=key.org, name=key.name, max_uncompressed=limit
            )
        if key.kind is Kind.NAMES:
            return verify_names(body, self.verify_key, repository=key.org, max_uncompressed=limit)
        if key.kind is Kind.VERSIONS:
            return verify_versions(
                body, self.verify_key, repository=key.org, max_uncompressed=limit
            )
        raise AssertionError(key)

    async def _entry(self, key: CacheKey) -> Entry | None:
        entry = self._memory.get(key)
        if entry is not None:
            self._memory.move_to_end(key)
            return entry
        body = await asyncio.to_thread(self.storage.read, key)
        if body is None:
            return None
        try:
            decoded = await asyncio.to_thread(self.verify_bytes, key, body)
        except VerificationError as exc:
            self.counters.failure(f"stored {key}: {exc.message}")
            log.error("stored copy of %s fails verification (%s); ignoring it", key, exc.message)
            return None
        digest = hashlib.sha256(body).hexdigest()
        meta = self.storage.read_meta(key)
        if meta is None or meta.sha256 != digest:
            meta = Meta(digest, len(body), self.clock(), 0.0)
        entry = Entry(key, body, meta, decoded)
        self._remember(entry)
        return entry

    def _remember(self, entry: Entry) -> None:
        old = self._memory.pop(entry.key, None)
        if old is not None:
            self._memory_bytes -= len(old.body)
        self._memory[entry.key] = entry
        self._memory_bytes += len(entry.body)
        while self._memory_bytes > MEMORY_BUDGET and len(self._memory) > 1:
            _, evicted = self._memory.popitem(last=False)
            self._memory_bytes -= len(evicted.body)

    # ----- immutable files: tarballs and docs -----

    async def file(self, key: CacheKey, credential: Credential | None) -> Served:
        stored = await self.stored_file(key)
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
        meta = await asyncio.to_thread(self.storage.read_meta, key)
        etag = meta.upstream_etag if meta else None
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
        """The stored copy of an immutable object (no authorization: callers decide)."""
        path = self.storage.path(key)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            return None
        meta = await asyncio.to_thread(self.storage.read_meta, key)
        if meta is None or meta.size != st.st_size:
            digest = await asyncio.to_thread(sha256_file, path)
            meta = Meta(digest, st.st_size, st.st_mtime, st.st_mtime)
            await asyncio.to_thread(self.storage.write_meta, key, meta)
        return StoredFile(key, path, st.st_size, meta.sha256, meta.stored_at)

    async def public_key_pem(self, org: str, credential: Credential | None) -> bytes:
        """Passed through from upstream for a credential; never cached, never served offline."""
        if credential is None:
            raise CredentialRequired(f"/repos/{org}/public_key needs a key for organization {org}")
        if self.offline:
            raise NotCached(f"/repos/{org}/public_key is not kept by this offline proxy")
        return await self.asker.public_key(org, credential)

    def forget(self, key: CacheKey) -> None:
        old = self._memory.pop(key, None)
        if old is not None:
            self._memory_bytes -= len(old.body)


def _package(held: Entry | StoredFile | Download) -> Package:
    assert isinstance(held, Entry) and isinstance(held.decoded, Package)
    return held.decoded
