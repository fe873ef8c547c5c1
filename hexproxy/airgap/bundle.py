"""Carry a cache across an air gap: ``export`` writes a tar bundle, ``import`` checks it in.

A bundle is a plain tar file. Each member is one cache object under its cache path
(``registry/packages/NAME``, ``tarballs/NAME/NAME-VERSION.tar``, ``registry/names``,
``registry/versions``), and ``manifest.json`` (the last member) lists every one with
its kind, size and sha256. Only registry files and package tarballs travel: those
are the objects whose integrity the receiving side can prove on its own (docs and
installer builds have no signed checksum).

Reading a bundle back in is ``bundle_import``'s job; the reading helpers it
shares with tests live here with the format.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from ..errors import HexproxyError, InvalidRequest
from ..registry import parse_tarball_filename
from ..store.cachekey import NAMES, VERSIONS, CacheKey, Kind, package_key, tarball_key
from ..store.storage import FileStorage

MANIFEST = "manifest.json"
FORMAT = "hexproxy-bundle"
FORMAT_VERSION = 1
MAX_MANIFEST = 64 * 1024 * 1024
ALREADY_CACHED = "already cached"


class BundleError(HexproxyError):
    """The bundle as a whole cannot be read (not a tar, no manifest, bad manifest)."""

    code = "bad_bundle"


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    path: str
    kind: str
    sha256: str
    size: int
    # When the exporting cache last had this registry file confirmed by upstream.
    validated_at: float | None = None


def key_from_path(path: str) -> CacheKey | None:
    """The key whose cache path is exactly ``path``, or None: the traversal guard."""
    parts = path.split("/")
    try:
        match parts:
            case ["registry", "names"]:
                key = NAMES
            case ["registry", "versions"]:
                key = VERSIONS
            case ["registry", "packages", name]:
                key = package_key(name)
            case ["tarballs", _, filename]:
                key = tarball_key(*parse_tarball_filename(filename))
            case _:
                return None
    except InvalidRequest:
        return None
    return key if key.path == path else None


# ----- export -----


@dataclass
class ExportReport:
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0


def cache_keys(storage: FileStorage) -> list[CacheKey]:
    """Every object of the cache that a bundle can carry."""
    return [key for key in storage.iter_keys() if key.is_registry or key.kind is Kind.TARBALL]


def export_bundle(
    storage: FileStorage,
    keys: Iterable[CacheKey],
    dest: Path,
    extra: Iterable[tuple[str, str, bytes]] = (),
) -> ExportReport:
    """Write ``keys`` from ``storage`` into the tar file ``dest`` (replaced atomically),
    plus ``extra`` files given as (path, kind, bytes): the hosted repositories."""
    started = time.monotonic()
    report = ExportReport()
    temp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        with tarfile.open(temp, "w", format=tarfile.PAX_FORMAT) as tar:
            entries = [_add_object(tar, storage, key) for key in _ordered(keys)]
            now = time.time()
            for path, kind, data in extra:
                _add_bytes(tar, path, data, now)
                digest = hashlib.sha256(data).hexdigest()
                entries.append(ManifestEntry(path, kind, digest, len(data)))
            _add_bytes(tar, MANIFEST, _manifest_bytes(entries), time.time())
        os.replace(temp, dest)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    report.files = len(entries)
    report.bytes = dest.stat().st_size
    report.seconds = time.monotonic() - started
    return report


def _ordered(keys: Iterable[CacheKey]) -> list[CacheKey]:
    # Registry files first, then tarballs: the order import checks them in.
    return sorted(set(keys), key=lambda k: (not k.is_registry, k.path))


def _add_object(tar: tarfile.TarFile, storage: FileStorage, key: CacheKey) -> ManifestEntry:
    """Copy one object into the tar, hashing exactly the bytes that went in."""
    try:
        fh = storage.path(key).open("rb")
    except FileNotFoundError:
        raise BundleError(f"{key.path} is not in the cache (was it pruned?)") from None
    with fh:
        info = tarfile.TarInfo(key.path)
        stat = os.fstat(fh.fileno())
        info.size, info.mtime, info.mode = stat.st_size, int(stat.st_mtime), 0o644
        reader = _HashingReader(fh)
        tar.addfile(info, reader)
    digest = reader.digest.hexdigest()
    meta = storage.read_meta(key)
    validated = meta.validated_at if meta and meta.sha256 == digest and key.is_mutable else None
    return ManifestEntry(key.path, key.kind.value, digest, info.size, validated)


class _HashingReader:
    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.digest.update(data)
        return data


def _manifest_bytes(entries: list[ManifestEntry]) -> bytes:
    files = [{k: v for k, v in asdict(e).items() if v is not None} for e in entries]
    document = {"format": FORMAT, "version": FORMAT_VERSION, "files": files}
    return json.dumps(document, indent=1, sort_keys=True).encode() + b"\n"


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    tar.addfile(info, io.BytesIO(data))


# ----- reading -----


def open_tar(source: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(source, "r:*")
    except OSError as exc:
        raise BundleError(f"cannot read bundle {source}: {exc.strerror or exc}") from None
    except tarfile.TarError:
        # tarfile's message lists every compression it tried: one line says more.
        raise BundleError(f"{source} is not a tar bundle") from None


def read_manifest(tar: tarfile.TarFile) -> dict[str, ManifestEntry]:
    """The manifest as path -> entry; BundleError if it is missing or malformed."""
    member = next((m for m in tar.getmembers() if m.name == MANIFEST and m.isfile()), None)
    if member is None or member.size > MAX_MANIFEST:
        raise BundleError(f"bundle has no usable {MANIFEST}")
    try:
        document = json.loads(read_member(tar, member))
        if document.get("format") != FORMAT or document.get("version") != FORMAT_VERSION:
            raise BundleError(f"not a {FORMAT} version {FORMAT_VERSION} manifest")
        entries = [_manifest_entry(raw) for raw in document["files"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{MANIFEST} is malformed: {exc}") from None
    return {entry.path: entry for entry in entries}


def _manifest_entry(raw: dict[str, object]) -> ManifestEntry:
    validated = raw.get("validated_at")
    size = raw["size"]
    if not isinstance(size, int):
        raise TypeError(f"size of {raw['path']!r} is not an integer")
    return ManifestEntry(
        path=str(raw["path"]),
        kind=str(raw["kind"]),
        sha256=str(raw["sha256"]),
        size=size,
        validated_at=float(validated) if isinstance(validated, int | float) else None,
    )


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    fh = tar.extractfile(member)
    if fh is None:
        raise BundleError(f"{member.name} is not a regular file")
    with fh:
        return fh.read()
