"""Real mix publishing to a hosted repository and a second project fetching from it.

``mix hex.publish package --yes`` with ``HEX_API_URL``/``HEX_API_KEY`` (the ``package``
step: the docs step needs ex_doc), then ``mix hex.repo add acme URL
--fetch-public-key FP`` and ``{:acme_lib, "~> 0.1", repo: "acme"}`` in another project.
Skipped, with the reason, unless mix and the Hex archive are installed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import aiohttp
import pytest

from hexproxy.hosted.keys import digest_of
from hexproxy.registry import fingerprint, load_public_key
from tests.conftest import Upstream
from tests.support.command import CommandResult, run_command
from tests.support.mix import require_mix
from tests.support.proxy_process import ProxyProcess, ProxyProcesses

pytestmark = pytest.mark.clients

WRITE_KEY = "mix-publisher-" + "5" * 40


@pytest.fixture(autouse=True)
def _mix() -> None:
    require_mix()


def env(root: Path, proxy: ProxyProcess, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(root / "home"),
        "LANG": "C.UTF-8",
        "MIX_HOME": os.environ.get("MIX_HOME") or str(Path.home() / ".mix"),
        "HEX_HOME": str(root / "hex_home"),
        "HEX_MIRROR": proxy.url,
        **({"MIX_REBAR3": shutil.which("rebar3") or ""} if shutil.which("rebar3") else {}),
        **extra,
    }


async def mix(root: Path, proxy: ProxyProcess, *args: str, **extra: str) -> CommandResult:
    project = root / "project"
    return await run_command("mix", args, cwd=project, env=env(root, proxy, **extra), limit=300)


def write_publisher(root: Path) -> None:
    (root / "project" / "lib").mkdir(parents=True)
    (root / "home").mkdir()
    (root / "project" / "mix.exs").write_text(
        "defmodule AcmeLib.MixProject do\n  use Mix.Project\n\n"
        '  def project, do: [app: :acme_lib, version: "0.1.0", deps: [],\n'
        '    description: "Acme internal library",\n'
        '    package: [licenses: ["Apache-2.0"], links: %{}, files: ["lib", "mix.exs"]]]\n'
        "end\n"
    )
    (root / "project" / "lib" / "acme_lib.ex").write_text(
        "defmodule AcmeLib do\n  def hello, do: :acme\nend\n"
    )


def write_consumer(root: Path) -> None:
    (root / "project" / "lib").mkdir(parents=True)
    (root / "home").mkdir()
    (root / "project" / "mix.exs").write_text(
        "defmodule Consumer.MixProject do\n  use Mix.Project\n\n"
        '  def project, do: [app: :consumer, version: "0.1.0",\n'
        '    deps: [{:acme_lib, "~> 0.1", repo: "acme"}]]\n'
        "end\n"
    )
    (root / "project" / "lib" / "consumer.ex").write_text(
        "defmodule Consumer do\n  def hello, do: AcmeLib.hello()\nend\n"
    )


async def test_mix_publishes_and_another_project_fetches_with_repo_acme(
    tmp_path: Path, tree_upstream: Upstream, proxies: ProxyProcesses
) -> None:
    config = tmp_path / "hexproxy.toml"
    config.write_text(
        f'[hosted]\ndir = "{tmp_path / "hosted"}"\n\n'
        f'[[hosted.repos]]\nname = "acme"\nwrite_keys = ["{digest_of(WRITE_KEY)}"]\n'
    )
    proxy = await proxies.start(tree_upstream.url, tmp_path / "cache", CONFIG=str(config))
    publisher = tmp_path / "publisher"
    write_publisher(publisher)
    published = await mix(
        publisher,
        proxy,
        "hex.publish",
        "package",
        "--yes",
        HEX_API_URL=f"{proxy.url}/api/repos/acme",
        HEX_API_KEY=WRITE_KEY,
    )
    assert published.ok, f"{published}\n{proxy.log_tail()}"

    async with (
        aiohttp.ClientSession(trust_env=False) as session,
        session.get(f"{proxy.url}/internal/acme/public_key") as response,
    ):
        pem = await response.read()
    key_fingerprint = fingerprint(load_public_key(pem))

    consumer = tmp_path / "consumer"
    write_consumer(consumer)
    url = f"{proxy.url}/internal/acme"
    added = await mix(
        consumer, proxy, "hex.repo", "add", "acme", url, "--fetch-public-key", key_fingerprint
    )
    assert added.ok, added
    fetched = await mix(consumer, proxy, "deps.get")
    assert fetched.ok, f"{fetched}\n{proxy.log_tail()}"
    compiled = await mix(consumer, proxy, "compile")
    assert compiled.ok, compiled
    assert '"acme_lib"' in (consumer / "project" / "mix.lock").read_text()
    assert await proxies.stop_all() == [0]
