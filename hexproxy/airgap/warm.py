"""Fill the cache ahead of time with what projects will ask for.

Everything goes through ``Cache.get_package`` and ``Cache.fetch_file``, the path
the server uses, so a warmed file has passed the same signature, origin and
checksum checks as a served one, and nothing unverified is ever stored. Being
idempotent falls out of that: a stored tarball is not fetched again, and a
registry file is only revalidated once it is older than the registry TTL.

Requests run in parallel under one semaphore (``jobs``). Each failure is
recorded with its reason and the rest carries on, so one bad package does not
hide the state of the others. With an offline cache, warming fetches nothing
and becomes a check that the cache holds everything (``export`` uses that).

Packages of a hex.pm organization come through that organization's ``Source`` (see
hexproxy.orgs.OrgSource: the same policy the server applies, with one key), and
their dependencies on public packages through the public cache, as clients do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from ..cache.entries import Answer, Status, StoredFile
from ..cache.policy import Cache
from ..errors import ChecksumMismatch, HexproxyError
from ..registry import Package, Release
from ..registry.versions import InvalidRequirement
from ..store.cachekey import CacheKey, package_key, tarball_key
from ..store.storage import FileStorage
from ..units import format_size
from .lockfiles import LockedPackage
from .resolve import Spec, Want, check_locked, dependency_wants, select_versions

DEFAULT_JOBS = 8


@dataclass
class WarmReport:
    """What a run did; ``keys`` is every cache object the inputs need (for export)."""

    packages: int = 0  # /packages/NAME files now cached and verified
    releases: int = 0  # releases chosen
    registry_fetched: int = 0  # registry files fetched or revalidated upstream
    tarballs_fetched: int = 0
    already_cached: int = 0  # registry files and tarballs that needed no request
    bytes: int = 0  # bytes fetched from upstream
    failures: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    keys: set[CacheKey] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        data["keys"] = sorted(key.path for key in self.keys)
        data["failures"] = [{"what": w, "reason": r} for w, r in self.failures]
        data["skipped"] = [{"what": w, "reason": r} for w, r in self.skipped]
        return data


@dataclass(frozen=True)
class WarmInputs:
    """What to warm: specs, lock entries, and lock entries already set aside."""

    specs: list[Spec] = field(default_factory=list)
    locked: list[LockedPackage] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


Progress = Callable[[WarmReport], None]


class Source(Protocol):
    """Where one repository's objects come from (the public Cache has this shape)."""

    offline: bool
    storage: FileStorage

    async def get_package(self, name: str) -> Answer[Package]: ...

    async def load_stored_file(self, key: CacheKey) -> StoredFile | None: ...

    async def fetch_file(self, key: CacheKey) -> StoredFile: ...

    def forget(self, key: CacheKey) -> None: ...


async def warm(
    cache: Cache,
    inputs: WarmInputs,
    *,
    jobs: int = DEFAULT_JOBS,
    all_versions: bool = False,
    progress: Progress | None = None,
    orgs: Mapping[str, Source] | None = None,
    top_repository: str | None = None,
) -> WarmReport:
    """Warm ``inputs`` into ``cache`` (whose upstream client must be started).

    ``orgs`` maps organization names to their sources; ``top_repository`` is where the
    SPECs are (default: the public repository).
    """
    warmer = _Warmer(cache, jobs, all_versions, progress or (lambda _: None), orgs or {})
    if top_repository is not None:
        warmer.top = top_repository
    started = time.monotonic()
    await warmer.run(inputs)
    warmer.report.seconds = time.monotonic() - started
    return warmer.report


class _Warmer:
    def __init__(
        self,
        cache: Cache,
        jobs: int,
        all_versions: bool,
        progress: Progress,
        orgs: Mapping[str, Source],
    ) -> None:
        self.cache = cache
        self.repository = cache.config.upstream.repo_name
        self.top = self.repository
        self.sources: dict[str, Source] = {self.repository: cache, **orgs}
        self.all_versions = all_versions
        self.progress = progress
        self.report = WarmReport()
        self._slots = asyncio.Semaphore(max(1, jobs))
        self._packages: dict[tuple[str, str], asyncio.Task[Package | None]] = {}
        self._wants: set[Want] = set()
        self._releases: set[tuple[str, str, str]] = set()
        self._group = asyncio.TaskGroup()

    async def run(self, inputs: WarmInputs) -> None:
        self.report.skipped.extend(inputs.skipped)
        async with self._group:
            for spec in inputs.specs:
                self._spawn(self._want(spec.want(self.top)))
            for locked in inputs.locked:
                self._spawn(self._locked(locked))
        self.progress(self.report)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._group.create_task(coro)

    def _fail(self, what: str, reason: str) -> None:
        self.report.failures.append((what, reason))
        self.progress(self.report)

    def _repository(self, repository: str) -> str:
        """mix.lock names an organization ``hexpm:ORG``; registries and specs say ``ORG``."""
        parent, sep, org = repository.partition(":")
        return org if sep and parent == self.repository else repository

    def _org(self, repository: str) -> str:
        return "" if repository == self.repository else repository

    def _served(self, name: str, repository: str, shown: str | None = None) -> bool:
        """Only repositories we have a source for can be warmed; others are said, not failed."""
        if repository in self.sources:
            return True
        served = " or ".join(repr(r) for r in self.sources)
        self.report.skipped.append(
            (name, f"in repository {shown or repr(repository)}, not {served} which this run serves")
        )
        return False

    async def _package(self, name: str, repository: str) -> Package | None:
        """The verified /packages/NAME, fetched once however many paths lead to it."""
        task = self._packages.get((repository, name))
        if task is None:
            task = asyncio.ensure_future(self._load_package(name, repository))
            self._packages[(repository, name)] = task
        return await task

    async def _load_package(self, name: str, repository: str) -> Package | None:
        try:
            async with self._slots:
                answer = await self.sources[repository].get_package(name)
        except HexproxyError as exc:
            self._fail(str(package_key(name, self._org(repository))), exc.message)
            return None
        self._count_package(answer)
        return answer.entry.decoded

    def _count_package(self, answer: Answer[Package]) -> None:
        status = answer.status
        self.report.packages += 1
        self.report.keys.add(answer.entry.key)
        if status in (Status.MISS, Status.REVALIDATED):
            self.report.registry_fetched += 1
            self.report.bytes += len(answer.entry.body) if status is Status.MISS else 0
        else:
            self.report.already_cached += 1
        self.progress(self.report)

    async def _want(self, want: Want) -> None:
        """Satisfy one requirement, then everything its chosen releases depend on."""
        if want in self._wants or not self._served(want.name, want.repository):
            return
        self._wants.add(want)
        package = await self._package(want.name, want.repository)
        if package is None:
            return
        try:
            chosen = select_versions(
                package, want.requirement, all_versions=want.top and self.all_versions
            )
        except InvalidRequirement as exc:
            self._fail(want.name, str(exc))
            return
        if not chosen:
            self._fail(want.name, f"no release matches {want.requirement!r}")
        for version in chosen:
            release = package.release(version)
            assert release is not None
            self._release(package.name, release, want.repository)
            for dep in dependency_wants(release, want.repository):
                self._spawn(self._want(dep))

    async def _locked(self, locked: LockedPackage) -> None:
        what = f"{locked.name} {locked.version}"
        repository = self._repository(locked.repository)
        if not self._served(what, repository, repr(locked.repository)):
            return
        package = await self._package(locked.name, repository)
        if package is None:
            return
        release, problem = check_locked(package, locked)
        if release is None:
            self._fail(what, problem or "not in the registry")
            return
        self._release(locked.name, release, repository)

    def _release(self, name: str, release: Release, repository: str) -> None:
        if (repository, name, release.version) in self._releases:
            return
        self._releases.add((repository, name, release.version))
        self.report.releases += 1
        self._spawn(self._tarball(name, release, repository))

    async def _tarball(self, name: str, release: Release, repository: str) -> None:
        what = f"{name} {release.version}"
        try:
            key = tarball_key(name, release.version, self._org(repository))
            async with self._slots:
                await self._ensure_tarball(self.sources[repository], key, release)
        except HexproxyError as exc:
            self._fail(what, exc.message)
            return
        self.report.keys.add(key)
        self.progress(self.report)

    async def _ensure_tarball(self, source: Source, key: CacheKey, release: Release) -> None:
        """Fetch unless a copy with the signed checksum is stored.

        A stored copy whose recorded digest is not the signed one (a file
        changed behind our back) is dropped and fetched again.
        """
        stored = await source.load_stored_file(key)
        expected = release.outer_checksum.hex() if release.outer_checksum else None
        if stored is not None and stored.sha256 == expected:
            self.report.already_cached += 1
            return
        if stored is not None and source.offline:
            # Offline (a check, or export): say so, but leave the cache as it is.
            raise ChecksumMismatch(f"stored {key} does not match its signed checksum")
        if stored is not None:
            await asyncio.to_thread(source.storage.delete, key)
            source.forget(key)
        stored = await source.fetch_file(key)
        self.report.tarballs_fetched += 1
        self.report.bytes += stored.size


def describe(report: WarmReport) -> str:
    """The one-line progress text (also the start of the summary)."""
    return (
        f"{report.packages} packages, {report.releases} releases, "
        f"{report.tarballs_fetched} tarballs fetched, {report.already_cached} already cached, "
        f"{format_size(report.bytes)} downloaded, {len(report.failures)} failed"
    )


def summary_lines(report: WarmReport, verb: str = "warmed") -> Iterable[str]:
    yield f"{verb}: {describe(report)} in {report.seconds:.1f}s"
    for what, reason in report.skipped:
        yield f"skipped {what}: {reason}"
    for what, reason in report.failures:
        yield f"FAILED {what}: {reason}"
