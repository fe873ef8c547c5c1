"""``cache verify``: check every stored object again, as if it had just come from upstream.

Registry files go through the same signature and origin gate the server runs
on upstream bodies. A tarball is hashed and compared with the outer checksum
in its package's registry file, which is itself verified first; a tarball
whose registry file is missing or bad cannot be vouched for, and is reported
as an orphan instead (the server fetches that registry file again on the next
request, after which ``verify`` can check the tarball). Docs and installer
files carry no signature; they are checked against the digest recorded when
they were stored, which still catches a disk that changed them.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ..errors import ObjectMissing, VerificationError
from ..registry import Names, Package, Versions
from .cachekey import CacheKey, Kind, package_key
from .objects import Storage


class RegistryGate(Protocol):
    """The server's check of registry files (``cache.gate.Gate``): VerificationError
    unless the bytes are genuine, else what they decode to."""

    def registry_file(self, key: CacheKey, body: bytes) -> Names | Versions | Package: ...

    def package(self, name: str, body: bytes) -> Package: ...


class Verdict(enum.Enum):
    BAD = "bad"  # fails its check: must not be served
    ORPHAN = "orphan"  # cannot be checked now; not removed by --purge


@dataclass(frozen=True, slots=True)
class Finding:
    key: CacheKey
    verdict: Verdict
    reason: str
    removed: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    checked: dict[str, int]  # kind -> how many objects were looked at
    findings: tuple[Finding, ...]

    @property
    def bad(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict is Verdict.BAD]

    @property
    def orphans(self) -> list[Finding]:
        return [f for f in self.findings if f.verdict is Verdict.ORPHAN]


class Auditor:
    """Checks objects one by one, remembering each package file's verdict for its tarballs."""

    def __init__(self, storage: Storage, gate: RegistryGate) -> None:
        self.storage = storage
        self.gate = gate
        self._packages: dict[str, Package | str] = {}  # name -> decoded, or why not

    async def check(self, key: CacheKey) -> Finding | None:
        """None when ``key`` is fine (or vanished meanwhile)."""
        if key.is_registry:
            problem = await self._registry_problem(key)
            return Finding(key, Verdict.BAD, problem) if problem else None
        if key.kind is Kind.TARBALL:
            return await self._check_tarball(key)
        return await self._check_recorded_digest(key)

    async def _body(self, key: CacheKey) -> bytes | None:
        try:
            return (await self.storage.get(key)).body
        except ObjectMissing:
            return None

    async def _registry_problem(self, key: CacheKey) -> str | None:
        body = await self._body(key)
        if body is None:
            return None
        try:
            if key.kind is Kind.PACKAGE:
                self._packages[key.name] = self.gate.package(key.name, body)
            else:
                self.gate.registry_file(key, body)
        except VerificationError as exc:
            if key.kind is Kind.PACKAGE:
                self._packages[key.name] = f"its registry file fails verification: {exc.message}"
            return exc.message
        return None

    async def _package(self, name: str) -> Package | str:
        if name not in self._packages:
            key = package_key(name)
            if not await self.storage.exists(key):
                self._packages[name] = "its registry file (/packages/NAME) is not cached"
            else:
                await self._registry_problem(key)
        return self._packages.get(name, "its registry file vanished")

    async def _check_tarball(self, key: CacheKey) -> Finding | None:
        package = await self._package(key.name)
        if isinstance(package, str):
            return Finding(key, Verdict.ORPHAN, f"cannot be verified: {package}")
        release = package.release(key.version)
        if release is None or release.outer_checksum is None:
            why = "is not listed" if release is None else "has no outer checksum"
            return Finding(key, Verdict.BAD, f"release {key.version} {why} in its registry file")
        digest = await self._digest(key)
        if digest is None or digest == release.outer_checksum.hex():
            return None
        return Finding(
            key,
            Verdict.BAD,
            f"sha256 {digest} does not match the signed outer checksum "
            f"{release.outer_checksum.hex()}",
        )

    async def _check_recorded_digest(self, key: CacheKey) -> Finding | None:
        try:
            meta = await self.storage.head(key)  # as recorded when it was stored
        except ObjectMissing:
            return None
        digest = await self._digest(key)
        if digest is None or not meta.sha256 or digest == meta.sha256:
            return None  # nothing recorded: the server rebuilds it from the file on first use
        return Finding(
            key, Verdict.BAD, f"sha256 {digest} differs from {meta.sha256} recorded when stored"
        )

    async def _digest(self, key: CacheKey) -> str | None:
        body = await self._body(key)
        return None if body is None else hashlib.sha256(body).hexdigest()


async def audit(
    storage: Storage,
    gate: RegistryGate,
    *,
    purge: bool = False,
    keys: Iterable[CacheKey] | None = None,
) -> Report:
    """Check every stored object (registry files first); with ``purge``, delete the bad ones."""
    auditor = Auditor(storage, gate)
    if keys is None:
        keys = [listed.key async for listed in storage.list()]
    checked: dict[str, int] = {}
    findings = []
    for key in sorted(keys, key=_registry_first):
        checked[key.kind.value] = checked.get(key.kind.value, 0) + 1
        finding = await auditor.check(key)
        if finding is None:
            continue
        if purge and finding.verdict is Verdict.BAD:
            finding = Finding(key, finding.verdict, finding.reason, await _delete(storage, key))
        findings.append(finding)
    return Report(checked, tuple(findings))


async def _delete(storage: Storage, key: CacheKey) -> bool:
    try:
        await storage.delete(key)
    except ObjectMissing:
        return False
    return True


def _registry_first(key: CacheKey) -> tuple[bool, str]:
    return not key.is_registry, key.path
