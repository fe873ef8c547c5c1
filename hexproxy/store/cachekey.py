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

from ..errors import InvalidRequest
from ..registry import (
    check_name,
    check_version,
    is_valid_org,
    parse_docs_filename,
    parse_tarball_filename,
)


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
        """Where it lives, relative to the cache directory: its upstream path, with the
        registry files under ``registry/`` and tarballs and docs in a directory per package
        (so no one directory holds every release there is); an organization's objects in
        the same layout under ``orgs/ORG/``."""
        relative = self._public_path[1:]
        if self.is_registry:
            relative = f"registry/{relative}"
        elif self.kind in (Kind.TARBALL, Kind.DOCS):
            route, _, filename = relative.partition("/")
            relative = f"{route}/{self.name}/{filename}"
        return f"orgs/{self.org}/{relative}" if self.org else relative

    @property
    def upstream_path(self) -> str:
        """The path under the upstream base URL (the same layout clients use)."""
        return f"/repos/{self.org}{self._public_path}" if self.org else self._public_path

    @property
    def _public_path(self) -> str:
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
    return CacheKey(Kind.PACKAGE, check_name(name), org=_org(org))


def tarball_key(name: str, version: str, org: str = "") -> CacheKey:
    return CacheKey(Kind.TARBALL, check_name(name), check_version(version), _org(org))


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
        raise InvalidRequest(f"invalid organization name: {org[:64]!r}")
    return org


def install_key(relative: str) -> CacheKey:
    segments = relative.split("/")
    if not 1 <= len(segments) <= 2 or not all(_INSTALL_SEGMENT.match(s) for s in segments):
        raise InvalidRequest(f"invalid installs path: {relative!r}")
    if any(".." in s for s in segments):
        raise InvalidRequest(f"invalid installs path: {relative!r}")
    return CacheKey(Kind.INSTALL, relative)


def key_for_request_path(path: str) -> CacheKey | None:
    """The key a client's request path names (the inverse of ``upstream_path``): the one
    mapping from URL path to cache key, shared by the routes, the fast path and eviction.
    None when the path names no repository object; InvalidRequest, naming the problem,
    when it is under a repository route but breaks the grammar."""
    route, slash, rest = path.removeprefix("/").partition("/")
    if not path.startswith("/"):
        return None
    match route, slash:
        case "names", "":
            return NAMES
        case "versions", "":
            return VERSIONS
        case "packages", "/":
            return package_key(rest)
        case "tarballs", "/":
            return tarball_key(*parse_tarball_filename(rest))
        case "docs", "/":
            return docs_key(*parse_docs_filename(rest))
        case "installs", "/":
            return install_key(rest)
    return None


def key_for_path(path: str) -> CacheKey | None:
    """The key stored at ``path`` (the inverse of ``CacheKey.path``), or None when no
    key lives there (a sidecar, a temp file, something an operator put in the bucket)."""
    try:
        return _key_stored_at(path)
    except InvalidRequest:  # a name no key has: key_for_request_path says why, we say None
        return None


def _key_stored_at(path: str) -> CacheKey | None:
    top, _, rest = path.partition("/")
    if top == "registry":
        found = key_for_request_path("/" + rest)
        return found if found is not None and found.is_registry else None
    if top in ("tarballs", "docs"):
        directory, _, filename = rest.partition("/")
        found = key_for_request_path(f"/{top}/{filename}")
        return found if found is not None and found.name == directory else None
    if top == "installs":
        found = key_for_request_path("/" + path)
        return found if found is not None and found.kind is Kind.INSTALL else None
    return None
