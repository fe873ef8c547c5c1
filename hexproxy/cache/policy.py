"""The policy: for each request, decide fresh / stale / revalidate / fetch / verify.

This is the only place that knows what the cache *means*. The HTTP layer
translates its results into responses, and ``warm`` calls the same methods, so
serving and pre-warming share one verified path.

Metadata (registry files, installer CSVs) is revalidated after the TTL and
served from memory after its first load; immutable objects (tarballs, docs,
installer builds) are served from disk and fetched through a shared
``Download``. What makes bytes fit to serve is ``gate.py``'s job; what the
builds host's outages mean for ``/installs/*``, ``builds_host.py``'s.

The two halves stay one class: they share the negative cache, the offline
switch and the in-flight refreshes (a tarball's checksum comes from its package
file's refresh), and splitting them would pass all of that back and forth.

Two rules keep a sustained fault from turning into a flood, of upstream requests
or of waiting clients:

- Upstream is asked about one object at most once at a time (single flight, in this
  process by ``flights.py`` and across workers by ``turns.py``), not again while that
  object backs off after a failure (``backoff.py``), and not at all while the breaker
  is open; an object it does not have is remembered for ``negative_ttl``. What one
  worker hears, every worker knows (``verdicts.py``, ``upstream/pauses.py``).
- No client waits on upstream for long: one with a cached copy gets it after
  ``stale_timeout``, one without gets its first byte, or a 503/504 with a reason,
  within ``inflight_wait``.

Files are read and written in threads (``store/storage.py`` is synchronous): the
event loop never waits for the disk. The only synchronous calls here are on memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..config import Config
from ..errors import (
    Busy,
    CircuitOpen,
    HexproxyError,
    InstallsUnavailable,
    NotCached,
    NotFound,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    VerificationError,
)
from ..installs import CSV_NAMES, CsvLine, parse_build, sha512_for
from ..registry import Package
from ..store.cachekey import CacheKey, Kind, install_key, package_key
from ..store.storage import FileStorage, Meta, sha256_file
from ..upstream.breaker import State
from ..upstream.client import Upstream
from ..upstream.download import Download
from .backoff import Backoff, Negative
from .builds_host import BuildsHost
from .entries import Answer, Counters, Entry, Status, StoredFile
from .flights import Flight, Flights
from .gate import Gate, csv_key, is_installs_csv, is_installs_signature, signature_key
from .memory import Memory, budget_per_worker
from .shared import SharedTier, shared_copy_problem
from .turns import Turns
from .verdicts import Verdicts

log = logging.getLogger("hexproxy.cache")

# Why a stale copy is served while the breaker holds every request back. Deliberately
# not the breaker's last error: that concerns whichever object failed last.
PAUSED = "upstream paused after repeated failures"
SLOW = "upstream too slow"


class Cache:
    def __init__(
        self,
        config: Config,
        storage: FileStorage,
        upstream: Upstream,
        gate: Gate,
        clock: Callable[[], float] = time.time,
        shared: SharedTier | None = None,
    ) -> None:
        self.config = config
        self.storage = storage
        # Behind the local disk, when replicas share an object store ([store] kind = "s3").
        self.shared = shared
        self._fills: dict[CacheKey, asyncio.Task[StoredFile | None]] = {}
        self.upstream = upstream
        self.gate = gate
        self.clock = clock
        self.offline = config.upstream.offline
        self.counters = Counters()
        # Every entry's decoded value has the type its key's kind decodes to (see
        # _decode); the typed getters below rely on that.
        # Registry entries and the records of stored files served (with what the fast
        # path keeps on them), under the one budget of cache.memory_size.
        self._memory = Memory(budget_per_worker(config))
        self._negative = Negative()
        self._backoff = Backoff(cap=config.upstream.retry_after)
        # Both told to (and learned from) the other workers; fetches take turns with them.
        self.verdicts = Verdicts(
            storage.state, self._negative, self._backoff, config.cache.negative_ttl, self
        )
        self.turns = Turns(storage, config.upstream.total_timeout)
        self._flights: Flights[CacheKey, Answer[Any]] = Flights()
        self._downloads: dict[CacheKey, Download] = {}
        # /installs/* comes from the builds host, which locked-down networks never reach
        # and Hex 2.3+ asks on every run: one failed attempt is remembered for negative_ttl.
        self.builds = BuildsHost(
            upstream.builds.shown_url, config.cache.negative_ttl, lambda: self.clock()
        )

    async def start(self) -> None:
        """Open the upstream client and, if there is one, the shared store's."""
        await self.upstream.start()
        if self.shared is not None:
            await self.shared.start()

    def fetches_running(self) -> int:
        """Upstream fetches under way in this process (registry refreshes and downloads)."""
        return len(self._flights) + len(self._downloads)

    async def close(self) -> None:
        """Stop running fetches (their temp files are dropped) and the upstream client."""
        tasks: list[asyncio.Task[Any]] = list(self._flights.tasks())
        tasks += [d.task for d in self._downloads.values() if d.task is not None]
        tasks += self._fills.values()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.upstream.close()
        if self.shared is not None:
            await self.shared.close()  # lets uploads under way finish (bounded)
        self.storage.index.close()  # last: everything above may still have stored something

    # ----- metadata: registry files and installer CSVs, revalidated after the TTL -----

    async def get_metadata(self, key: CacheKey) -> Answer[object]:
        """A metadata file by its key, for serving its bytes."""
        return await self._get(key)

    async def get_package(self, name: str) -> Answer[Package]:
        """The verified ``/packages/NAME``."""
        return await self._get(package_key(name))

    async def get_installs_csv(self, name: str) -> Answer[list[CsvLine]]:
        """A verified installs CSV (``hex-1.x.csv``, ``rebar.csv``, ...) and its lines."""
        if name not in CSV_NAMES:
            raise NotFound(f"/installs/{name} is not an installs CSV")
        return await self._get(install_key(name))

    async def _get(self, key: CacheKey) -> Answer[Any]:
        entry = self._memory.get(key) or await self._load(key)
        if entry is not None and self._is_fresh(entry):
            return Answer(entry, Status.HIT)
        if entry is not None and self.offline:
            return Answer(entry, Status.HIT)
        await self.verdicts.learn(key)
        self._check_negative(key)
        if self.offline:
            raise self._offline_miss(key)
        if entry is None:
            return await self._fetch_new(key)
        return await self._revalidate(key, entry)

    async def _fetch_new(self, key: CacheKey) -> Answer[Any]:
        if key.kind is not Kind.INSTALL:
            self._check_backoff(key)
            return await self._wait_for(key, self._join_flight(key, None))
        self.builds.check(key)
        try:
            return await self._wait_for(key, self._join_flight(key, None))
        except UpstreamError as exc:
            raise self.builds.failed(key, exc) from None

    def fresh_entry(self, key: CacheKey) -> Entry[object] | None:
        """What get_metadata would answer as a HIT right now without any I/O, if anything."""
        entry = self._memory.get(key)
        if entry is not None and self.clock() < self.fresh_until(entry):
            return entry
        return None

    def memory_entry(self, key: CacheKey) -> Entry[object] | None:
        """What this process holds in memory for ``key``, fresh or not (no I/O)."""
        return self._memory.get(key)

    def fresh_until(self, entry: Entry[object] | StoredFile) -> float:
        """When ``entry`` stops being a HIT (revalidation, or a stale answer, is due)."""
        if self.offline or isinstance(entry, StoredFile) or not entry.key.is_mutable:
            return float("inf")
        return entry.meta.validated_at + self.config.cache.registry_ttl

    def _is_fresh(self, entry: Entry[object]) -> bool:
        if not entry.key.is_mutable:
            return True
        return self.clock() - entry.meta.validated_at < self.config.cache.registry_ttl

    async def _revalidate(self, key: CacheKey, entry: Entry[Any]) -> Answer[Any]:
        """Ask upstream, but never make the client wait long for what we already hold."""
        held = self._backoff.holding(key, self.clock())
        if held is not None:
            return self._stale(entry, held.reason)
        if self.upstream.breaker_for(key).state is State.PAUSED:
            return self._stale(entry, PAUSED)
        if key.kind is Kind.INSTALL and (down := self.builds.down()):
            return self._stale(entry, down)
        flight = self._join_flight(key, entry)
        if flight.reported_slow:
            # This very revalidation already kept a client waiting: don't wait again.
            return self._stale(entry, SLOW)
        try:
            return await asyncio.wait_for(
                asyncio.shield(flight.task), self.config.upstream.stale_timeout
            )
        except TimeoutError:
            self._silent(key, flight, "stale_timeout")
            return self._stale(entry, SLOW)
        except CircuitOpen:
            return self._stale(entry, PAUSED)
        except (UpstreamError, VerificationError) as exc:
            if key.kind is Kind.INSTALL and isinstance(exc, UpstreamError):
                self.builds.failed(key, exc)
            return self._stale(entry, exc.message)

    async def _wait_for(self, key: CacheKey, flight: Flight[Answer[Any]]) -> Answer[Any]:
        """A client with no copy to fall back on waits at most inflight_wait for upstream;
        the fetch carries on for whoever asks next."""
        wait = self.config.upstream.inflight_wait
        try:
            return await asyncio.wait_for(asyncio.shield(flight.task), wait)
        except TimeoutError:
            if self.turns.waiting(key):
                raise Busy(f"{key} is being fetched by another worker; ask again shortly") from None
            self._silent(key, flight, "inflight_wait")
            raise UpstreamTimeout(
                f"upstream has not answered for {key} within {wait:g} s; still trying"
            ) from None

    def _silent(self, key: CacheKey, flight: Flight[Answer[Any]], bound: str) -> None:
        if not flight.reported_slow and not self.turns.waiting(key):
            # A black-holed upstream accepts connections and never answers: count the
            # silence (once per fetch) so the breaker opens after a few of them.
            flight.reported_slow = True
            self._count_against_upstream(key, f"no answer for {key} within {bound}")

    def _count_against_upstream(self, key: CacheKey, reason: str) -> None:
        """The policy's one report to the circuit breaker of ``key``'s upstream host:
        failures the upstream client cannot see by itself (silence, a bad checksum)."""
        self.upstream.count_failure(key, reason)

    def _stale(self, entry: Entry[Any], reason: str) -> Answer[Any]:
        self.counters.stale_served += 1
        # One line per request under a sustained fault: the log handler aggregates
        # repeats (web/logrepeats.py), so keep the text stable for one object and reason.
        log.info("serving stale %s: %s", entry.key, reason)
        return Answer(entry, Status.STALE)

    def _check_backoff(self, key: CacheKey) -> None:
        """With nothing cached to serve, a key that backs off repeats its failure. (Not
        for /installs/*: the builds host's outage rule answers those, quietly.)"""
        if key.kind is Kind.INSTALL:
            return
        held = self._backoff.holding(key, self.clock())
        if held is not None:
            raise held.again()

    def _join_flight(self, key: CacheKey, entry: Entry[Any] | None) -> Flight[Answer[Any]]:
        return self._flights.join(key, lambda: self._refresh(key, entry), f"refresh {key}")

    async def _refresh(self, key: CacheKey, entry: Entry[Any] | None) -> Answer[Any]:
        began = self.clock()
        async with self.turns.turn(key):
            # The worker before us in line may have fetched it, or heard why not.
            await self._heard_elsewhere(key)
            stored = await self._stored_since(key, entry, began)
            if stored is not None:
                return Answer(stored, Status.MISS if entry is None else Status.REVALIDATED)
            return await self._refresh_here(key, entry)

    async def _heard_elsewhere(self, key: CacheKey) -> None:
        """Raise what another worker heard from upstream about ``key``, if anything. (For
        /installs/* too: its callers turn the failure into the builds host's outage.)"""
        await self.verdicts.learn(key)
        self._check_negative(key)
        if (held := self._backoff.holding(key, self.clock())) is not None:
            raise held.again()

    async def _stored_since(
        self, key: CacheKey, entry: Entry[Any] | None, began: float
    ) -> Entry[Any] | None:
        """A stored copy newer than ``entry``, validated since ``began`` or still fresh."""
        meta = await asyncio.to_thread(self.storage.read_meta, key)
        if meta is None or (entry is not None and meta.validated_at <= entry.meta.validated_at):
            return None
        age = self.clock() - meta.validated_at
        if meta.validated_at < began and age >= self.config.cache.registry_ttl:
            return None
        stored = await self._load(key)
        return stored if stored is not None and stored.meta == meta else None

    async def _refresh_here(self, key: CacheKey, entry: Entry[Any] | None) -> Answer[Any]:
        try:
            answer = await self._fetch_metadata(key, entry)
        except CircuitOpen:
            raise  # nothing was asked: says nothing about this key
        except (UpstreamError, VerificationError) as exc:
            await self.verdicts.failed(key, exc)
            if key.kind is Kind.INSTALL and isinstance(exc, UpstreamError):
                # Remembered here, before the flight lands, not by its waiters: a request
                # that arrives between the flight's end and their wake-up would find
                # neither a flight to join nor an outage and ask the host again.
                self.builds.failed(key, exc)
            # Without the frames it was raised in: every waiter (and the timeouts wrapped
            # around them) shares this error, and those frames hold the failed body (up
            # to max_registry_size of gunzipped bytes) until the garbage collector runs.
            raise exc.with_traceback(None)  # noqa: B904 (the same error, re-raised)
        await self.verdicts.succeeded(key)
        return answer

    async def _fetch_metadata(self, key: CacheKey, entry: Entry[Any] | None) -> Answer[Any]:
        meta = entry.meta if entry else None
        self.counters.upstream_fetches += 1
        # The check runs before the breaker hears of success: bad bytes count as failures.
        fetched = await self.upstream.fetch(
            key,
            limit=self.config.upstream.max_registry_size,
            etag=meta.upstream_etag if meta else None,
            last_modified=meta.upstream_last_modified if meta else None,
            check=lambda body: self._decode_fetched(key, body),
        )
        if key.kind is Kind.INSTALL:
            self.builds.answered()
        now = self.clock()
        if fetched.status == 304 and entry is not None:
            return Answer(await self._record_revalidation(entry, now), Status.REVALIDATED)
        if fetched.status != 200:
            await self.verdicts.missing(key, now + self.config.cache.negative_ttl)
            raise NotFound(f"{key} not found upstream")
        decoded = fetched.decoded
        if entry is not None and entry.body == fetched.body:
            revalidated = await self._record_revalidation(
                entry, now, fetched.etag, fetched.last_modified
            )
            return Answer(revalidated, Status.REVALIDATED)
        new_meta = Meta(
            sha256=hashlib.sha256(fetched.body).hexdigest(),
            size=len(fetched.body),
            stored_at=now,
            validated_at=now,
            upstream_etag=fetched.etag,
            upstream_last_modified=fetched.last_modified,
        )
        fresh = Entry(key, fetched.body, new_meta, decoded)
        try:
            await asyncio.to_thread(self.storage.put, key, fetched.body, new_meta)
        except OSError as exc:
            log.warning("cannot store %s (%s); serving it from memory", key, exc.strerror)
        self._memory.put(fresh)
        if self.shared is not None:
            self.shared.publish(key, fetched.body, new_meta)
        return Answer(fresh, Status.MISS)

    async def _record_revalidation(
        self, entry: Entry[Any], now: float, etag: str | None = None, modified: str | None = None
    ) -> Entry[Any]:
        """Upstream revalidated what we hold: record when (and its new validators, if any)."""
        meta = entry.meta.revalidated(now)
        if etag or modified:
            meta = replace(meta, upstream_etag=etag, upstream_last_modified=modified)
        revalidated = replace(entry, meta=meta)
        try:
            await asyncio.to_thread(self._store_revalidation, revalidated)
        except OSError as exc:
            log.warning("cannot record revalidation of %s (%s)", entry.key, exc.strerror)
        self._memory.put(revalidated)
        return revalidated

    def _store_revalidation(self, entry: Entry[Any]) -> None:
        """(In a thread.) Record the revalidation; an operator may have removed the file
        while we held it in memory, and then it is stored again."""
        if self.storage.stat(entry.key) is None:
            self.storage.put(entry.key, entry.body, entry.meta)
        else:
            self.storage.write_meta(entry.key, entry.meta)

    async def _decode_fetched(self, key: CacheKey, body: bytes) -> Any:
        """Check what upstream sent; the bytes are stored only if this returns."""
        try:
            if is_installs_csv(key):
                return await self._decode_fetched_csv(key, body)
            if len(body) > 256 * 1024 or key.kind is Kind.INSTALL:
                # Big bodies take a while to check; an installer signature is checked
                # against the stored CSV, read from disk.
                return await asyncio.to_thread(self._decode, key, body)
            return self._decode(key, body)
        except VerificationError as exc:
            self.counters.failure(f"{key}: {exc.message}")
            log.error("verification failed for %s: %s", key, exc.message)
            raise

    def _decode(self, key: CacheKey, body: bytes) -> Any:
        """Raise VerificationError unless ``body`` is a genuine ``key`` from our repository;
        return what the gate decodes it to, which the key's kind decides. (Reads storage
        for installer files: call it in a thread for those.)"""
        if key.is_registry:
            return self.gate.registry_file(key, body)
        if is_installs_csv(key):
            # A stored CSV is checked against the stored .signed it was accepted with.
            signed = self.storage.read(signature_key(key))
            return self.gate.installs_csv(key.name, body, signed)
        if is_installs_signature(key):
            # A new .signed must match the CSV we hold; when upstream changed both, the
            # CSV's own refresh brings the pair in together (_decode_fetched_csv).
            csv = self.storage.read(csv_key(key))
            if csv is not None:
                self.gate.installs_csv(csv_key(key).name, csv, body)
        return None

    async def _decode_fetched_csv(self, key: CacheKey, body: bytes) -> list[CsvLine]:
        """Check a CSV fresh from upstream against a fresh .signed, and keep that .signed
        only if it verifies: a forged pair must not replace the good one we serve."""
        signed_key = signature_key(key)
        fetched = await self.upstream.fetch(signed_key, limit=64 * 1024)
        if fetched.status not in (200, 404):
            raise UpstreamUnavailable(f"{signed_key}: upstream answered {fetched.status}")
        signed = fetched.body if fetched.status == 200 else None
        lines = self.gate.installs_csv(key.name, body, signed)
        held = self._memory.get(signed_key)
        if signed is not None and (held is None or held.body != signed):
            now = self.clock()
            digest = hashlib.sha256(signed).hexdigest()
            meta = Meta(digest, len(signed), now, now, fetched.etag, fetched.last_modified)
            try:
                await asyncio.to_thread(self.storage.put, signed_key, signed, meta)
            except OSError as exc:
                log.warning("cannot store %s (%s)", signed_key, exc.strerror)
            self._memory.put(Entry(signed_key, signed, meta, None))
        return lines

    async def expected_install_digest(self, key: CacheKey) -> tuple[str, bytes] | None:
        """The sha512 the signed installs CSV gives for a Hex or rebar3 build."""
        if key.kind is not Kind.INSTALL or key.is_mutable:
            return None
        ref = parse_build(key.name)
        if ref is None:
            raise VerificationError(f"{key} is not a build any installs CSV lists; not caching it")
        csv = await self.get_installs_csv(ref.csv_name)
        sha512 = sha512_for(csv.entry.decoded, ref)
        if sha512 is None:
            raise NotFound(f"/installs/{ref.csv_name} does not list {key}")
        return ("sha512", sha512)

    async def _load(self, key: CacheKey) -> Entry[Any] | None:
        """Bring a stored metadata file into memory, re-verifying it on the way."""
        try:
            entry = await asyncio.to_thread(self._read_stored, key)
        except VerificationError as exc:
            self.counters.failure(f"stored {key}: {exc.message}")
            log.error("stored copy of %s fails verification (%s); ignoring it", key, exc.message)
            return None
        if entry is None:
            return await self._load_shared(key)
        self._memory.put(entry)
        return entry

    def _read_stored(self, key: CacheKey) -> Entry[Any] | None:
        """(In a thread.) The stored body, verified, with its sidecar."""
        body = self.storage.read(key)
        if body is None:
            return None
        decoded = self._decode(key, body)
        digest = hashlib.sha256(body).hexdigest()
        meta = self.storage.read_meta(key)
        if meta is None or meta.sha256 != digest:
            # The sidecar does not describe this body (crash between renames):
            # keep the body, but revalidate it at the next request.
            meta = Meta(digest, len(body), self.clock(), 0.0)
        return Entry(key, body, meta, decoded)

    async def _load_shared(self, key: CacheKey) -> Entry[Any] | None:
        """Another replica's copy, verified here exactly as if upstream had sent it, then
        kept on this replica's disk. Its freshness is what that replica recorded."""
        if self._negative.active(key, self.clock()):
            return None  # upstream said 404 a moment ago: no store request per retry
        blob = await self.shared.get(key) if self.shared is not None else None
        if blob is None:
            return None
        try:
            decoded = await asyncio.to_thread(self._decode, key, blob.body)
        except VerificationError as exc:
            self.counters.failure(f"shared store {key}: {exc.message}")
            assert self.shared is not None
            self.shared.rejected(key, exc.message)
            return None
        try:
            await asyncio.to_thread(self.storage.put, key, blob.body, blob.meta)
        except OSError as exc:
            log.warning("cannot store %s (%s); serving it from memory", key, exc.strerror)
        entry = Entry(key, blob.body, blob.meta, decoded)
        self._memory.put(entry)
        return entry

    def can_refetch(self) -> bool:
        """Could a file removed now be fetched again? Not offline, and upstream answering.

        The repository's breaker decides: it serves nearly everything stored, and a
        builds host that a locked-down network never reaches must not stop eviction
        for good."""
        return not self.offline and self.upstream.repository.breaker.state is State.UP

    def forget(self, key: CacheKey) -> None:
        """Drop what this process holds for ``key`` (after an operator removed it)."""
        self._memory.pop(key)
        self._negative.discard(key)
        self._backoff.succeeded(key)

    def _check_negative(self, key: CacheKey) -> None:
        if self._negative.active(key, self.clock()):
            raise NotFound(f"{key} not found upstream")

    def _remember_missing(self, key: CacheKey) -> None:
        self._negative.add(key, self.clock() + self.config.cache.negative_ttl)

    # ----- immutable objects: tarballs, docs, installer builds -----

    def known_file(self, key: CacheKey) -> StoredFile | None:
        """What this process last knew of a stored file (no I/O; the caller checks it)."""
        return self._memory.file(key)

    def recount(self, held: Entry[Any] | StoredFile) -> None:
        """What ``held`` keeps on its memo changed size: count it against the budget."""
        self._memory.recount(held)

    def memory_fits(self, size: int) -> bool:
        """Is ``size`` bytes small enough to keep in memory for one object?"""
        return self._memory.fits(size)

    async def load_stored_file(self, key: CacheKey) -> StoredFile | None:
        """The stored copy, if there is one (a stat per call, in a thread: another process
        may prune), reading (or rebuilding) its sidecar on first use."""
        known = self._memory.file(key)
        found = await asyncio.to_thread(self._stat_stored, key, known)
        if found is None:
            self._memory.pop(key)
        elif found is not known:
            self._memory.put(found)
        return found

    def _stat_stored(self, key: CacheKey, known: StoredFile | None) -> StoredFile | None:
        """(In a thread.)"""
        st = self.storage.stat(key)
        if st is None:
            return None
        if known is not None and known.size == st.st_size:
            return known
        path = self.storage.path(key)
        meta = self.storage.read_meta(key)
        if meta is None or meta.size != st.st_size:
            meta = Meta(sha256_file(path), st.st_size, st.st_mtime, st.st_mtime)
            self.storage.write_meta(key, meta)
        return StoredFile(key, path, st.st_size, meta.sha256, meta.stored_at)

    async def get_file(self, key: CacheKey) -> StoredFile | Download:
        """A stored immutable object, or the running fetch of it."""
        stored = await self.load_stored_file(key)
        if stored is not None:
            return stored
        running = self._downloads.get(key)
        if running is not None:
            return running
        await self.verdicts.learn(key)
        self._check_negative(key)
        # Offline, a shared store is still asked: an air-gapped site's replicas share it.
        if self.offline and self.shared is None:
            raise self._offline_miss(key)
        if key.kind is Kind.INSTALL and not self.offline:
            self.builds.check(key)
        self._check_backoff(key)
        try:
            expected = await self.expected_checksum(key)
            digest = await self.expected_install_digest(key)
        except NotCached:
            raise
        except NotFound:
            self._remember_missing(key)
            raise
        # Awaiting the registry may have let another request start (or finish) it.
        stored = await self.load_stored_file(key)
        if stored is not None:
            return stored
        if self.shared is not None and key not in self._downloads:
            stored = await self._fill_from_shared(key, expected, digest)
            if stored is not None:
                return stored
        if self.offline:
            raise self._offline_miss(key)
        return self._downloads.get(key) or self._start_download(key, expected, digest)

    async def _fill_from_shared(
        self, key: CacheKey, expected: bytes | None, digest: tuple[str, bytes] | None
    ) -> StoredFile | None:
        """The shared store's copy, verified and stored on this replica's disk (one fill
        per key however many clients ask); None sends the request upstream."""
        task = self._fills.get(key)
        if task is None:
            task = asyncio.create_task(self._fill(key, expected, digest), name=f"fill {key}")
            self._fills[key] = task
            task.add_done_callback(lambda _: self._fills.pop(key, None))
        return await asyncio.shield(task)

    async def _fill(
        self, key: CacheKey, expected: bytes | None, digest: tuple[str, bytes] | None
    ) -> StoredFile | None:
        assert self.shared is not None
        blob = await self.shared.get(key)
        if blob is None:
            return None
        problem = await asyncio.to_thread(
            shared_copy_problem, blob.body, expected, digest, self.config.upstream.max_tarball_size
        )
        if problem is not None:
            self.counters.failure(f"shared store {key}: {problem}")
            self.shared.rejected(key, problem)
            return None
        sha256 = hashlib.sha256(blob.body).hexdigest()
        meta = replace(blob.meta, sha256=sha256, size=len(blob.body))
        try:
            await asyncio.to_thread(self.storage.put, key, blob.body, meta)
        except OSError as exc:
            log.warning("cannot store %s from the shared store (%s)", key, exc.strerror)
            return None
        return await self.load_stored_file(key)

    async def expected_checksum(self, key: CacheKey) -> bytes | None:
        """The signed outer checksum a tarball must match (None for unsigned kinds)."""
        if key.kind is not Kind.TARBALL:
            return None
        package = await self.get_package(key.name)
        release = package.entry.decoded.release(key.version)
        if release is None and package.status in (Status.HIT, Status.STALE) and not self.offline:
            package = await self._look_again(package, key)
            release = package.entry.decoded.release(key.version)
        if release is None and self.offline:
            raise NotCached(f"{key.name} {key.version} is not in this offline cache")
        if release is None:
            raise NotFound(f"{key.name} has no release {key.version}")
        if release.outer_checksum is None:
            raise VerificationError(
                f"{key.name} {key.version} has no outer checksum in its signed registry "
                "entry, so its tarball cannot be verified"
            )
        return release.outer_checksum

    async def _look_again(self, package: Answer[Package], key: CacheKey) -> Answer[Package]:
        """The release may have been published since we cached the package file: fetch it
        once more, but at most once per negative_ttl per package and only while upstream
        is up. Clients can name endless releases that do not exist; without this rule
        each would cost an upstream request (an amplifier aimed at upstream)."""
        entry, now = package.entry, self.clock()
        if now - entry.meta.validated_at < self.config.cache.negative_ttl:
            return package  # checked recently enough: the release is unknown
        if (
            self.upstream.breaker_for(entry.key).state is not State.UP
            or self._backoff.holding(entry.key, now) is not None
        ):
            # Named by its path, so that the log can aggregate these across releases.
            raise UpstreamUnavailable(
                f"{key} is not in the cached package file, and upstream cannot be asked now"
            )
        return await self._wait_for(entry.key, self._join_flight(entry.key, entry))

    def _start_download(
        self, key: CacheKey, expected: bytes | None, digest: tuple[str, bytes] | None = None
    ) -> Download:
        upstream = self.config.upstream
        download = Download(
            key,
            storage=self.storage,
            upstream=self.upstream,
            expected_sha256=expected,
            max_size=upstream.max_tarball_size,
            lock_timeout=upstream.total_timeout,
            on_verification_failure=lambda k, e: self._download_failed(k, e),
            expected_digest=digest,
            recheck=lambda: self._heard_elsewhere(key),
            settle=lambda error: self.verdicts.settle(key, error),
        )
        self._downloads[key] = download
        self.counters.upstream_fetches += 1
        download.start()
        assert download.task is not None
        download.task.add_done_callback(lambda _: self._download_done(key, download))
        return download

    def _download_failed(self, key: CacheKey, error: HexproxyError) -> None:
        self.counters.failure(f"{key}: {error.message}")
        log.error("verification failed for %s: %s", key, error.message)
        self._count_against_upstream(key, f"{key}: {error.message}")

    def _download_done(self, key: CacheKey, download: Download) -> None:
        if self._downloads.get(key) is download:
            del self._downloads[key]
        if download.stored and download.sha256 and self.shared is not None:
            now = self.clock()
            meta = Meta(download.sha256, download.written, now, now)
            self.shared.publish_file(key, download.path, meta)
        if download.error is None:
            self._backoff.succeeded(key)

    async def started(self, download: Download) -> None:
        """A client of an in-flight fetch gets its first byte, or an error saying why not,
        within inflight_wait: one slow object must not pile up every client that asks for
        it (with clients that send one request at a time, that stalls them all). An
        upstream error before the first byte is a clean status too."""
        wait = self.config.upstream.inflight_wait
        try:
            await asyncio.wait_for(asyncio.shield(download.started), wait)
        except TimeoutError:
            if download.waiting_for_lock:
                raise Busy(
                    f"{download.key} is being fetched by another worker; ask again shortly"
                ) from None
            raise UpstreamTimeout(
                f"upstream has not started sending {download.key} within {wait:g} s; still trying"
            ) from None
        except HexproxyError as exc:
            raise self._download_error(download.key, exc) from None

    def _offline_miss(self, key: CacheKey) -> NotCached | InstallsUnavailable:
        if key.kind is Kind.INSTALL:
            return self.builds.offline_miss(key)
        return NotCached(f"{key} is not in this offline cache")

    def _download_error(self, key: CacheKey, error: HexproxyError) -> HexproxyError:
        if key.kind is Kind.INSTALL and isinstance(error, UpstreamError):
            return self.builds.failed(key, error)
        return error

    async def fetch_file(self, key: CacheKey) -> StoredFile:
        """Make sure an immutable object is stored (for HEAD and for warm)."""
        got = await self.get_file(key)
        if isinstance(got, StoredFile):
            return got
        assert got.task is not None
        await asyncio.shield(got.task)
        if got.error is not None:
            raise self._download_error(key, got.error)
        stored = await self.load_stored_file(key)
        if stored is None:
            raise UpstreamUnavailable(f"{key} was fetched but could not be stored")
        return stored
