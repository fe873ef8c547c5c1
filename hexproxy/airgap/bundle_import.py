"""Check a bundle in: every member verified before it touches the cache.

Import trusts nothing in the bundle, the manifest included. A member is only
stored when all of these hold:

* its name is exactly the cache path of a valid key (so no ``..``, no absolute
  paths, no links, nothing outside the cache tree), and the manifest lists it;
* its bytes have the manifest's size and sha256 (catches a damaged copy);
* a registry file verifies against the configured public key and repository
  name (``Cache.gate``, the server's own gate);
* a tarball's sha256 is the outer checksum of its release in a verified
  ``/packages/NAME``: the bundle's own copy if that verified, else the cache's.

A registry file never replaces a newer one already in the cache. "Newer" is
decided by content first: the bundle's copy replaces the cache's only if it lists
a strict superset of the releases (or package names), since Hex only ever adds
releases. When both list the same set (a retirement changed) or neither contains
the other (a release was unpublished), the copy validated against upstream more
recently wins; the manifest carries that time, and a tie keeps the cache's copy.
The time is unsigned, but it can only choose between two correctly signed files.

Writes go through ``FileStorage.put`` (temp file, fsync, rename), so an
interrupted import leaves whole objects or nothing. A running proxy keeps
registry files it has already loaded in memory: import before starting it, or
restart it afterwards.
"""

from __future__ import annotations

import hashlib
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..cache.gate import RegistryFile
from ..cache.policy import Cache
from ..errors import VerificationError
from ..hosted import Hosted
from ..hosted.repository import MAX_REGISTRY
from ..hosted.transfer import PREFIX as HOSTED_PREFIX
from ..hosted.transfer import import_files
from ..registry import Names, Package
from ..store.cachekey import CacheKey, Kind, package_key
from ..store.storage import Meta
from .bundle import (
    ALREADY_CACHED,
    MANIFEST,
    BundleError,
    ManifestEntry,
    key_from_path,
    open_tar,
    read_manifest,
    read_member,
)


@dataclass
class ImportReport:
    added: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)
    bytes: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.refused


def import_bundle(cache: Cache, source: Path, hosted: Hosted | None = None) -> ImportReport:
    """Verify every member of ``source`` and store the good ones in ``cache.storage``;
    members under ``hosted/`` go to the hosted repositories (hosted/transfer.py)."""
    started = time.monotonic()
    with open_tar(source) as tar:
        try:
            importer = _Importer(cache, tar, read_manifest(tar))
        except (tarfile.TarError, EOFError) as exc:
            raise BundleError(f"{source} is damaged: {exc}") from None
        importer.run()
    report = importer.report
    if importer.hosted_files and hosted is None:
        reason = "no hosted repositories are configured here"
        report.refused += [(path, reason) for path in sorted(importer.hosted_files)]
    elif importer.hosted_files and hosted is not None:
        outcome = import_files(hosted, importer.hosted_files)
        report.added += outcome.added
        report.skipped += outcome.skipped
        report.refused += outcome.refused
        report.bytes += sum(len(importer.hosted_files[p]) for p in outcome.added)
    report.seconds = time.monotonic() - started
    return report


class _Importer:
    def __init__(self, cache: Cache, tar: tarfile.TarFile, manifest: dict[str, ManifestEntry]):
        self.cache = cache
        self.gate = cache.gate
        self.storage = cache.storage
        self.tar = tar
        self.manifest = manifest
        self.report = ImportReport()
        # Verified /packages/NAME from the bundle, to check its tarballs against.
        self.signed: dict[str, Package] = {}
        # hosted/... members whose bytes match the manifest; checked by hosted/transfer.py.
        self.hosted_files: dict[str, bytes] = {}

    def run(self) -> None:
        members = self._members()
        for key, member in sorted(members.items(), key=lambda km: _import_order(km[0])):
            try:
                self._import(key, member)
            except VerificationError as exc:
                self.report.refused.append((key.path, exc.message))
            except (tarfile.TarError, EOFError) as exc:
                self.report.refused.append((key.path, f"unreadable in the bundle: {exc}"))

    def _members(self) -> dict[CacheKey, tarfile.TarInfo]:
        """Members that may be imported; every other one is refused by name."""
        found: dict[CacheKey, tarfile.TarInfo] = {}
        for member in self.tar.getmembers():
            if member.name == MANIFEST:
                continue
            if member.name.startswith(HOSTED_PREFIX):
                self._hosted_member(member)
                continue
            key = key_from_path(member.name)
            problem = _member_problem(member, key, self.manifest, found)
            if problem is not None or key is None:
                self.report.refused.append((member.name, problem or "not a cache path"))
                continue
            found[key] = member
        listed = {key.path for key in found} | set(self.hosted_files)
        for path in sorted(set(self.manifest) - listed):
            if all(path != name for name, _ in self.report.refused):
                self.report.refused.append((path, "listed in the manifest but not in the bundle"))
        return found

    def _hosted_member(self, member: tarfile.TarInfo) -> None:
        entry = self.manifest.get(member.name)
        limit = max(self.cache.config.hosted.max_tarball_size, MAX_REGISTRY)
        if entry is None or not member.isfile() or member.size != entry.size or member.size > limit:
            self.report.refused.append((member.name, "not listed in the manifest as this file"))
            return
        body = read_member(self.tar, member)
        if hashlib.sha256(body).hexdigest() != entry.sha256:
            self.report.refused.append((member.name, "sha256 differs from the manifest's"))
            return
        self.hosted_files[member.name] = body

    def _import(self, key: CacheKey, member: tarfile.TarInfo) -> None:
        body = self._body(key, member)
        if key.is_registry:
            self._import_registry(key, body)
        else:
            self._import_tarball(key, body)

    def _body(self, key: CacheKey, member: tarfile.TarInfo) -> bytes:
        """The member's bytes, if they are what the manifest says."""
        entry = self.manifest[key.path]
        upstream = self.cache.config.upstream
        limit = upstream.max_registry_size if key.is_registry else upstream.max_tarball_size
        if member.size > limit or member.size != entry.size:
            raise VerificationError(f"size {member.size} is not the manifest's or over the limit")
        body = read_member(self.tar, member)
        if hashlib.sha256(body).hexdigest() != entry.sha256:
            raise VerificationError("sha256 differs from the manifest's")
        return body

    def _import_registry(self, key: CacheKey, body: bytes) -> None:
        decoded = self.gate.registry_file(key, body)
        if isinstance(decoded, Package):
            self.signed[decoded.name] = decoded
        validated = min(self.manifest[key.path].validated_at or 0.0, time.time())
        reason = self._keep_local(key, body, decoded, validated)
        if reason is not None:
            self.report.skipped.append((key.path, reason))
            return
        self._store(key, body, validated)

    def _keep_local(
        self, key: CacheKey, body: bytes, decoded: RegistryFile, validated: float
    ) -> str | None:
        """Why the cache's copy stays, or None to store the bundle's (see module doc)."""
        local = self.storage.read(key)
        if local is None:
            return None
        if local == body:
            return ALREADY_CACHED
        try:
            local_decoded = self.gate.registry_file(key, local)
        except VerificationError:
            return None  # a stored copy that does not verify is worth nothing
        ours, theirs = _contents(local_decoded), _contents(decoded)
        if theirs > ours:
            return None
        if theirs < ours:
            return "the cache's copy is newer (it lists more releases)"
        meta = self.storage.read_meta(key)
        local_validated = meta.validated_at if meta is not None else 0.0
        if validated > local_validated:
            return None
        return "the cache's copy was validated against upstream more recently"

    def _import_tarball(self, key: CacheKey, body: bytes) -> None:
        expected = self._outer_checksum(key)
        digest = hashlib.sha256(body).hexdigest()
        if digest != expected:
            raise VerificationError(
                f"sha256 {digest} is not the signed outer checksum of {key.name} {key.version}"
            )
        meta = self.storage.read_meta(key)
        if meta is not None and meta.sha256 == digest and self.storage.stat(key) is not None:
            self.report.skipped.append((key.path, ALREADY_CACHED))
            return
        self._store(key, body, time.time())

    def _outer_checksum(self, key: CacheKey) -> str:
        """From the bundle's verified package file, else from the cache's."""
        package = self.signed.get(key.name) or self._cached_package(key.name)
        if package is None:
            raise VerificationError(f"no verified /packages/{key.name} to check it against")
        release = package.release(key.version)
        if release is None or release.outer_checksum is None:
            raise VerificationError(f"the signed registry has no checksum for {key.version}")
        return release.outer_checksum.hex()

    def _cached_package(self, name: str) -> Package | None:
        body = self.storage.read(package_key(name))
        if body is None:
            return None
        try:
            return self.gate.package(name, body)
        except VerificationError:
            return None

    def _store(self, key: CacheKey, body: bytes, validated_at: float) -> None:
        now = time.time()
        digest = hashlib.sha256(body).hexdigest()
        self.storage.put(key, body, Meta(digest, len(body), now, validated_at))
        self.report.added.append(key.path)
        self.report.bytes += len(body)


def _member_problem(
    member: tarfile.TarInfo,
    key: CacheKey | None,
    manifest: dict[str, ManifestEntry],
    found: dict[CacheKey, tarfile.TarInfo],
) -> str | None:
    if key is None:
        return "not a cache path"
    if not member.isfile():
        return "not a regular file"
    if key in found:
        return "appears twice in the bundle"
    entry = manifest.get(member.name)
    if entry is None:
        return "not listed in the manifest"
    if entry.kind != key.kind.value:
        return f"the manifest calls it {entry.kind!r}"
    return None


def _import_order(key: CacheKey) -> tuple[int, str]:
    # Package files first: their tarballs are checked against them.
    rank = {Kind.PACKAGE: 0, Kind.NAMES: 1, Kind.VERSIONS: 1}.get(key.kind, 2)
    return rank, key.path


def _contents(decoded: RegistryFile) -> frozenset[str]:
    """What a registry file lists; Hex only adds to it, so a superset is newer."""
    if isinstance(decoded, Package):
        return frozenset(release.version for release in decoded.releases)
    if isinstance(decoded, Names):
        return frozenset(decoded.packages)
    return frozenset(f"{e.name} {v}" for e in decoded.packages for v in e.versions)
