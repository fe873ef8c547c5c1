"""A hosted repository used by real clients, through a real ``hexproxy serve`` process.

Publishing: hex_core as shipped inside rebar3 (its ``r3_hex_*`` modules, the library
rebar3_hex is built on) builds the package tarball and publishes, retires and reverts
through the Hex HTTP API (tests/support/hexcore.py). Fetching: real rebar3 resolves a
project that depends on the internal ``acme_core``, which itself depends on the public
``dogwood`` served through the mirror from the fake upstream, with ``HEX_CDN`` for hexpm
and a ``repos`` entry for ``acme``; cold, then with upstream down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
import pytest

from hexproxy.hosted.keys import digest_of
from hexproxy.registry import load_public_key, public_key_pem, verify_package
from tests.conftest import Upstream
from tests.support.hexcore import HexCore
from tests.support.keys import test_private_key
from tests.support.proxy_process import ProxyProcess, ProxyProcesses
from tests.support.rebar3 import Rebar3Project, require_rebar3

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.clients

WRITE_KEY = "ci-publisher-" + "7" * 40
READ_KEY = "ci-reader-" + "8" * 40


@pytest.fixture(autouse=True)
def _rebar3() -> None:
    require_rebar3()


def write_config(path: Path, hosted_dir: Path, *, read_protected: bool = False) -> Path:
    read = f'read_keys = ["{digest_of(READ_KEY)}"]\n' if read_protected else ""
    path.write_text(
        f'[hosted]\ndir = "{hosted_dir}"\n\n'
        f'[[hosted.repos]]\nname = "acme"\nwrite_keys = ["{digest_of(WRITE_KEY)}"]\n{read}'
    )
    return path


async def start_proxy(
    proxies: ProxyProcesses, upstream: Upstream, tmp: Path, *, read_protected: bool = False
) -> ProxyProcess:
    config = write_config(tmp / "hexproxy.toml", tmp / "hosted", read_protected=read_protected)
    return await proxies.start(upstream.url, tmp / "cache", CONFIG=str(config))


async def fetch(proxy: ProxyProcess, path: str, key: str | None = None) -> tuple[int, bytes]:
    headers = {"authorization": key} if key else {}
    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(proxy.url + path, headers=headers) as response,
    ):
        return response.status, await response.read()


def acme_project(
    root: Path, proxy: ProxyProcess, acme_pem: bytes, repo_key: str | None = None
) -> Rebar3Project:
    """A project depending on acme_core, with the acme repository listed before hexpm."""
    project = Rebar3Project(
        root,
        cdn_url=proxy.url,
        public_key_pem=public_key_pem(test_private_key().public_key()),
        deps=[("acme_core", "~> 1.0")],
    )
    hexpm_pem = public_key_pem(test_private_key().public_key()).decode().strip()
    key = f', repo_key => <<"{repo_key}">>' if repo_key else ""
    global_config = project.global_config_dir / ".config" / "rebar3" / "rebar.config"
    global_config.write_text(
        "{hex, [{repos, [\n"
        f'  #{{name => <<"acme">>, repo_url => <<"{proxy.url}/internal/acme">>,\n'
        f'    repo_public_key => <<"{acme_pem.decode().strip()}\n">>{key}}},\n'
        f'  #{{name => <<"hexpm">>, repo_public_key => <<"{hexpm_pem}\n">>}}\n'
        "]}]}.\n"
    )
    return project


async def publish_acme_core(tmp: Path, proxy: ProxyProcess, api: str) -> HexCore:
    hexcore = HexCore(tmp / "hexcore")
    tar = tmp / "acme_core-1.0.0.tar"
    await hexcore.tarball("acme_core", "1.0.0", {"dogwood": "~> 1.2"}, tar)
    published = await hexcore.publish(api, WRITE_KEY, tar)
    assert published.status == 201, f"{published}\n{proxy.log_tail()}"
    return hexcore


async def test_hex_core_publishes_and_rebar3_resolves_across_repositories(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    proxy = await start_proxy(proxies, tree_upstream, tmp_path)
    api = f"{proxy.url}/api/repos/acme"
    hexcore = await publish_acme_core(tmp_path, proxy, api)

    me = await hexcore.me(api, WRITE_KEY)
    assert me.status == 200 and me.body["organizations"] == [], me
    refused = await hexcore.publish(api, "wrong-key", tmp_path / "acme_core-1.0.0.tar")
    assert refused.status == 401 and refused.body["message"] == "invalid API key", refused
    again = await hexcore.publish(api, WRITE_KEY, tmp_path / "acme_core-1.0.0.tar")
    assert again.status == 422 and "--replace" in again.body["errors"]["inserted_at"], again

    status, pem = await fetch(proxy, "/internal/acme/public_key")
    assert status == 200
    status, body = await fetch(proxy, "/internal/acme/packages/acme_core")
    package = verify_package(
        body, load_public_key(pem), repository="acme", name="acme_core", max_uncompressed=1 << 20
    )
    # hex_core wrote no repository for dogwood, and acme has no dogwood: hexpm.
    assert package.releases[0].dependencies[0].repository == "hexpm"

    cold = acme_project(tmp_path / "cold", proxy, pem)
    fetched = await cold.get_deps()
    assert fetched.ok, f"{fetched}\n{proxy.log_tail()}"
    compiled = await cold.compile()
    assert compiled.ok, f"{compiled}\n{proxy.log_tail()}"
    assert cold.lock() == {"acme_core": "1.0.0", "dogwood": "1.2.3", "hazel": "0.3.0"}

    await tree_upstream.stop()
    down = acme_project(tmp_path / "down", proxy, pem)
    fetched = await down.get_deps()
    assert fetched.ok, f"{fetched}\n{proxy.log_tail()}"
    compiled = await down.compile()
    assert compiled.ok, f"{compiled}\n{proxy.log_tail()}"
    assert down.lock() == cold.lock()

    retired = await hexcore.retire(api, WRITE_KEY, "acme_core", "1.0.0", "deprecated", "use 2.x")
    assert retired.status == 204, retired
    status, body = await fetch(proxy, "/internal/acme/packages/acme_core")
    package = verify_package(
        body, load_public_key(pem), repository="acme", name="acme_core", max_uncompressed=1 << 20
    )
    assert package.releases[0].retired is not None
    assert package.releases[0].retired.message == "use 2.x"
    deleted = await hexcore.delete(api, WRITE_KEY, "acme_core", "1.0.0")
    assert deleted.status == 204, deleted
    assert (await fetch(proxy, "/internal/acme/packages/acme_core"))[0] == 404
    assert await proxies.stop_all() == [0]


async def test_rebar3_reads_a_protected_repository_with_repo_key(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    proxy = await start_proxy(proxies, tree_upstream, tmp_path, read_protected=True)
    await publish_acme_core(tmp_path, proxy, f"{proxy.url}/api/repos/acme")
    assert (await fetch(proxy, "/internal/acme/public_key"))[0] == 401
    status, pem = await fetch(proxy, "/internal/acme/public_key", READ_KEY)
    assert status == 200

    denied = acme_project(tmp_path / "denied", proxy, pem)
    assert not (await denied.get_deps()).ok

    allowed = acme_project(tmp_path / "allowed", proxy, pem, repo_key=READ_KEY)
    fetched = await allowed.get_deps()
    assert fetched.ok, f"{fetched}\n{proxy.log_tail()}"
    assert (await allowed.compile()).ok
    assert allowed.lock()["acme_core"] == "1.0.0"
    assert READ_KEY not in proxy.log_path.read_text()
    assert await proxies.stop_all() == [0]
