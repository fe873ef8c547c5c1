"""The one mapping from a request path to the object it names (routes, fast path, eviction)."""

from __future__ import annotations

import pytest

from hexproxy.errors import InvalidRequest
from hexproxy.store.cachekey import NAMES, VERSIONS, CacheKey, Kind, key_for_request_path


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
