"""The verification gate: what makes bytes fit to serve, checked per kind of object.

Each kind has its own check and its own result type, so callers get the type
they asked for instead of narrowing an ``object``:

* a registry file (``/names``, ``/versions``, ``/packages/NAME``): gzip, the RSA
  signature with the configured key, the repository (and package) name, giving
  ``Names``, ``Versions`` or ``Package``;
* an installs CSV: its ``.signed`` companion when one is required or present,
  giving its lines (``list[CsvLine]``);
* a tarball: its sha256 against the outer checksum its signed ``Package`` lists,
  checked as the bytes stream in (``upstream.download``), giving a ``StoredFile``.

Pure: the caller hands in the bytes, and a CSV's signature; nothing here reads
the disk or the network.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ..installs import CSV_NAMES, CsvLine, verify_csv
from ..registry import Names, Package, Versions, verify_names, verify_package, verify_versions
from ..store.cachekey import CacheKey, Kind

RegistryFile = Names | Versions | Package


@dataclass(frozen=True, slots=True)
class Gate:
    registry_key: RSAPublicKey
    installs_key: RSAPublicKey
    repository: str  # the only repository the registry files may be for
    max_uncompressed: int  # gunzipped registry files above this are refused

    def names(self, body: bytes) -> Names:
        return verify_names(
            body,
            self.registry_key,
            repository=self.repository,
            max_uncompressed=self.max_uncompressed,
        )

    def versions(self, body: bytes) -> Versions:
        return verify_versions(
            body,
            self.registry_key,
            repository=self.repository,
            max_uncompressed=self.max_uncompressed,
        )

    def package(self, name: str, body: bytes) -> Package:
        return verify_package(
            body,
            self.registry_key,
            repository=self.repository,
            name=name,
            max_uncompressed=self.max_uncompressed,
        )

    def registry_file(self, key: CacheKey, body: bytes) -> RegistryFile:
        """Any registry file, by its key; VerificationError unless it is genuine."""
        match key.kind:
            case Kind.NAMES:
                return self.names(body)
            case Kind.VERSIONS:
                return self.versions(body)
            case Kind.PACKAGE:
                return self.package(key.name, body)
        raise ValueError(f"{key} is not a registry file")

    def installs_csv(self, name: str, body: bytes, signed: bytes | None) -> list[CsvLine]:
        """An installs CSV checked against its ``.signed`` (None: there is none)."""
        return verify_csv(name, body, signed, self.installs_key)


def is_installs_csv(key: CacheKey) -> bool:
    return key.kind is Kind.INSTALL and key.name in CSV_NAMES


def is_installs_signature(key: CacheKey) -> bool:
    name = key.name
    return key.kind is Kind.INSTALL and name.endswith(".signed") and name[:-7] in CSV_NAMES


def signature_key(csv: CacheKey) -> CacheKey:
    """The ``.signed`` companion of an installs CSV."""
    return CacheKey(Kind.INSTALL, csv.name + ".signed")


def csv_key(signature: CacheKey) -> CacheKey:
    """The installs CSV a ``.signed`` file signs."""
    return CacheKey(Kind.INSTALL, signature.name.removesuffix(".signed"))
