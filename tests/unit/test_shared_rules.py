"""What the shared store takes, and which copy of a registry file counts as newer."""

from __future__ import annotations

import hashlib

import pytest

from hexproxy.cache.shared import is_shared, shared_copy_problem
from hexproxy.store.cachekey import (
    NAMES,
    CacheKey,
    Kind,
    install_key,
    package_key,
    tarball_key,
)
from hexproxy.store.storage import Meta


@pytest.mark.parametrize(
    ("key", "shared"),
    [
        (NAMES, True),
        (package_key("plug"), True),
        (tarball_key("plug", "1.0.0"), True),
        (install_key("1.14.0/hex-2.0.6.ez"), True),
        (install_key("hex-1.x.csv"), False),
        (install_key("hex-1.x.csv.signed"), False),
        (package_key("secret", org="acme"), False),
        (tarball_key("secret", "1.0.0", org="acme"), False),
        (CacheKey(Kind.NAMES, org="acme"), False),
    ],
)
def test_what_goes_to_the_shared_store(key: CacheKey, shared: bool) -> None:
    assert is_shared(key) is shared


def meta(sha: str, at: float, last_modified: str | None = None) -> Meta:
    return Meta(sha, 1, at, at, None, last_modified)


def test_the_same_body_never_supersedes() -> None:
    assert not meta("a", 2).supersedes(meta("a", 1))


def test_later_fetch_supersedes_without_last_modified() -> None:
    assert meta("b", 2).supersedes(meta("a", 1))
    assert not meta("a", 1).supersedes(meta("b", 2))


def test_upstreams_last_modified_wins_over_fetch_times() -> None:
    newer = meta("b", 1, "Wed, 02 Oct 2024 10:00:00 GMT")
    older_fetched_later = meta("a", 9, "Tue, 01 Oct 2024 10:00:00 GMT")
    assert newer.supersedes(older_fetched_later)
    assert not older_fetched_later.supersedes(newer)


def test_an_unparsable_last_modified_falls_back_to_fetch_times() -> None:
    assert meta("b", 2, "yesterday").supersedes(meta("a", 1, "Tue, 01 Oct 2024 10:00:00 GMT"))


def test_a_shared_copy_is_checked_like_an_upstream_download() -> None:
    body = b"tarball"
    good = hashlib.sha256(body).digest()
    assert shared_copy_problem(body, good, None, 100) is None
    assert "outer checksum" in (shared_copy_problem(body + b"!", good, None, 100) or "")
    assert "limit" in (shared_copy_problem(body, good, None, 3) or "")
    sha512 = ("sha512", hashlib.sha512(body).digest())
    assert shared_copy_problem(body, None, sha512, 100) is None
    assert "sha512" in (shared_copy_problem(b"other", None, sha512, 100) or "")
