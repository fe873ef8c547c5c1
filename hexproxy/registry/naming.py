"""The grammar of Hex package names, versions and the file names built from them.

Every path the proxy touches (upstream URL, cache key, response) is built from parts that
passed these checks, so an allowlist grammar replaces any `..` or `%2f` denylist.
"""

from __future__ import annotations

import re

from hexproxy.errors import InvalidRequest

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_VERSION_LENGTH",
    "check_name",
    "check_version",
    "docs_filename",
    "is_valid_name",
    "is_valid_org",
    "is_valid_version",
    "parse_docs_filename",
    "parse_tarball_filename",
    "tarball_filename",
]

# hexpm itself has no explicit cap; these only bound the work and the log lines a hostile
# request can cause. The longest name and version on repo.hex.pm are far shorter.
MAX_NAME_LENGTH = 128
MAX_VERSION_LENGTH = 255

# hexpm/lib/hexpm/repository/package.ex validates `~r"^[a-z]\w*$"`, and \w includes
# uppercase: ten real packages (addressBook, exBankID, yEnc, ...) have it after the first
# letter, so the documented `[a-z][a-z0-9_]*` would make them unreachable through the proxy.
_NAME = re.compile(r"[a-z][A-Za-z0-9_]*")

# hexpm/lib/hexpm/accounts/organization.ex: `~r"^[a-z0-9_]+$"` (lowercased on creation,
# at least 3 characters). The length floor is hexpm's business, not a safety matter.
_ORG = re.compile(r"[a-z0-9_]+")

# SemVer 2.0.0: numeric parts without leading zeros; pre-release identifiers are either a
# number without leading zeros or alphanumeric; build identifiers are any alphanumerics.
_NUMBER = r"(?:0|[1-9][0-9]*)"
_PRE_ID = r"(?:0|[1-9][0-9]*|[0-9]*[A-Za-z-][0-9A-Za-z-]*)"
_BUILD_ID = r"[0-9A-Za-z-]+"
_VERSION = re.compile(
    rf"{_NUMBER}\.{_NUMBER}\.{_NUMBER}"
    rf"(?:-{_PRE_ID}(?:\.{_PRE_ID})*)?"
    rf"(?:\+{_BUILD_ID}(?:\.{_BUILD_ID})*)?"
)

_TARBALL_SUFFIX = ".tar"
_DOCS_SUFFIX = ".tar.gz"


def is_valid_name(s: str) -> bool:
    """True if `s` is a Hex package name: a lowercase letter, then letters, digits or "_"."""
    return len(s) <= MAX_NAME_LENGTH and _NAME.fullmatch(s) is not None


def is_valid_org(s: str) -> bool:
    """True if `s` is a hex.pm organization name: lowercase letters, digits and "_"."""
    return len(s) <= MAX_NAME_LENGTH and _ORG.fullmatch(s) is not None


def is_valid_version(s: str) -> bool:
    """True if `s` is a strict SemVer 2.0.0 version (bounded length)."""
    return len(s) <= MAX_VERSION_LENGTH and _VERSION.fullmatch(s) is not None


def check_name(s: str) -> str:
    """Return `s` if it is a valid package name, else raise InvalidRequest."""
    if not is_valid_name(s):
        raise InvalidRequest(f"invalid package name: {_shown(s)}")
    return s


def check_version(s: str) -> str:
    """Return `s` if it is a valid version, else raise InvalidRequest."""
    if not is_valid_version(s):
        raise InvalidRequest(f"invalid version: {_shown(s)}")
    return s


def parse_tarball_filename(filename: str) -> tuple[str, str]:
    """Split "NAME-VERSION.tar" into (name, version); InvalidRequest if it does not parse."""
    return _parse_filename(filename, _TARBALL_SUFFIX)


def parse_docs_filename(filename: str) -> tuple[str, str]:
    """Split "NAME-VERSION.tar.gz" into (name, version); InvalidRequest if it does not parse."""
    return _parse_filename(filename, _DOCS_SUFFIX)


def tarball_filename(name: str, version: str) -> str:
    """Build "NAME-VERSION.tar" from validated parts."""
    return f"{check_name(name)}-{check_version(version)}{_TARBALL_SUFFIX}"


def docs_filename(name: str, version: str) -> str:
    """Build "NAME-VERSION.tar.gz" from validated parts."""
    return f"{check_name(name)}-{check_version(version)}{_DOCS_SUFFIX}"


def _parse_filename(filename: str, suffix: str) -> tuple[str, str]:
    if not filename.endswith(suffix):
        raise InvalidRequest(f"file name must end in {suffix}: {_shown(filename)}")
    # Names never contain "-" while versions may ("1.0.0-rc.1"), so the first "-" is the
    # only correct split point.
    name, dash, version = filename[: -len(suffix)].partition("-")
    if not dash:
        raise InvalidRequest(f"file name must be NAME-VERSION{suffix}: {_shown(filename)}")
    return check_name(name), check_version(version)


def _shown(s: str) -> str:
    """Quote untrusted input for an error message: escaped, and cut short."""
    return repr(s[:80] + "..." if len(s) > 80 else s)
