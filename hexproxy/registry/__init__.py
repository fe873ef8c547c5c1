"""The Hex repository protocol, without I/O: bytes in, verified dataclasses out.

`verify_names`/`verify_versions`/`verify_package` are the gate the proxy runs on every
upstream registry body; `build_*` are their inverse, for tests and tools that sign their
own registry. See docs in each module for the wire details.
"""

from hexproxy.registry.keys import (
    HEXPM_PUBLIC_KEY_PEM,
    fingerprint,
    load_public_key,
    public_key_pem,
)
from hexproxy.registry.naming import (
    check_name,
    check_version,
    docs_filename,
    is_valid_name,
    is_valid_version,
    parse_docs_filename,
    parse_tarball_filename,
    tarball_filename,
)
from hexproxy.registry.resources import (
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
    decode_names,
    decode_package,
    decode_versions,
    encode_names,
    encode_package,
    encode_versions,
    verify_names,
    verify_package,
    verify_versions,
)
from hexproxy.registry.signed import (
    decode_signed,
    gunzip,
    open_signed,
    seal,
    sign,
    verify_signature,
)

__all__ = [
    "HEXPM_PUBLIC_KEY_PEM",
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
    "check_name",
    "check_version",
    "decode_names",
    "decode_package",
    "decode_signed",
    "decode_versions",
    "docs_filename",
    "encode_names",
    "encode_package",
    "encode_versions",
    "fingerprint",
    "gunzip",
    "is_valid_name",
    "is_valid_version",
    "load_public_key",
    "open_signed",
    "parse_docs_filename",
    "parse_tarball_filename",
    "public_key_pem",
    "seal",
    "sign",
    "tarball_filename",
    "verify_names",
    "verify_package",
    "verify_signature",
    "verify_versions",
]
