"""Real rebar3 resolving a project that mixes public packages and a hex.pm organization's
package through a real hexproxy process, with a `hexpm:acme` repo and its `repo_key`.

Upstream is the client tests' tree (tests/clients/conftest.py) plus organization
``acme``, whose ``secret`` needs the public ``hazel``; the fake enforces acme's key. A
second and third project use another organization's key and no key: rebar3 must fail
for them, from the same warm proxy cache.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import aiohttp
import pytest

from hexproxy.registry import public_key_pem
from tests.support.keys import test_private_key
from tests.support.orgs import ACME_KEY, GLOBEX_KEY
from tests.support.rebar3 import Rebar3Project, require_rebar3
from tests.support.repo import DepSpec, PackageSpec, build_org_repo

if TYPE_CHECKING:
    from pathlib import Path

    from tests.conftest import Upstream
    from tests.support.proxy_process import ProxyProcess, ProxyProcesses

pytestmark = pytest.mark.clients

DEPS = [("secret", "~> 1.0"), ("birch", "~> 2.1")]


@pytest.fixture(autouse=True)
def _rebar3() -> None:
    require_rebar3()


@functools.cache
def acme_files() -> dict[str, bytes]:
    hazel = DepSpec("hazel", "~> 0.2.0", repository="hexpm")
    specs = [PackageSpec("secret", "1.0.0", [hazel]), PackageSpec("secret", "1.1.0", [hazel])]
    return build_org_repo(specs, test_private_key(), "acme")


@pytest.fixture
def org_upstream(tree_upstream: Upstream) -> Upstream:
    tree_upstream.repo.files.update(acme_files())
    tree_upstream.repo.grant(ACME_KEY, "acme")
    tree_upstream.repo.grant(GLOBEX_KEY, "globex")
    return tree_upstream


def project(root: Path, proxy: ProxyProcess, key: str | None) -> Rebar3Project:
    return Rebar3Project(
        root,
        cdn_url=proxy.url,
        public_key_pem=public_key_pem(test_private_key().public_key()),
        deps=DEPS,
        org_keys={"acme": key},
    )


async def proxy_get(proxy: ProxyProcess, path: str, key: str | None) -> tuple[int, bytes]:
    headers = {"Authorization": key} if key else {}
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(proxy.url + path, headers=headers) as response,
    ):
        return response.status, await response.read()


async def test_rebar3_mixes_public_and_org_packages_and_other_keys_get_nothing(
    tmp_path: Path, org_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    proxy = await proxies.start(org_upstream.url, tmp_path / "cache")

    good = project(tmp_path / "good", proxy, ACME_KEY)
    fetched = await good.get_deps()
    assert fetched.ok, f"{fetched}\n{proxy.log_tail()}"
    compiled = await good.compile()  # secret's code includes hazel's header: it must be there
    assert compiled.ok, f"{compiled}\n{proxy.log_tail()}"
    lock = good.lock()
    assert (lock["secret"], lock["birch"], lock["hazel"]) == ("1.1.0", "2.1.1", "0.2.1")
    seen = org_upstream.repo.requests
    assert any(s.path == "/repos/acme/tarballs/secret-1.1.0.tar" for s in seen)
    for s in seen:
        expected = ACME_KEY if s.path.startswith("/repos/") else None
        assert s.headers.get("Authorization") == expected, s.path

    # The same proxy, its cache warm: another organization's key, then the hexpm:acme repo
    # without a key.
    for name, key in (("other", GLOBEX_KEY), ("nokey", None)):
        denied = project(tmp_path / name, proxy, key)
        result = await denied.get_deps()
        assert not result.ok, f"{name}: rebar3 got the organization's package\n{result}"
        # Refused by the organization's repo (through the proxy), not skipped.
        assert "Failed to update package secret from repo hexpm:acme" in result.stdout, result
        assert not (denied.project_dir / "_build/default/lib/secret").exists(), name
        assert not list(denied.cache_dir.rglob("secret-*.tar")), name

    # The right key again, in a fresh project: served, from the cache.
    again = project(tmp_path / "again", proxy, ACME_KEY)
    result = await again.get_deps()
    assert result.ok, f"{result}\n{proxy.log_tail()}"
    assert org_upstream.repo.count("/repos/acme/tarballs/secret-1.1.0.tar") == 1

    # The serve process answers /repos/ paths only through the policy (never its fast
    # path): no key, no file, even right after a hit.
    assert (await proxy_get(proxy, "/repos/acme/tarballs/secret-1.1.0.tar", ACME_KEY))[0] == 200
    status, body = await proxy_get(proxy, "/repos/acme/tarballs/secret-1.1.0.tar", None)
    assert status == 401 and body != acme_files()["repos/acme/tarballs/secret-1.1.0.tar"]

    assert await proxies.stop_all() == [0]
    log = proxy.log_path.read_text()
    assert "/repos/acme/packages/secret" in log  # the access log is there...
    for key in (ACME_KEY, GLOBEX_KEY):
        assert key not in log  # ...and no key in it
