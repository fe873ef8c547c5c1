"""The one mapping from a request path to the object it names (routes, fast path, eviction)."""

from __future__ import annotations

import pytest

from hexproxy.errors import InvalidRequest
from hexproxy.store.cachekey import (
    NAMES,
    VERSIONS,
    CacheKey,
    Kind,
    key_for_path,
    key_for_request_path,
)


@pytest.mark.parametrize(
    ("path", "key"),
    [
        ("/names", NAMES),
        ("/versions", VERSIONS),
        ("/packages/plug", CacheKey(Kind.PACKAGE, "plug")),
        ("/packages/addressBook", CacheKey(Kind.PACKAGE, "addressBook")),
        ("/tarballs/plug-1.0.0-rc.1.tar", CacheKey(Kind.TARBALL, "plug", "1.0.0-rc.1")),
        ("/docs/plug-1.0.0.tar.gz", CacheKey(Kind.DOCS, "plug", "1.0.0")),
        ("/installs/hex-1.x.csv", CacheKey(Kind.INSTALL, "hex-1.x.csv")),
        ("/installs/1.14.0/hex-2.0.6.ez", CacheKey(Kind.INSTALL, "1.14.0/hex-2.0.6.ez")),
    ],
)
def test_repository_paths(path: str, key: CacheKey) -> None:
    assert key_for_request_path(path) == key
    assert key.upstream_path == path  # and back: the same layout clients use


@pytest.mark.parametrize(
    "path", ["/public_key", "/", "", "/names/", "/packages", "packages/plug", "/x/plug"]
)
def test_paths_that_name_no_object(path: str) -> None:
    assert key_for_request_path(path) is None


@pytest.mark.parametrize(
    "path",
    [
        "/packages/",
        "/packages/Plug",
        "/packages/plug/x",
        "/packages/plug?x=1",
        "/packages/%70lug",  # only decoded paths are keys: the raw target is not one
        "/tarballs/plug-1.0.tar",
        "/tarballs/plug-1.0.0.tar.gz",
        "/docs/plug-1.0.0.tar",
        "/installs/../etc/passwd",
        "/installs/a/b/c",
    ],
)
def test_grammar_violations_are_invalid_requests(path: str) -> None:
    with pytest.raises(InvalidRequest):
        key_for_request_path(path)


@pytest.mark.parametrize(
    "stored",
    [
        "registry/packages/plug.meta",  # a sidecar
        "tarballs/plug/plug-1.0.tar",
        "tarballs/plug/plug-1.0.0.tar.meta",
        "docs/plug/notes.txt",
        "installs/../x",
        "tmp/upload-1234",
    ],
)
def test_storage_paths_no_key_lives_at_are_none_not_errors(stored: str) -> None:
    """key_for_path lists what a bucket holds: whatever else an operator or a sidecar put
    there is skipped, never an error (key_for_request_path raises for bad names)."""
    assert key_for_path(stored) is None


def test_storage_paths_of_keys_map_back() -> None:
    for key in (NAMES, CacheKey(Kind.PACKAGE, "plug"), CacheKey(Kind.TARBALL, "plug", "1.0.0")):
        assert key_for_path(key.path) == key
