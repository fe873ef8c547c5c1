"""Check an uploaded Hex package tarball the way hexpm does before it accepts a release.

Everything here is pure (bytes in, a frozen description or a ``ValidationFailed`` out),
so the API, the CLI and import run exactly the same checks:

* size within ``max_size``; an uncompressed tar of exactly VERSION, CHECKSUM,
  metadata.config and contents.tar.gz (hex_core's unpack refuses anything else);
* VERSION is ``3``; CHECKSUM is the inner checksum, sha256(VERSION ‖ metadata ‖ contents);
* metadata.config parses as safe Erlang terms; name and version follow Hex's grammar
  (and equal the URL's, when the caller gives one); every requirement names a valid
  package and parses as an Elixir requirement;
* contents.tar.gz is gzip of a readable tar whose unpacked size is within
  ``max_unpacked_size`` and whose paths stay inside the package.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from ..registry import is_valid_name, is_valid_version
from ..registry.versions import InvalidRequirement, parse_requirement
from .consult import ConsultError, parse_terms
from .errors import TooBig, ValidationFailed
from .etf import Term

__all__ = ["MAX_METADATA", "Requirement", "UploadedPackage", "check_package"]

MAX_METADATA = 1024 * 1024  # hex_core's metadata limit
_MEMBERS = ("VERSION", "CHECKSUM", "metadata.config", "contents.tar.gz")


@dataclass(frozen=True, slots=True)
class Requirement:
    """One dependency as the package's metadata states it.

    ``repository`` is None when the metadata names none (rebar3_hex writes none); the
    hosted repository decides what that means (see ``repository.dependency_repository``).
    """

    name: str
    requirement: str
    optional: bool = False
    app: str | None = None
    repository: str | None = None


@dataclass(frozen=True, slots=True)
class UploadedPackage:
    name: str
    version: str
    app: str
    requirements: tuple[Requirement, ...]
    inner_checksum: bytes
    outer_checksum: bytes
    description: str
    build_tools: tuple[str, ...]
    size: int


def check_package(
    data: bytes,
    *,
    max_size: int,
    max_unpacked_size: int,
    expected_name: str | None = None,
    expected_version: str | None = None,
) -> UploadedPackage:
    """Validate a tarball; ``ValidationFailed`` (or ``TooBig``) names the first problem."""
    if len(data) > max_size:
        raise TooBig(
            f"tarball is {len(data)} bytes, over the limit of {max_size}", {"tar": "too big"}
        )
    files = _outer_members(data)
    if files["VERSION"] != b"3":
        raise _tar(f"unsupported tarball format version {files['VERSION'][:10]!r}, expected 3")
    inner = hashlib.sha256(
        files["VERSION"] + files["metadata.config"] + files["contents.tar.gz"]
    ).digest()
    _check_checksum(files["CHECKSUM"], inner)
    meta = _metadata(files["metadata.config"])
    name = _text(meta, "name")
    version = _text(meta, "version")
    if not is_valid_name(name):
        raise ValidationFailed.field("name", f"invalid package name {name[:80]!r}")
    if not is_valid_version(version):
        raise ValidationFailed.field("version", f"invalid version {version[:80]!r} (not SemVer)")
    if expected_name is not None and name != expected_name:
        raise ValidationFailed.field("name", "metadata does not match package name")
    if expected_version is not None and version != expected_version:
        raise ValidationFailed.field("version", "metadata does not match the release version")
    _check_contents(files["contents.tar.gz"], max_unpacked_size)
    app = _optional_text(meta, "app") or name
    return UploadedPackage(
        name=name,
        version=version,
        app=app,
        requirements=_requirements(meta.get("requirements", [])),
        inner_checksum=inner,
        outer_checksum=hashlib.sha256(data).digest(),
        description=_optional_text(meta, "description") or "",
        build_tools=tuple(_texts(meta.get("build_tools", []), "build_tools")),
        size=len(data),
    )


def _tar(problem: str) -> ValidationFailed:
    return ValidationFailed.field("tar", problem)


def _outer_members(data: bytes) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for member in tar:
                if member.name not in _MEMBERS:
                    raise _tar(f"unexpected file {member.name[:80]!r} in the package tarball")
                if member.name in files or not member.isfile():
                    raise _tar(f"{member.name} is duplicated or not a regular file")
                fh = tar.extractfile(member)
                assert fh is not None  # a regular file always has a reader
                with fh:
                    files[member.name] = fh.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _tar(f"not a valid package tarball ({exc})") from None
    missing = [name for name in _MEMBERS if name not in files]
    if missing:
        raise _tar(f"missing files: {', '.join(missing)}")
    if len(files["metadata.config"]) > MAX_METADATA:
        raise TooBig("metadata.config is too big", {"tar": "metadata.config is too big"})
    return files


def _check_checksum(stated: bytes, inner: bytes) -> None:
    text = stated.strip().decode("ascii", "replace")
    try:
        claimed = bytes.fromhex(text)
    except ValueError:
        raise _tar("CHECKSUM is not base16") from None
    if len(claimed) != 32:
        raise _tar("CHECKSUM is not a sha256")
    if claimed != inner:
        raise _tar(
            f"inner checksum mismatch: CHECKSUM says {text.upper()}, "
            f"the files hash to {inner.hex().upper()}"
        )


def _metadata(raw: bytes) -> dict[str, Term]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # hex_core falls back to latin-1 too
    try:
        terms = parse_terms(text)
    except ConsultError as exc:
        raise ValidationFailed.field("metadata", f"metadata.config does not parse: {exc}") from None
    meta: dict[str, Term] = {}
    for term in terms:
        if not (isinstance(term, tuple) and len(term) == 2 and isinstance(term[0], str)):
            raise ValidationFailed.field("metadata", "metadata.config is not in key-value format")
        meta[str(term[0])] = term[1]
    return meta


def _as_text(value: Term) -> str | None:
    if isinstance(value, str):
        return str(value)
    if isinstance(value, list) and all(isinstance(c, int) and 0 <= c < 0x110000 for c in value):
        return "".join(chr(c) for c in value if isinstance(c, int))  # a charlist
    return None


def _text(meta: Mapping[str, Term], key: str) -> str:
    value = _as_text(meta.get(key))
    if value is None:
        raise ValidationFailed.field(key, f"metadata has no {key}")
    return value


def _optional_text(meta: Mapping[str, Term], key: str) -> str | None:
    if meta.get(key) is None:
        return None
    value = _as_text(meta[key])
    if value is None:
        raise ValidationFailed.field(key, f"{key} is not a string")
    return value


def _texts(value: Term, key: str) -> list[str]:
    items = value if isinstance(value, list) else None
    texts = [_as_text(v) for v in items] if items is not None else [None]
    if any(t is None for t in texts):
        raise ValidationFailed.field(key, f"{key} is not a list of strings")
    return [t for t in texts if t is not None]


def _requirements(value: Term) -> tuple[Requirement, ...]:
    """The three shapes hex_core accepts: a map, a list of {Name, Fields}, or the legacy
    list of field lists carrying their own "name"."""
    pairs: list[tuple[Term, Term]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and value and all(isinstance(v, list) for v in value):
        pairs = [(_fields(v).get("name"), v) for v in value]
    elif isinstance(value, list) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        pairs = [(v[0], v[1]) for v in value if isinstance(v, tuple)]
    else:
        raise ValidationFailed.field("requirements", "requirements are not a list or map")
    found = [_requirement(name, fields) for name, fields in pairs]
    names = [r.name for r in found]
    if len(set(names)) != len(names):
        raise ValidationFailed.field("requirements", "a dependency is listed twice")
    return tuple(sorted(found, key=lambda r: r.name))


def _fields(value: Term) -> dict[str, Term]:
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items() if isinstance(k, str)}
    if isinstance(value, list) and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in value
    ):
        return {str(p[0]): p[1] for p in value if isinstance(p, tuple)}
    raise ValidationFailed.field("requirements", "a requirement is not a map or key-value list")


def _requirement(raw_name: Term, raw_fields: Term) -> Requirement:
    name = _as_text(raw_name)
    if name is None or not is_valid_name(name):
        raise ValidationFailed.field("requirements", f"invalid dependency name {raw_name!r:.80}")
    fields = _fields(raw_fields)
    problem = f"dependency {name}"
    requirement = _as_text(fields.get("requirement"))
    if requirement is None:
        raise ValidationFailed.field("requirements", f"{problem} has no requirement")
    try:
        parse_requirement(requirement)
    except InvalidRequirement as exc:
        raise ValidationFailed.field("requirements", f"{problem}: {exc}") from None
    optional = fields.get("optional", False)
    if not isinstance(optional, bool):
        raise ValidationFailed.field("requirements", f"{problem}: optional is not true or false")
    app = _as_text(fields["app"]) if fields.get("app") is not None else None
    repository = _as_text(fields["repository"]) if fields.get("repository") is not None else None
    if repository is not None and ":" in repository:
        repository = repository.partition(":")[2]  # "hexpm:acme" names the organization
    return Requirement(name, requirement, optional, app, repository)


class _Bounded(io.RawIOBase):
    """Reads from ``source`` and fails once more than ``limit`` bytes came out."""

    def __init__(self, source: io.BufferedIOBase, limit: int) -> None:
        self.source = source
        self.left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        chunk = self.source.read(len(buffer))
        self.left -= len(chunk)
        if self.left < 0:
            raise TooBig("contents unpack beyond the size limit", {"tar": "too big"})
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _check_contents(compressed: bytes, limit: int) -> None:
    stream = _Bounded(gzip.GzipFile(fileobj=io.BytesIO(compressed)), limit)
    try:
        with tarfile.open(fileobj=io.BufferedReader(stream), mode="r|") as tar:
            for member in tar:
                path = member.name
                if path.startswith("/") or ".." in path.split("/"):
                    raise _tar(f"contents.tar.gz has an unsafe path {path[:80]!r}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _tar(f"contents.tar.gz is not a gzipped tar ({exc})") from None
