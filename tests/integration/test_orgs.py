"""hex.pm organizations through the proxy: every cross-credential case, against a fake
repo.hex.pm that enforces per-organization keys (tests/fakes/hex_repo.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from hexproxy.config import Config
from hexproxy.orgs import OrgRepos, listed_hash
from hexproxy.web.server import start as start_server
from hexproxy.web.state import ORGS
from tests.conftest import ProxyFactory, Upstream
from tests.fakes.hex_repo import flip_byte
from tests.support.cachefiles import object_files
from tests.support.keys import other_private_key, test_private_key
from tests.support.orgs import (
    ACME,
    ACME_KEY,
    ACME_TOKEN,
    ALL_SECRETS,
    GLOBEX_KEY,
    UNKNOWN_KEY,
    acme_specs,
    add_orgs,
    org_files,
)
from tests.support.repo import build_org_repo
from tests.support.user_agents import AS_HEX_2_5, HEX_2_3

SECRET = "/repos/acme/packages/secret"
TARBALL = "/repos/acme/tarballs/secret-1.1.0.tar"
FILES = org_files()


class Clock:
    """The organization policy's clock, moved by hand (no sleeping in tests)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def orgs_upstream(upstream: Upstream) -> Upstream:
    add_orgs(upstream.repo)
    return upstream


async def start(make_proxy: ProxyFactory, **overrides: Any) -> tuple[TestClient[Any, Any], Clock]:
    proxy = await make_proxy(**overrides)
    clock = Clock()
    repos: OrgRepos = proxy.app[ORGS]
    repos.clock = clock
    return proxy, clock


def auth(key: str | None, **more: str) -> dict[str, str]:
    headers = dict(more)
    if key is not None:
        headers["Authorization"] = key
    return headers


async def get(
    proxy: TestClient[Any, Any], path: str, key: str | None, **more: str
) -> tuple[int, bytes, Any]:
    response = await proxy.get(path, headers=auth(key, **more))
    return response.status, await response.read(), response.headers


# ---------------------------------------------------------------------------
# A cold fetch with a good key


async def test_cold_fetch_with_a_good_key(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, _ = await start(make_proxy)
    status, body, headers = await get(proxy, SECRET, ACME_KEY)
    assert (status, headers["X-Cache"]) == (200, "MISS")
    assert body == FILES["repos/acme/packages/secret"]  # byte-identical, still signed
    assert headers["Cache-Control"].startswith("private")
    assert headers["Vary"] == "Authorization"
    assert "Content-Encoding" not in headers
    status, body, headers = await get(proxy, TARBALL, ACME_KEY)
    assert status == 200
    assert body == FILES["repos/acme/tarballs/secret-1.1.0.tar"]
    assert headers["ETag"]  # rebar3 refuses a tarball without one
    assert headers["Cache-Control"].startswith("private")
    seen = orgs_upstream.repo.requests
    assert all(s.headers.get("Authorization") == ACME_KEY for s in seen if "/repos/" in s.path)


async def test_a_key_accepted_within_auth_ttl_is_served_from_cache(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, clock = await start(make_proxy, orgs__auth_ttl=300)
    for path in (SECRET, TARBALL):
        assert (await get(proxy, path, ACME_KEY))[0] == 200
    counts = orgs_upstream.repo.counts()
    clock.advance(100)
    for path in (SECRET, TARBALL):
        status, _, headers = await get(proxy, path, ACME_KEY)
        assert (status, headers["X-Cache"]) == (200, "HIT")
    assert orgs_upstream.repo.counts() == counts  # upstream not asked


async def test_after_auth_ttl_the_key_is_put_to_upstream_again(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, clock = await start(make_proxy, orgs__auth_ttl=60)
    for path in (SECRET, TARBALL):
        assert (await get(proxy, path, ACME_KEY))[0] == 200
    for path in (SECRET, TARBALL):
        # Upstream's word holds for the whole organization: each path comes after it lapsed.
        clock.advance(61)
        before = orgs_upstream.repo.count(path)
        status, body, headers = await get(proxy, path, ACME_KEY)
        assert (status, headers["X-Cache"]) == (200, "REVALIDATED")
        assert body == FILES[path.lstrip("/")]
        assert orgs_upstream.repo.count(path) == before + 1
        # A conditional request: upstream answered 304, no body came down again.
        last = orgs_upstream.repo.requests[-1]
        assert last.headers["If-None-Match"] == orgs_upstream.repo.etag_of(FILES[path.lstrip("/")])


# ---------------------------------------------------------------------------
# The same cached object for every other credential: never served from the cache


@pytest.mark.parametrize("path", [SECRET, TARBALL])
async def test_cached_object_is_never_served_to_any_other_credential(
    make_proxy: ProxyFactory, orgs_upstream: Upstream, path: str
) -> None:
    proxy, _ = await start(make_proxy)
    assert (await get(proxy, path, ACME_KEY))[0] == 200
    private = FILES[path.lstrip("/")]
    cases = [
        ("no key", None, 401),
        ("an unknown key", UNKNOWN_KEY, 401),
        ("another organization's key", GLOBEX_KEY, 403),
        ("the key with a scheme added", "Bearer " + ACME_KEY, 401),
    ]
    for what, key, expected in cases:
        status, body, headers = await get(proxy, path, key, **AS_HEX_2_5)
        assert status == expected, what
        assert private not in body and body != private, what
        assert "X-Cache" not in headers, what
    # No key never reaches upstream; the others were each put to it.
    asked = [s.headers.get("Authorization") for s in orgs_upstream.repo.requests if s.path == path]
    assert asked == [ACME_KEY, UNKNOWN_KEY, GLOBEX_KEY, "Bearer " + ACME_KEY]


async def test_upstream_refusals_pass_through_with_their_message(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, _ = await start(make_proxy)
    status, body, headers = await get(proxy, SECRET, GLOBEX_KEY, **AS_HEX_2_5)
    assert status == 403
    assert body == b"account not authorized for this action\n"
    assert headers["x-hex-message"] == '"account not authorized for this action"; level=fatal'
    status, body, headers = await get(proxy, SECRET, UNKNOWN_KEY, **AS_HEX_2_5)
    assert (status, body) == (401, b"invalid API key\n")
    assert headers["WWW-Authenticate"] == 'Basic realm="hex"'
    # Hex 2.1 to 2.4 crash on any x-hex-message: they get the body only.
    status, _, headers = await get(proxy, SECRET, GLOBEX_KEY, **{"User-Agent": HEX_2_3})
    assert status == 403 and "x-hex-message" not in headers
    # No key: answered here, with the reason, without asking upstream.
    status, body, headers = await get(proxy, SECRET, None, **AS_HEX_2_5)
    assert status == 401 and b"HEX_TRUSTED_MIRROR_URL" in body
    assert headers["x-hex-message"].endswith("level=fatal")


async def test_unknown_package_404_passes_through_and_is_not_cached(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, _ = await start(make_proxy)
    path = "/repos/acme/packages/nothing"
    for _ in range(2):
        status, body, _headers = await get(proxy, path, ACME_KEY)
        assert (status, body) == (404, b"not found\n")
    assert orgs_upstream.repo.count(path) == 2


async def test_a_revoked_key_is_refused_once_auth_ttl_is_over(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, clock = await start(make_proxy, orgs__auth_ttl=60, orgs__offline_grace="1d")
    for path in (SECRET, TARBALL):
        assert (await get(proxy, path, ACME_KEY))[0] == 200
    orgs_upstream.repo.revoke(ACME_KEY)
    clock.advance(61)
    for path in (SECRET, TARBALL):
        status, body, _headers = await get(proxy, path, ACME_KEY)
        assert status == 401
        assert body == b"invalid API key\n"
    # Refused means forgotten: with upstream gone, the grace window no longer applies.
    await orgs_upstream.stop()
    for path in (SECRET, TARBALL):
        status, body, _headers = await get(proxy, path, ACME_KEY)
        assert status == 502
        assert body != FILES[path.lstrip("/")]


async def test_auth_ttl_zero_asks_upstream_every_time(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, _ = await start(make_proxy, orgs__auth_ttl=0)
    for _ in range(3):
        assert (await get(proxy, TARBALL, ACME_KEY))[0] == 200
    assert orgs_upstream.repo.count(TARBALL) == 3
    orgs_upstream.repo.revoke(ACME_KEY)
    assert (await get(proxy, TARBALL, ACME_KEY))[0] == 401


# ---------------------------------------------------------------------------
# Upstream down: only keys accepted within offline_grace, only for their organizations


async def test_upstream_down_serves_only_keys_accepted_within_the_grace_window(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, clock = await start(make_proxy, orgs__auth_ttl=60, orgs__offline_grace="1h")
    for path in (SECRET, TARBALL):
        assert (await get(proxy, path, ACME_KEY))[0] == 200
    assert (await get(proxy, "/repos/globex/packages/widget", GLOBEX_KEY))[0] == 200
    await orgs_upstream.stop()
    clock.advance(120)  # past auth_ttl: upstream would be asked first, and cannot answer
    for path in (SECRET, TARBALL):
        status, body, headers = await get(proxy, path, ACME_KEY, **AS_HEX_2_5)
        assert (status, headers["X-Cache"]) == (200, "STALE")
        assert body == FILES[path.lstrip("/")]
        assert headers["x-hex-message"].endswith("; level=warn")
        assert "accepted your key for acme 2m ago" in headers["x-hex-message"]
        assert headers["Warning"].startswith("110 ")
    # Never accepted (a valid key upstream, but not seen by this proxy): nothing.
    status, body, _ = await get(proxy, SECRET, ACME_TOKEN)
    assert status == 502 and body != FILES["repos/acme/packages/secret"]
    # Accepted, but for another organization: nothing.
    for path in (SECRET, TARBALL):
        status, body, _ = await get(proxy, path, GLOBEX_KEY)
        assert status == 502 and body != FILES[path.lstrip("/")]
    # No key: still the 401, whatever upstream's state.
    assert (await get(proxy, SECRET, None))[0] == 401
    # Past the grace window: nothing either.
    clock.advance(3600)
    for path in (SECRET, TARBALL):
        status, body, _ = await get(proxy, path, ACME_KEY)
        assert status == 502 and body != FILES[path.lstrip("/")]
        assert b"offline_grace" in body


async def test_offline_grace_zero_never_serves_with_upstream_down(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, clock = await start(make_proxy, orgs__auth_ttl=60, orgs__offline_grace=0)
    assert (await get(proxy, SECRET, ACME_KEY))[0] == 200
    await orgs_upstream.stop()
    clock.advance(61)
    assert (await get(proxy, SECRET, ACME_KEY))[0] == 502


async def test_upstream_5xx_counts_as_down_and_not_as_a_refusal(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, clock = await start(make_proxy, orgs__auth_ttl=60)
    assert (await get(proxy, SECRET, ACME_KEY))[0] == 200
    orgs_upstream.repo.fail("503", SECRET)
    clock.advance(61)
    status, _, headers = await get(proxy, SECRET, ACME_KEY)
    assert (status, headers["X-Cache"]) == (200, "STALE")
    orgs_upstream.repo.heal()
    status, _, headers = await get(proxy, SECRET, ACME_KEY)
    assert (status, headers["X-Cache"]) == (200, "REVALIDATED")
    # The public repository's breaker never heard of any of it.
    assert proxy.app[ORGS].upstream.repository.breaker.failures == 0


async def test_slow_upstream_stale_for_an_accepted_key_but_awaited_for_a_new_one(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, clock = await start(make_proxy, orgs__auth_ttl=60, upstream__stale_timeout=0.3)
    assert (await get(proxy, SECRET, ACME_KEY))[0] == 200
    clock.advance(61)
    orgs_upstream.repo.delay = 1.0
    # Accepted within the grace window: the cached copy after stale_timeout.
    status, _, headers = await get(proxy, SECRET, ACME_KEY)
    assert (status, headers["X-Cache"]) == (200, "STALE")
    # Never accepted: no stale copy to fall back on, so upstream's own answer is awaited.
    status, _, headers = await get(proxy, SECRET, ACME_TOKEN)
    assert (status, headers["X-Cache"]) == (200, "REVALIDATED")
    status, _, _ = await get(proxy, SECRET, GLOBEX_KEY)
    assert status == 403


# ---------------------------------------------------------------------------
# Concurrent requests with different keys for one object nobody has fetched yet


@pytest.mark.parametrize("path", [SECRET, TARBALL, "/repos/acme/tarballs/vault-0.2.0.tar"])
async def test_concurrent_keys_each_get_what_their_own_key_allows(
    make_proxy: ProxyFactory, orgs_upstream: Upstream, path: str
) -> None:
    proxy, _ = await start(make_proxy)
    orgs_upstream.repo.delay = 0.2  # all of them in flight at once
    keys = [ACME_KEY, GLOBEX_KEY, UNKNOWN_KEY, None, ACME_TOKEN, ACME_KEY, GLOBEX_KEY]
    results = await asyncio.gather(*(get(proxy, path, key) for key in keys))
    private = FILES[path.lstrip("/")]
    expected = {ACME_KEY: 200, ACME_TOKEN: 200, GLOBEX_KEY: 403, UNKNOWN_KEY: 401, None: 401}
    for key, (status, body, _) in zip(keys, results, strict=True):
        assert status == expected[key], key
        assert (body == private) is (status == 200), key
    # Each distinct key was put to upstream itself (a refused one already at the package
    # file a tarball is checked against), and each path once per key: the same key shares.
    seen = [s for s in orgs_upstream.repo.requests if s.path.startswith("/repos/acme/")]
    asked = {s.headers.get("Authorization") for s in seen}
    assert asked == {ACME_KEY, ACME_TOKEN, GLOBEX_KEY, UNKNOWN_KEY}
    per_path_and_key = [(s.path, s.headers.get("Authorization")) for s in seen]
    assert len(per_path_and_key) == len(set(per_path_and_key))
    assert {key for p, key in per_path_and_key if p == path} >= {ACME_KEY, ACME_TOKEN}


# ---------------------------------------------------------------------------
# Verification: the same checks as public files, with repository = the organization


async def test_org_registry_signed_for_another_repository_is_refused(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    forged = build_org_repo(acme_specs(), test_private_key(), "globex")  # repository "globex"
    orgs_upstream.repo.files["repos/acme/packages/secret"] = forged["repos/globex/packages/secret"]
    proxy, _ = await start(make_proxy)
    status, _, _ = await get(proxy, SECRET, ACME_KEY)
    assert status == 502
    assert not (proxy.app[ORGS].storage.root / "orgs/acme/registry/packages/secret").exists()


async def test_org_registry_signed_with_another_key_is_refused(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    forged = build_org_repo(acme_specs(), other_private_key(), ACME)
    orgs_upstream.repo.files["repos/acme/packages/secret"] = forged["repos/acme/packages/secret"]
    proxy, _ = await start(make_proxy)
    assert (await get(proxy, SECRET, ACME_KEY))[0] == 502


async def test_org_tarball_must_match_the_signed_checksum(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    orgs_upstream.repo.files[TARBALL.lstrip("/")] = flip_byte(FILES[TARBALL.lstrip("/")])
    proxy, _ = await start(make_proxy)
    response = await proxy.get(TARBALL, headers=auth(ACME_KEY))
    with pytest.raises(Exception):  # noqa: B017  the transfer is cut short
        await response.read()
    assert not (proxy.app[ORGS].storage.root / "orgs/acme/tarballs/secret").exists()


async def test_public_paths_never_answer_with_org_files(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    proxy, _ = await start(make_proxy)
    assert (await get(proxy, SECRET, ACME_KEY))[0] == 200
    status, body, _ = await get(proxy, "/packages/secret", ACME_KEY)
    assert status == 404 and body != FILES["repos/acme/packages/secret"]


# ---------------------------------------------------------------------------
# docs, public_key, names, and paths that are not an organization's


async def test_docs_public_key_and_registry_lists(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    docs = b"docs of secret"
    orgs_upstream.repo.files["repos/acme/docs/secret-1.1.0.tar.gz"] = docs
    orgs_upstream.repo.files["repos/acme/public_key"] = b"-----BEGIN PUBLIC KEY-----\n"
    proxy, _ = await start(make_proxy)
    for _ in range(2):  # a miss, then the stored copy
        status, body, _ = await get(proxy, "/repos/acme/docs/secret-1.1.0.tar.gz", ACME_KEY)
        assert (status, body) == (200, docs)
    assert (await get(proxy, "/repos/acme/docs/secret-1.1.0.tar.gz", GLOBEX_KEY))[0] == 403
    status, body, _ = await get(proxy, "/repos/acme/public_key", ACME_KEY)
    assert (status, body) == (200, b"-----BEGIN PUBLIC KEY-----\n")
    assert (await get(proxy, "/repos/acme/public_key", None))[0] == 401
    for path in ("/repos/acme/names", "/repos/acme/versions"):
        status, body, _ = await get(proxy, path, ACME_KEY)
        assert (status, body) == (200, FILES[path.lstrip("/")])
    assert (await get(proxy, "/repos/acme/elsewhere", ACME_KEY))[0] == 404
    assert (await get(proxy, "/repos/Not-An-Org/packages/secret", ACME_KEY))[0] == 400


HOSTILE_ORG_PATHS = [
    "/repos/..%2F..%2Fetc/packages/secret",
    "/repos/Acme/packages/secret",
    "/repos/acme%2F..%2Fglobex/packages/widget",
    "/repos/acme/packages/..%2F..%2Fnames",
    "/repos/acme/packages/Secret%00",
    "/repos/acme/tarballs/secret-1.1.tar",
    "/repos/acme/tarballs/..%2Fsecret-1.1.0.tar",
    "/repos/acme/docs/secret-1.1.0.tar",
    "/repos/" + "a" * 300 + "/packages/secret",
    "/repos/hexpm/packages/alpha",
    "/repos/acme/installs/hex-1.x.csv",
    "/repos/acme",
    "/repos/",
]


@pytest.mark.parametrize("path", HOSTILE_ORG_PATHS)
async def test_hostile_org_paths_touch_nothing(
    make_proxy: ProxyFactory, orgs_upstream: Upstream, path: str
) -> None:
    proxy, _ = await start(make_proxy)
    for key in (ACME_KEY, None):
        status, _, _ = await get(proxy, path, key)
        assert status in (400, 404) if key else status in (400, 401, 404), (path, key, status)
    assert orgs_upstream.repo.requests == []
    root = proxy.app[ORGS].storage.root
    assert object_files(root) == []


# ---------------------------------------------------------------------------
# Credentials never in logs, metrics, pages or the cache directory


async def test_credentials_are_in_no_log_metric_page_or_file(
    make_proxy: ProxyFactory, orgs_upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    proxy, clock = await start(make_proxy, orgs__auth_ttl=60)
    for key in (ACME_KEY, ACME_TOKEN, GLOBEX_KEY, UNKNOWN_KEY, None):
        for path in (SECRET, TARBALL, "/repos/acme/docs/secret-1.1.0.tar.gz"):
            await get(proxy, path, key, **AS_HEX_2_5)
    orgs_upstream.repo.fail("flip", "/repos/acme/tarballs/vault-0.2.0.tar")
    await proxy.get("/repos/acme/tarballs/vault-0.2.0.tar", headers=auth(ACME_KEY))  # logged
    await orgs_upstream.stop()
    clock.advance(61)
    for key in (ACME_KEY, GLOBEX_KEY):
        for path in (SECRET, TARBALL):
            await get(proxy, path, key, **AS_HEX_2_5)  # stale, and not confirmed: both logged
    pages = [
        await (await proxy.get(f"/_hexproxy/{page}")).text() for page in ("metrics", "", "ready")
    ]
    root = proxy.app[ORGS].storage.root
    stored = [p.read_bytes() for p in root.rglob("*") if p.is_file()]
    assert any(FILES["repos/acme/packages/secret"] == data for data in stored)
    for secret in ALL_SECRETS:
        token = secret.removeprefix("Bearer ")
        assert token not in caplog.text, secret
        assert all(token not in page for page in pages), secret
        assert all(token.encode() not in data for data in stored), secret
        # Nor any of the request-scoped objects the policy keeps once requests are done.
        assert token not in repr(proxy.app[ORGS].grants.__dict__), secret


# ---------------------------------------------------------------------------
# Offline (air-gapped): only keys whose hashes orgs.keys lists for that organization


async def test_offline_serves_only_keys_listed_for_the_organization(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    online, _ = await start(make_proxy)
    for path in (SECRET, TARBALL):
        assert (await get(online, path, ACME_KEY))[0] == 200
    asked = len(orgs_upstream.repo.requests)
    listed = {
        "acme": [listed_hash("acme", ACME_KEY)],
        "globex": [listed_hash("globex", GLOBEX_KEY)],
    }
    offline, _ = await start(make_proxy, upstream__offline=True, orgs__keys=listed)
    for path in (SECRET, TARBALL):
        status, body, headers = await get(offline, path, ACME_KEY)
        assert (status, headers["X-Cache"]) == (200, "HIT")
        assert body == FILES[path.lstrip("/")]
        for key, expected in (
            (None, 401),
            (GLOBEX_KEY, 403),
            (UNKNOWN_KEY, 403),
            (ACME_TOKEN, 403),
        ):
            status, body, _ = await get(offline, path, key)
            assert status == expected, key
            assert body != FILES[path.lstrip("/")]
    assert (await get(offline, "/repos/acme/packages/vault", ACME_KEY))[0] == 404
    assert (await get(offline, "/repos/globex/packages/widget", GLOBEX_KEY))[0] == 404
    assert len(orgs_upstream.repo.requests) == asked  # offline means offline


async def test_a_hash_listed_for_one_organization_does_not_open_another(
    make_proxy: ProxyFactory, orgs_upstream: Upstream
) -> None:
    online, _ = await start(make_proxy)
    assert (await get(online, SECRET, ACME_KEY))[0] == 200
    # The operator copied acme's hash under globex: it is bound to acme, so it opens nothing.
    listed = {"globex": [listed_hash("acme", ACME_KEY)]}
    offline, _ = await start(make_proxy, upstream__offline=True, orgs__keys=listed)
    assert (await get(offline, SECRET, ACME_KEY))[0] == 403


# ---------------------------------------------------------------------------
# The serve process's fast path never answers /repos/: it hands them to the policy


async def test_fast_path_hands_every_org_request_to_the_policy(
    proxy_config: Callable[..., Config], orgs_upstream: Upstream
) -> None:
    running = await start_server(proxy_config(server__listen="127.0.0.1:0"))
    base = f"http://127.0.0.1:{running.port}"
    try:
        # A connection per request, so the fast path sees each one first (a connection
        # aiohttp answered once stays with aiohttp): the second round is all warm.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(2):
                for path, key, status in (
                    ("/packages/alpha", None, 200),
                    (SECRET, ACME_KEY, 200),
                    (TARBALL, ACME_KEY, 200),
                    (SECRET, None, 401),
                    (TARBALL, None, 401),
                    (TARBALL, GLOBEX_KEY, 403),
                ):
                    async with session.get(base + path, headers=auth(key)) as response:
                        body = await response.read()
                        assert response.status == status, (path, key)
                        served_by = response.headers["Server"]
                        if path.startswith("/repos/"):
                            assert served_by != "hexproxy", (path, key)
                        if status != 200:
                            assert body != FILES[path.lstrip("/")]
            # The fast path was there all along: it answered the warm public hit.
            assert served_by != "hexproxy"  # (the last answer, a /repos/ refusal)
            async with session.get(base + "/packages/alpha") as hit:
                assert hit.headers["Server"] == "hexproxy"
    finally:
        await running.stop()
