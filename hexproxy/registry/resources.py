"""The registry resources (/names, /versions, /packages/NAME) as frozen dataclasses.

Decoders turn a verified payload into dataclasses and check its origin the way hex_core
does (`repo_verify_origin`); encoders do the reverse, writing fields as hexpm's
registry_builder.ex does, so tests and tools can publish registries real clients accept.
The proxy itself never re-encodes upstream files: it serves upstream's exact bytes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from google.protobuf.message import DecodeError, Message

from hexproxy.errors import BadOrigin, MalformedRegistry
from hexproxy.registry._pb import hex_registry_pb2 as pb
from hexproxy.registry.signed import open_signed, seal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = [
    "Dependency",
    "Names",
    "Package",
    "Release",
    "Retirement",
    "RetirementReason",
    "Versions",
    "VersionsEntry",
    "build_names",
    "build_package",
    "build_versions",
    "decode_names",
    "decode_package",
    "decode_versions",
    "encode_names",
    "encode_package",
    "encode_versions",
    "verify_names",
    "verify_package",
    "verify_versions",
]


class RetirementReason(enum.IntEnum):
    """Known values of Retirement.reason; clients must tolerate others, so it stays an int."""

    OTHER = 0
    INVALID = 1
    SECURITY = 2
    DEPRECATED = 3
    RENAMED = 4


@dataclass(frozen=True, slots=True)
class Dependency:
    """A release's requirement on another package.

    `app` None means the same as `package`; `repository` None means the parent's repository
    (that is how the registry stores them, and what Hex assumes when they are absent).
    """

    package: str
    requirement: str
    optional: bool = False
    app: str | None = None
    repository: str | None = None


@dataclass(frozen=True, slots=True)
class Retirement:
    reason: int
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Release:
    """One version of a package; checksums are 32 raw sha256 bytes.

    `outer_checksum` is None only in registries written before 2019; rebar3 ignores such
    releases and the proxy cannot verify their tarballs.
    """

    version: str
    inner_checksum: bytes
    outer_checksum: bytes | None
    dependencies: tuple[Dependency, ...] = ()
    retired: Retirement | None = None


@dataclass(frozen=True, slots=True)
class Package:
    """The /packages/NAME resource."""

    name: str
    repository: str
    releases: tuple[Release, ...]

    def release(self, version: str) -> Release | None:
        """The release with exactly this version string, if the registry lists it."""
        return next((r for r in self.releases if r.version == version), None)


@dataclass(frozen=True, slots=True)
class Names:
    """The /names resource. Per-package `updated_at` is not kept: nothing here needs it."""

    repository: str
    packages: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VersionsEntry:
    """One package in /versions; `retired` holds 0-based indexes into `versions`."""

    name: str
    versions: tuple[str, ...]
    retired: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Versions:
    """The /versions resource."""

    repository: str
    packages: tuple[VersionsEntry, ...]


# --- decoding -------------------------------------------------------------------------------

_M = TypeVar("_M", bound=Message)


def _parse(cls: type[_M], payload: bytes) -> _M:
    try:
        return cls.FromString(payload)
    except DecodeError as exc:
        name = cls.DESCRIPTOR.name
        raise MalformedRegistry(f"{name} payload does not decode ({exc})") from None


def _check_repository(msg: pb.Names | pb.Versions | pb.Package, expected: str) -> None:
    # Files from before 2019 have no repository field at all; hex_core treats that as a
    # mismatch too, because nothing then ties the file to the repository asked for.
    got = msg.repository if msg.HasField("repository") else None
    if got != expected:
        kind = msg.DESCRIPTOR.name
        raise BadOrigin(f"{kind} is for repository {got!r}, expected {expected!r}")


def decode_names(payload: bytes, *, repository: str) -> Names:
    """Decode a verified /names payload, requiring it to belong to `repository`."""
    msg = _parse(pb.Names, payload)
    _check_repository(msg, repository)
    return Names(repository=msg.repository, packages=tuple(p.name for p in msg.packages))


def decode_versions(payload: bytes, *, repository: str) -> Versions:
    """Decode a verified /versions payload, requiring it to belong to `repository`."""
    msg = _parse(pb.Versions, payload)
    _check_repository(msg, repository)
    entries = tuple(
        VersionsEntry(name=p.name, versions=tuple(p.versions), retired=tuple(p.retired))
        for p in msg.packages
    )
    return Versions(repository=msg.repository, packages=entries)


def decode_package(payload: bytes, *, repository: str, name: str) -> Package:
    """Decode a verified /packages/NAME payload, requiring its repository and name to match.

    The name check stops a validly signed file for another package being served under
    this name (hex_core's bad_repo_name).
    """
    msg = _parse(pb.Package, payload)
    _check_repository(msg, repository)
    if msg.name != name:
        raise BadOrigin(f"Package is for package {msg.name!r}, expected {name!r}")
    releases = tuple(_decode_release(r) for r in msg.releases)
    return Package(name=msg.name, repository=msg.repository, releases=releases)


def _decode_release(r: pb.Release) -> Release:
    return Release(
        version=r.version,
        inner_checksum=r.inner_checksum,
        outer_checksum=r.outer_checksum if r.HasField("outer_checksum") else None,
        dependencies=tuple(_decode_dependency(d) for d in r.dependencies),
        retired=_decode_retirement(r.retired) if r.HasField("retired") else None,
    )


def _decode_dependency(d: pb.Dependency) -> Dependency:
    return Dependency(
        package=d.package,
        requirement=d.requirement,
        optional=d.optional,
        app=d.app if d.HasField("app") else None,
        repository=d.repository if d.HasField("repository") else None,
    )


def _decode_retirement(s: pb.RetirementStatus) -> Retirement:
    return Retirement(reason=s.reason, message=s.message if s.HasField("message") else None)


# --- encoding -------------------------------------------------------------------------------
# Order is kept as given: hexpm sorts packages by name and versions ascending, and callers
# that want byte-identical output to hexpm pass them that way.


def encode_names(names: Names) -> bytes:
    """Serialize a Names payload (unsigned)."""
    msg = pb.Names(
        repository=names.repository, packages=[pb.Names.Package(name=n) for n in names.packages]
    )
    return msg.SerializeToString(deterministic=True)


def encode_versions(versions: Versions) -> bytes:
    """Serialize a Versions payload (unsigned)."""
    packages = [
        pb.Versions.Package(name=e.name, versions=e.versions, retired=e.retired)
        for e in versions.packages
    ]
    msg = pb.Versions(repository=versions.repository, packages=packages)
    return msg.SerializeToString(deterministic=True)


def encode_package(package: Package) -> bytes:
    """Serialize a Package payload (unsigned), omitting fields exactly where hexpm does."""
    releases = [_encode_release(r, package.repository) for r in package.releases]
    msg = pb.Package(name=package.name, repository=package.repository, releases=releases)
    return msg.SerializeToString(deterministic=True)


def _encode_release(release: Release, repository: str) -> pb.Release:
    msg = pb.Release(version=release.version, inner_checksum=release.inner_checksum)
    if release.outer_checksum is not None:
        msg.outer_checksum = release.outer_checksum
    msg.dependencies.extend(_encode_dependency(d, repository) for d in release.dependencies)
    if release.retired is not None:
        msg.retired.reason = release.retired.reason
        if release.retired.message is not None:
            msg.retired.message = release.retired.message
    return msg


def _encode_dependency(dep: Dependency, repository: str) -> pb.Dependency:
    # registry_builder.ex: `optional` only when true, `app` only when it differs from the
    # package name, `repository` only when it differs from the parent's.
    msg = pb.Dependency(package=dep.package, requirement=dep.requirement)
    if dep.optional:
        msg.optional = True
    if dep.app is not None and dep.app != dep.package:
        msg.app = dep.app
    if dep.repository is not None and dep.repository != repository:
        msg.repository = dep.repository
    return msg


# --- one-call helpers -----------------------------------------------------------------------


def verify_names(
    body: bytes, key: RSAPublicKey, *, repository: str, max_uncompressed: int
) -> Names:
    """Check a raw /names body (gzip, signature, origin) and decode it."""
    payload = open_signed(body, key, max_uncompressed=max_uncompressed)
    return decode_names(payload, repository=repository)


def verify_versions(
    body: bytes, key: RSAPublicKey, *, repository: str, max_uncompressed: int
) -> Versions:
    """Check a raw /versions body (gzip, signature, origin) and decode it."""
    payload = open_signed(body, key, max_uncompressed=max_uncompressed)
    return decode_versions(payload, repository=repository)


def verify_package(
    body: bytes, key: RSAPublicKey, *, repository: str, name: str, max_uncompressed: int
) -> Package:
    """Check a raw /packages/NAME body (gzip, signature, repository and name) and decode it."""
    payload = open_signed(body, key, max_uncompressed=max_uncompressed)
    return decode_package(payload, repository=repository, name=name)


def build_names(names: Names, private_key: RSAPrivateKey) -> bytes:
    """A complete signed /names body, as hexpm would serve it."""
    return seal(encode_names(names), private_key)


def build_versions(versions: Versions, private_key: RSAPrivateKey) -> bytes:
    """A complete signed /versions body, as hexpm would serve it."""
    return seal(encode_versions(versions), private_key)


def build_package(package: Package, private_key: RSAPrivateKey) -> bytes:
    """A complete signed /packages/NAME body, as hexpm would serve it."""
    return seal(encode_package(package), private_key)
