"""One hosted repository on disk: its signed registry, tarballs and docs, and every change.

Layout under ``hosted.dir/NAME/`` (nothing here is a cache: back it up, never prune it)::

    private_key.pem         the signing key, mode 0600 (unless configured elsewhere)
    lock                    flock()ed by every change, across threads and processes
    current -> gens/00000042
    gens/00000042/          one generation: names, versions, packages/NAME (signed)
    blobs/SHA256.tar        tarballs, named by their outer checksum
    docs/NAME-VERSION.tar.gz

**Readers see the old registry or the new one, never a mix**: a change writes
``packages/NAME``, ``names`` and ``versions`` as a new generation and swaps it in with one
rename (generations.py); it never reads or copies the other packages or any tarball.

**Tarballs are content-addressed**: ``/tarballs/NAME-VERSION.tar`` serves the blob whose
sha256 is the release's signed outer checksum in the current registry, so replacing a
release switches registry and tarball in the same rename, and what is served always
matches what is signed.

**Changes are serialized per repository** by ``flock`` on ``lock`` (held by the publishing
thread, the CLI, or another worker process), so concurrent publishes never lose one
another's release.

Dependency repositories: a requirement keeps the repository its metadata names (only
this repository or the mirrored one, ``hexpm``, are allowed, as on hex.pm); when it names
none (rebar3_hex writes none), it is this repository if this repository has a package
of that name, else ``hexpm``. Dependencies on this repository are stored without a
repository field, which clients read as "the parent's repository".
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import VerificationError
from ..registry import (
    Dependency,
    Names,
    Package,
    Release,
    Retirement,
    RetirementReason,
    Versions,
    VersionsEntry,
    build_names,
    build_package,
    build_versions,
    docs_filename,
    fingerprint,
    public_key_pem,
    verify_names,
    verify_package,
    verify_versions,
)
from ..registry.versions import Version
from .errors import ReleaseNotFound, ValidationFailed
from .generations import Generations, fsync_dir, sha256_file, write_synced
from .package import Requirement, UploadedPackage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

__all__ = [
    "RETIREMENT_REASONS",
    "BlobFile",
    "HostedRepository",
    "Problem",
    "dependency_repository",
]

MAX_REGISTRY = 64 * 1024 * 1024
RETIREMENT_REASONS = {
    "other": RetirementReason.OTHER,
    "invalid": RetirementReason.INVALID,
    "security": RetirementReason.SECURITY,
    "deprecated": RetirementReason.DEPRECATED,
    "renamed": RetirementReason.RENAMED,
}


@dataclass(frozen=True, slots=True)
class BlobFile:
    """A release's tarball on disk, named by its sha256."""

    path: Path
    size: int
    sha256: str
    mtime: float


@dataclass(frozen=True, slots=True)
class Problem:
    """What ``verify`` found wrong with one file."""

    path: str
    problem: str
    orphan: bool = False


@dataclass
class _State:
    """The current registry, decoded: what a change starts from."""

    names: list[str]
    versions: dict[str, VersionsEntry]
    packages: dict[str, Package] = field(default_factory=dict)


def dependency_repository(req: Requirement, repo: str, public: str, own: set[str]) -> str | None:
    """The repository a requirement points to, as stored (None: the package's own)."""
    if req.repository is not None:
        if req.repository == repo:
            return None
        if req.repository == public:
            return public
        raise ValidationFailed.field(
            "requirements",
            f"dependency {req.name}: repository {req.repository!r} is neither {repo!r} "
            f"nor {public!r}",
        )
    return None if req.name in own else public


class HostedRepository:
    """The files of one hosted repository; every change goes through ``_change``."""

    def __init__(self, name: str, root: Path, key: RSAPrivateKey, public: str = "hexpm"):
        self.name = name
        self.root = root
        self.key = key
        self.public = public  # the mirrored repository's name, for dependencies
        self.public_key = key.public_key()
        self.public_key_pem = public_key_pem(self.public_key)
        self.fingerprint = fingerprint(self.public_key)
        self.generations = Generations(root)
        self.gens = self.generations.gens
        self.blobs = root / "blobs"
        self.docs = root / "docs"
        self.tmp = root / "tmp"

    # ----- setup -----

    def prepare(self) -> None:
        """Create the tree, and an empty signed registry if there is none yet."""
        for directory in (self.gens, self.blobs, self.docs, self.tmp):
            directory.mkdir(parents=True, exist_ok=True)
        if not self.generations.exists():
            with self.locked():
                if not self.generations.exists():
                    self._store_all(_State([], {}), {})

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the repository's change lock (blocking), across threads and processes."""
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # ----- reading (no lock: every open goes through ``current``) -----

    def read_registry(self, resource: str) -> bytes | None:
        """``names``, ``versions`` or ``packages/NAME`` of the current generation."""
        return self.generations.read(resource)

    def package(self, name: str) -> Package | None:
        body = self.read_registry(f"packages/{name}")
        if body is None:
            return None
        return verify_package(
            body, self.public_key, repository=self.name, name=name, max_uncompressed=MAX_REGISTRY
        )

    def versions(self) -> Versions:
        body = self.read_registry("versions")
        if body is None:
            return Versions(self.name, ())
        return verify_versions(
            body, self.public_key, repository=self.name, max_uncompressed=MAX_REGISTRY
        )

    def release(self, name: str, version: str) -> Release:
        package = self.package(name)
        release = package.release(version) if package else None
        if release is None:
            raise ReleaseNotFound(f"{self.name} has no release {name} {version}")
        return release

    def tarball(self, name: str, version: str) -> BlobFile | None:
        package = self.package(name)
        release = package.release(version) if package else None
        if release is None or release.outer_checksum is None:
            return None
        digest = release.outer_checksum.hex()
        path = self.blobs / f"{digest}.tar"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return BlobFile(path, stat.st_size, digest, stat.st_mtime)

    def docs_path(self, name: str, version: str) -> Path:
        return self.docs / docs_filename(name, version)

    # ----- changes -----

    def publish(self, upload: UploadedPackage, data: bytes, *, replace: bool) -> bool:
        """Add (or with ``replace``, replace) a release; True if it is new."""
        with self.locked():
            state = self._load()
            package = self._package(state, upload.name)
            old = package.release(upload.version) if package else None
            if old is not None and not replace:
                raise ValidationFailed.field(
                    "inserted_at", "must include the --replace flag to update an existing release"
                )
            own = {*state.names, upload.name}
            deps = tuple(
                Dependency(
                    r.name,
                    r.requirement,
                    r.optional,
                    r.app,
                    dependency_repository(r, self.name, self.public, own),
                )
                for r in upload.requirements
            )
            release = Release(
                version=upload.version,
                inner_checksum=upload.inner_checksum,
                outer_checksum=upload.outer_checksum,
                dependencies=deps,
            )
            self._write_blob(data, upload.outer_checksum.hex())
            others = [r for r in (package.releases if package else ()) if r is not old]
            self._store(state, upload.name, [*others, release])
            if old is not None and old.outer_checksum not in (None, upload.outer_checksum):
                self._drop_blob(old)
        return old is None

    def revert(self, name: str, version: str) -> None:
        """Remove a release (and its docs); the last one takes the package with it."""
        with self.locked():
            state = self._load()
            package = self._package(state, name)
            old = package.release(version) if package else None
            if package is None or old is None:
                raise ReleaseNotFound(f"{self.name} has no release {name} {version}")
            self._store(state, name, [r for r in package.releases if r is not old])
            self._drop_blob(old)
            self.docs_path(name, version).unlink(missing_ok=True)

    def retire(self, name: str, version: str, reason: str, message: str) -> None:
        code = RETIREMENT_REASONS.get(reason)
        if code is None:
            choices = ", ".join(RETIREMENT_REASONS)
            raise ValidationFailed.field("reason", f"must be one of {choices}")
        if not 3 <= len(message) <= 140:
            raise ValidationFailed.field("message", "must be between 3 and 140 characters")
        self._update_release(name, version, lambda r: replace(r, retired=Retirement(code, message)))

    def unretire(self, name: str, version: str) -> None:
        self._update_release(name, version, lambda r: replace(r, retired=None))

    def put_docs(self, name: str, version: str, data: bytes) -> None:
        with self.locked():
            self.release(name, version)  # docs belong to a published release
            self._install(data, self.docs_path(name, version))

    def delete_docs(self, name: str, version: str) -> bool:
        with self.locked():
            path = self.docs_path(name, version)
            existed = path.exists()
            path.unlink(missing_ok=True)
            return existed

    def _update_release(
        self, name: str, version: str, change: Callable[[Release], Release]
    ) -> None:
        with self.locked():
            state = self._load()
            package = self._package(state, name)
            old = package.release(version) if package else None
            if package is None or old is None:
                raise ReleaseNotFound(f"{self.name} has no release {name} {version}")
            self._store(state, name, [change(r) if r is old else r for r in package.releases])

    # ----- inside the lock -----

    def _load(self) -> _State:
        names_body = self.read_registry("names")
        if names_body is None:
            return _State([], {})
        names = verify_names(
            names_body, self.public_key, repository=self.name, max_uncompressed=MAX_REGISTRY
        )
        versions = self.versions()
        return _State(list(names.packages), {e.name: e for e in versions.packages})

    def _package(self, state: _State, name: str) -> Package | None:
        if name not in state.packages:
            found = self.package(name)
            if found is None:
                return None
            state.packages[name] = found
        return state.packages[name]

    def _store(self, state: _State, name: str, releases: list[Release]) -> None:
        """Write the generation in which package ``name`` has exactly ``releases``."""
        ordered = tuple(sorted(releases, key=lambda r: Version.parse(r.version)))
        changed: dict[str, bytes | None] = {}
        if ordered:
            package = Package(name=name, repository=self.name, releases=ordered)
            changed[name] = build_package(package, self.key)
            retired = tuple(i for i, r in enumerate(ordered) if r.retired is not None)
            state.versions[name] = VersionsEntry(name, tuple(r.version for r in ordered), retired)
            if name not in state.names:
                state.names.append(name)
        else:
            changed[name] = None
            state.versions.pop(name, None)
            state.names = [n for n in state.names if n != name]
        self._store_all(state, changed)

    def _store_all(self, state: _State, changed: dict[str, bytes | None]) -> None:
        """A new generation: ``state``'s names and versions, re-signed, and ``changed``."""
        names = sorted(state.names)
        entries = tuple(state.versions[n] for n in names)
        self.generations.write(
            build_names(Names(self.name, tuple(names)), self.key),
            build_versions(Versions(self.name, entries), self.key),
            changed,
            keep_others=True,
        )

    def adopt(
        self, names: bytes, versions: bytes, packages: dict[str, bytes], blobs: dict[str, bytes]
    ) -> None:
        """Make exactly these signed files the registry, byte for byte (an import of
        verified files: nothing is re-signed). Blobs go in first; then one swap."""
        with self.locked():
            for digest, data in blobs.items():
                self._write_blob(data, digest)
            self.generations.write(names, versions, packages, keep_others=False)

    def snapshot(self) -> tuple[bytes, bytes, dict[str, bytes]]:
        """The current registry files (names, versions, packages), from one generation."""
        with self.locked():
            return self.generations.snapshot()

    def _write_blob(self, data: bytes, digest: str) -> None:
        path = self.blobs / f"{digest}.tar"
        if not path.exists():
            self._install(data, path)

    def _drop_blob(self, release: Release) -> None:
        if release.outer_checksum is not None:
            (self.blobs / f"{release.outer_checksum.hex()}.tar").unlink(missing_ok=True)

    def _install(self, data: bytes, final: Path) -> None:
        self.tmp.mkdir(parents=True, exist_ok=True)
        temp = self.tmp / f"{uuid.uuid4().hex}.part"
        try:
            write_synced(temp, data)
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_dir(final.parent)

    # ----- checking -----

    def verify(self, *, purge_orphans: bool = False) -> list[Problem]:
        """Re-check the current registry and every tarball against it (under the lock,
        so a publish in progress is not half seen); ``purge_orphans`` removes tarballs
        no release uses (left by a crash between storing one and the registry swap)."""
        with self.locked():
            problems = self._verify()
            if purge_orphans:
                for problem in problems:
                    if problem.orphan:
                        (self.root / problem.path).unlink(missing_ok=True)
            return problems

    def _verify(self) -> list[Problem]:
        problems: list[Problem] = []
        try:
            state = self._load()
        except VerificationError as exc:
            return [Problem("names/versions", exc.message)]
        referenced: set[str] = set()
        for name in state.names:
            try:
                package = self.package(name)
            except VerificationError as exc:
                problems.append(Problem(f"packages/{name}", exc.message))
                continue
            if package is None:
                problems.append(Problem(f"packages/{name}", "listed in names but missing"))
                continue
            for release in package.releases:
                problems.extend(self._verify_release(name, release, referenced))
        for path in sorted(self.blobs.glob("*.tar")):
            if path.stem not in referenced:
                problems.append(Problem(f"blobs/{path.name}", "no release uses it", orphan=True))
        return problems

    def _verify_release(self, name: str, release: Release, referenced: set[str]) -> list[Problem]:
        where = f"tarballs/{name}-{release.version}.tar"
        if release.outer_checksum is None:
            return [Problem(where, "release has no outer checksum")]
        digest = release.outer_checksum.hex()
        referenced.add(digest)
        path = self.blobs / f"{digest}.tar"
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            return [Problem(where, "tarball is missing")]
        if actual != digest:
            return [Problem(where, f"sha256 {actual} is not the signed outer checksum {digest}")]
        return []
