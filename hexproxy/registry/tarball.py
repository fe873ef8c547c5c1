"""Hex package tarballs (format version 3): checksums, and a builder for tests and tools.

The proxy only needs `outer_checksum` (sha256 of the whole file, compared with the signed
registry). `build_tarball` exists so tests can publish packages real mix and rebar3 accept;
it follows hex_core's hex_tarball:create/2 byte layout.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from hexproxy.registry.resources import Dependency

__all__ = ["build_tarball", "outer_checksum"]

_FORMAT_VERSION = b"3"
# hex_core stamps every entry with 2000-01-01T00:00:00Z, uid/gid 0 (hex_tarball:tar_opts/0).
_Y2K = 946_684_800

# An Erlang term as metadata.config needs it: str -> binary, list -> list, tuple -> tuple.
_Term: TypeAlias = "str | bool | list[_Term] | tuple[_Term, ...]"


def outer_checksum(data: bytes) -> bytes:
    """The registry's `outer_checksum` of a tarball: raw sha256 of the exact bytes served."""
    return hashlib.sha256(data).digest()


def build_tarball(
    name: str,
    version: str,
    *,
    files: Mapping[str, bytes],
    requirements: Sequence[Dependency] = (),
    app: str | None = None,
    build_tools: Sequence[str] = ("rebar3",),
    description: str = "",
    licenses: Sequence[str] = ("Apache-2.0",),
) -> tuple[bytes, bytes]:
    """Build a package tarball; return (outer tar bytes, raw 32-byte inner checksum).

    Output is deterministic (fixed mtimes, sorted entries, gzip mtime 0), so the same
    inputs always give the same outer checksum.
    """
    metadata = _metadata_config(
        name=name,
        version=version,
        app=app or name,
        files=sorted(files),
        requirements=requirements,
        build_tools=build_tools,
        description=description,
        licenses=licenses,
    )
    contents = gzip.compress(_tar(sorted(files.items())), mtime=0)
    # Inner checksum: sha256(VERSION ++ metadata.config ++ contents.tar.gz), hex_tarball.erl.
    inner = hashlib.sha256(_FORMAT_VERSION + metadata + contents).digest()
    outer = _tar(
        [
            # hex_core's member order; unpackers look members up by name, but matching it
            # keeps our files byte-comparable with real ones.
            ("VERSION", _FORMAT_VERSION),
            ("CHECKSUM", inner.hex().upper().encode("ascii")),
            ("metadata.config", metadata),
            ("contents.tar.gz", contents),
        ]
    )
    return outer, inner


def _tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, data in members:
            tar.addfile(_tarinfo(path, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _tarinfo(path: str, size: int) -> tarfile.TarInfo:
    if path.startswith("/") or ".." in path.split("/") or not path:
        raise ValueError(f"unsafe path in package files: {path!r}")
    info = tarfile.TarInfo(path)
    info.size = size
    info.mode = 0o644
    info.mtime = _Y2K
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _metadata_config(
    *,
    name: str,
    version: str,
    app: str,
    files: list[str],
    requirements: Sequence[Dependency],
    build_tools: Sequence[str],
    description: str,
    licenses: Sequence[str],
) -> bytes:
    """metadata.config: one `{Key, Value}.` term per line, keys sorted as Erlang maps are."""
    entries: dict[str, _Term] = {
        "app": app,
        "build_tools": list(build_tools),
        "description": description,
        "files": list(files),
        "licenses": list(licenses),
        "name": name,
        "requirements": [_requirement(d) for d in sorted(requirements, key=_dep_key)],
        "version": version,
    }
    lines = (_erl((key, entries[key])) + ".\n" for key in sorted(entries, key=_utf8))
    return "".join(lines).encode("utf-8")


def _requirement(dep: Dependency) -> _Term:
    # package_metadata.md: requirements is kvlist(name => kvlist(app, optional, requirement,
    # repository)); hex_core writes each inner map as a key-sorted list of pairs.
    fields: list[_Term] = [
        ("app", dep.app or dep.package),
        ("optional", dep.optional),
        ("requirement", dep.requirement),
    ]
    if dep.repository is not None:
        fields.append(("repository", dep.repository))
    return (dep.package, fields)


def _dep_key(dep: Dependency) -> bytes:
    return _utf8(dep.package)


def _utf8(s: str) -> bytes:
    # Erlang orders binaries bytewise, which is not Python's code-point order for str.
    return s.encode("utf-8")


def _erl(term: _Term) -> str:
    """Render a term the way file:consult/1 (and hex_core's safe_erl_term) reads it back."""
    if isinstance(term, bool):
        return "true" if term else "false"
    if isinstance(term, str):
        return _erl_binary(term)
    if isinstance(term, tuple):
        return "{" + ",".join(_erl(t) for t in term) + "}"
    return "[" + ",".join(_erl(t) for t in term) + "]"


def _erl_binary(s: str) -> str:
    escaped = "".join(_erl_char(c) for c in s)
    # Without /utf8 Erlang would truncate each code point to a byte.
    suffix = "" if s.isascii() else "/utf8"
    return f'<<"{escaped}"{suffix}>>'


def _erl_char(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    if ord(c) < 0x20 or ord(c) == 0x7F:
        return f"\\{ord(c):03o}"
    return c
