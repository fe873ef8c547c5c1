"""Property tests: no request path can make the proxy read or write outside its cache.

Every file the proxy touches for a request is ``cache_dir / key.path`` for a CacheKey
built by a constructor in ``hexproxy/cachekey.py``. So: (1) whatever string reaches those
constructors, they either refuse it (InvalidRequest) or return a key whose path is a
plain relative path that stays under the root; (2) whatever path a client sends, the
real router and handlers only ever hand such keys to the cache.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path, PurePosixPath

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hexproxy.config import load_config
from hexproxy.errors import HexproxyError, InvalidRequest, NotFound
from hexproxy.registry import parse_docs_filename, parse_tarball_filename
from hexproxy.store.cachekey import CacheKey, docs_key, install_key, package_key, tarball_key
from hexproxy.web import routes
from hexproxy.web.state import CACHE, CONFIG

ROOT = Path("/srv/hexproxy-cache")

# Characters that matter for paths, plus anything at all.
_TRICKY = st.sampled_from(
    [
        ".",
        "..",
        "/",
        "\\",
        "%2e",
        "%2f",
        "%2F",
        "%00",
        "\x00",
        "-",
        "_",
        "~",
        "+",
        " ",
        "a",
        "Z",
        "1",
    ]
)
tricky_text = st.lists(_TRICKY | st.text(max_size=3), max_size=12).map("".join)
any_text = tricky_text | st.text(max_size=40)


def assert_contained(key: CacheKey) -> None:
    rel = key.path
    assert rel and not rel.startswith("/"), rel
    assert "\x00" not in rel and "\\" not in rel, rel
    parts = PurePosixPath(rel).parts
    assert all(p not in ("", ".", "..") for p in parts), rel
    assert "/".join(parts) == rel, rel  # no doubled or trailing slashes
    resolved = Path(os.path.normpath(ROOT / rel))
    assert resolved.is_relative_to(ROOT) and resolved != ROOT, rel


def _build(make: object, *args: str) -> CacheKey | None:
    try:
        key = make(*args)  # type: ignore[operator]
    except InvalidRequest:
        return None
    assert isinstance(key, CacheKey)
    return key


@settings(max_examples=300, deadline=None)
@given(a=any_text, b=any_text)
def test_key_constructors_never_escape(a: str, b: str) -> None:
    for key in (
        _build(package_key, a),
        _build(tarball_key, a, b),
        _build(docs_key, a, b),
        _build(install_key, a),
        _build(lambda f: tarball_key(*parse_tarball_filename(f)), a),
        _build(lambda f: docs_key(*parse_docs_filename(f)), a),
    ):
        if key is not None:
            assert_contained(key)


class RecordingCache:
    """Stands in for Cache: records each key a handler asks for, then says "not found"."""

    def __init__(self) -> None:
        self.keys: list[CacheKey] = []

    async def get_metadata(self, key: CacheKey) -> None:
        self.keys.append(key)
        raise NotFound("recorded")

    async def get_file(self, key: CacheKey) -> None:
        self.keys.append(key)
        raise NotFound("recorded")


def _app(recorder: RecordingCache) -> web.Application:
    app = web.Application()
    app[CACHE] = recorder  # type: ignore[assignment]
    app[CONFIG] = load_config(None, {}, {("cache", "dir"): str(ROOT)})
    routes.add_routes(app)
    return app


async def _route(app: web.Application, path: str) -> None:
    request = make_mocked_request("GET", path, app=app)
    match = await app.router.resolve(request)
    if match.http_exception is not None:
        return  # 404/405 from the router: no handler ran
    match.add_app(app)
    request._match_info = match
    try:
        await match.handler(request)
    except HexproxyError as exc:
        assert 400 <= exc.http_status < 500, exc


PREFIXES = st.sampled_from(
    ["/packages/", "/tarballs/", "/docs/", "/installs/", "/installs/1.0/", "/", "/names/"]
)
_SAFE_URL_TEXT = st.lists(
    st.sampled_from([*"abcz019._-~+%/2eEfF", "..", "%2e", "%2f", "%252e"]), max_size=30
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=PREFIXES, rest=_SAFE_URL_TEXT | tricky_text)
def test_no_request_path_reaches_outside_the_cache(prefix: str, rest: str) -> None:
    recorder = RecordingCache()
    app = _app(recorder)
    path = prefix + rest
    if any(c in path for c in " \x00\\") or not path.isprintable():
        path = prefix + rest.encode("utf-8", "surrogatepass").hex()
    asyncio.run(_route(app, path))
    for key in recorder.keys:
        assert_contained(key)


def test_router_reaches_the_cache_for_valid_paths() -> None:
    """The property above is not vacuous: valid paths do reach the cache."""
    recorder = RecordingCache()
    app = _app(recorder)
    for path in ("/packages/alpha", "/tarballs/alpha-1.0.0.tar", "/installs/hex-1.x.csv"):
        asyncio.run(_route(app, path))
    assert [k.path for k in recorder.keys] == [
        "registry/packages/alpha",
        "tarballs/alpha/alpha-1.0.0.tar",
        "installs/hex-1.x.csv",
    ]
