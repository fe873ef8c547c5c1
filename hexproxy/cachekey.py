"""What the cache holds, named after the protocol: one CacheKey per repository object.

A key is only ever built from parts that passed the path grammar
(``registry.naming``), so its storage path and upstream path cannot escape
the cache directory or address anything but the object it names.

A key with an ``org`` names an object of that hex.pm organization's repository
(``/repos/ORG/...`` upstream, ``orgs/ORG/...`` on disk). It never equals the public
key of the same name, so nothing that looks up public objects can find it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from .errors import InvalidRequest
from .registry import is_valid_name, is_valid_org, is_valid_version


class Kind(enum.Enum):
    NAMES = "names"
    VERSIONS = "versions"
    PACKAGE = "package"
    TARBALL = "tarball"
    DOCS = "docs"
    INSTALL = "install"


# Installer files: /installs/hex-1.x.csv, /installs/1.14.0/hex-2.0.6.ez,
# /installs/1.19.0/rebar3-3.24.0-otp-27 — short, plain segments only.
_INSTALL_SEGMENT = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}\Z")
_INSTALL_METADATA = re.compile(r"\A[a-z0-9_.-]+\.csv(\.signed)?\Z")


@dataclass(frozen=True, slots=True)
class CacheKey:
    kind: Kind
    name: str = ""
    version: str = ""
    org: str = ""  # a hex.pm organization; "" for the public repository

    @property
    def path(self) -> str:
        """Where it lives, relative to the cache directory."""
        if self.org:
            return f"orgs/{self.org}/{self._path}"
        return self._path

    @property
    def _path(self) -> str:
        match self.kind:
            case Kind.NAMES:
                return "registry/names"
            case Kind.VERSIONS:
                return "registry/versions"
            case Kind.PACKAGE:
                return f"registry/packages/{self.name}"
            case Kind.TARBALL:
                return f"tarballs/{self.name}/{self.name}-{self.version}.tar"
            case Kind.DOCS:
                return f"docs/{self.name}/{self.name}-{self.version}.tar.gz"
            case Kind.INSTALL:
                return f"installs/{self.name}"
        raise AssertionError(self.kind)

    @property
    def upstream_path(self) -> str:
        """The path under the upstream base URL (the same layout clients use)."""
        if self.org:
            return f"/repos/{self.org}{self._upstream_path}"
        return self._upstream_path

    @property
    def _upstream_path(self) -> str:
        match self.kind:
            case Kind.NAMES:
                return "/names"
            case Kind.VERSIONS:
                return "/versions"
            case Kind.PACKAGE:
                return f"/packages/{self.name}"
            case Kind.TARBALL:
                return f"/tarballs/{self.name}-{self.version}.tar"
            case Kind.DOCS:
                return f"/docs/{self.name}-{self.version}.tar.gz"
            case Kind.INSTALL:
                return f"/installs/{self.name}"
        raise AssertionError(self.kind)

    @property
    def is_registry(self) -> bool:
        return self.kind in (Kind.NAMES, Kind.VERSIONS, Kind.PACKAGE)

    @property
    def is_mutable(self) -> bool:
        """Revalidated after the TTL; everything else is immutable once stored."""
        if self.kind is Kind.INSTALL:
            return bool(_INSTALL_METADATA.match(self.name.rsplit("/", 1)[-1]))
        return self.is_registry

    def __str__(self) -> str:
        return self.upstream_path


NAMES = CacheKey(Kind.NAMES)
VERSIONS = CacheKey(Kind.VERSIONS)


def package_key(name: str, org: str = "") -> CacheKey:
    if not is_valid_name(name):
        raise InvalidRequest(f"invalid package name: {name!r}")
    return CacheKey(Kind.PACKAGE, name, org=_org(org))


def tarball_key(name: str, version: str, org: str = "") -> CacheKey:
    if not is_valid_name(name):
        raise InvalidRequest(f"invalid package name: {name!r}")
    if not is_valid_version(version):
        raise InvalidRequest(f"invalid version: {version!r}")
    return CacheKey(Kind.TARBALL, name, version, _org(org))


def docs_key(name: str, version: str, org: str = "") -> CacheKey:
    tarball_key(name, version)  # the same grammar
    return CacheKey(Kind.DOCS, name, version, _org(org))


def org_registry_key(kind: Kind, org: str) -> CacheKey:
    """An organization's /names or /versions."""
    if kind not in (Kind.NAMES, Kind.VERSIONS):
        raise ValueError(kind)
    return CacheKey(kind, org=_org(org))


def _org(org: str) -> str:
    if org and not is_valid_org(org):
        raise InvalidRequest(f"invalid organization name: {org!r}")
    return org


def install_key(relative: str) -> CacheKey:
    segments = relative.split("/")
    if not 1 <= len(segments) <= 2 or not all(_INSTALL_SEGMENT.match(s) for s in segments):
        raise InvalidRequest(f"invalid installs path: {relative!r}")
    if any(".." in s for s in segments):
        raise InvalidRequest(f"invalid installs path: {relative!r}")
    return CacheKey(Kind.INSTALL, relative)
