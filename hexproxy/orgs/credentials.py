"""Client credentials for organizations' repositories, held only as keyed hashes.

A request's ``authorization`` header is the credential (rebar3 sends the raw
repository key, mix a ``Bearer`` token or the raw key). It lives in clear only
in the request that carried it and in the one upstream request made on its
behalf; everything the proxy remembers about it is keyed by
``HMAC-SHA256(process secret, credential)``, a secret drawn at start-up and never
written anywhere, so neither memory dumps of the tables nor timing of lookups
in them say anything about the credential itself.

Offline, no upstream can vouch for a key, so ``orgs.keys`` lists which keys may
read which organization, as ``listed_hash(org, key)``: a hash bound to the
organization (the same key listed for two organizations gives two different
values), computed by ``hexproxy orgs hash-key`` or, equivalently::

    printf %s "$KEY" | openssl dgst -sha256 -hmac "hexproxy org key for ORG"
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

HASH_PREFIX = "hmac-sha256:"


def listed_hash(org: str, key: str) -> str:
    """What ``orgs.keys`` lists for ``key`` reading ``org``."""
    mac = hmac.new(f"hexproxy org key for {org}".encode(), key.encode(), hashlib.sha256)
    return HASH_PREFIX + mac.hexdigest()


def is_listed(org: str, key: str, listed: Iterable[str]) -> bool:
    """Is ``key`` among ``listed`` for ``org``? Compared in constant time, every entry."""
    mine = listed_hash(org, key).encode()
    found = False
    for value in listed:
        # No early exit: the time taken does not depend on where (or whether) it matched.
        found |= hmac.compare_digest(mine, value.encode())
    return found


@dataclass(frozen=True, slots=True)
class Credential:
    """One request's credential: the header to send upstream, and its keyed digest.

    ``header`` is excluded from repr and comparison, so a credential that ends up in
    a log line or an assertion message shows nothing of the key.
    """

    digest: bytes
    header: str = field(repr=False, compare=False)
    listed_for: frozenset[str] = frozenset()  # organizations whose orgs.keys list it

    def __str__(self) -> str:
        return f"credential {self.digest[:4].hex()}…"


class Keyring:
    """Turns ``authorization`` headers into Credentials with this process's secret."""

    def __init__(self, listed: Mapping[str, tuple[str, ...]], secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else os.urandom(32)
        self._listed = dict(listed)

    def credential(self, header: str | None) -> Credential | None:
        """The request's credential, or None when it carries none."""
        if not header or not header.strip():
            return None
        digest = hmac.new(self._secret, header.encode("utf-8", "surrogateescape"), "sha256")
        listed = frozenset(
            org for org, hashes in self._listed.items() if is_listed(org, header, hashes)
        )
        return Credential(digest.digest(), header, listed)
