"""Shared fixtures: a signed fake upstream on loopback and a proxy in front of it; and the
``real_data`` rule (see tests/support/fixtures.py)."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from hexproxy.config import Config, StoreConfig, load_config
from hexproxy.registry import public_key_pem
from hexproxy.web import create_app
from tests.fakes.hex_repo import FakeHexRepo
from tests.support.fixtures import is_under_fixtures, require_real_data
from tests.support.keys import test_private_key
from tests.support.proxy_process import ProxyProcesses
from tests.support.repo import DepSpec, PackageSpec, build_repo
from tests.support.s3server import BUCKET, REGION, SeaweedServer, aws_env, require_weed

# --- real_data ---------------------------------------------------------------------------
# A test that reads ../shared/fixtures without the marker would fail in every clone that
# has no shared/ beside it, while passing here. So an audit hook refuses such a read the
# moment it happens, in whichever thread, whenever the running test is not marked.

_PATH_EVENTS = frozenset(
    {"open", "os.listdir", "os.scandir", "glob.glob", "pathlib.Path.glob", "pathlib.Path.rglob"}
)
_real_data_allowed = False


def _refuse_unmarked_reads(event: str, args: tuple[Any, ...]) -> None:
    if event not in _PATH_EVENTS or _real_data_allowed or not args:
        return
    target = args[0]
    if isinstance(target, str | bytes | os.PathLike) and is_under_fixtures(os.fsdecode(target)):
        raise RuntimeError(f"{os.fsdecode(target)} is real data: mark the test real_data")


sys.addaudithook(_refuse_unmarked_reads)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    global _real_data_allowed
    _real_data_allowed = item.get_closest_marker("real_data") is not None
    try:
        return (yield)
    finally:
        _real_data_allowed = False


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real_data") is not None:
        require_real_data()


def small_tree() -> list[PackageSpec]:
    """Three packages, enough for the core behaviours."""
    return [
        PackageSpec("alpha", "1.0.0", [DepSpec("beta", "~> 2.0")]),
        PackageSpec("alpha", "1.1.0", [DepSpec("beta", "~> 2.1")]),
        PackageSpec("beta", "2.0.0"),
        PackageSpec("beta", "2.1.0"),
        PackageSpec("gamma", "0.1.0", files={"README.md": b"gamma\n" * 2000}),
    ]


@pytest.fixture(scope="session")
def public_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "test_public_key.pem"
    path.write_bytes(public_key_pem(test_private_key().public_key()))
    return path


@dataclass
class Upstream:
    repo: FakeHexRepo
    server: TestServer

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    async def stop(self) -> None:
        """Connections to the port are refused from now on."""
        await self.server.close()


@pytest.fixture
async def upstream(aiohttp_server: Any) -> Upstream:
    repo = FakeHexRepo(build_repo(small_tree(), test_private_key()))
    server = await aiohttp_server(repo.app())
    return Upstream(repo, server)


@pytest.fixture
async def proxies(tmp_path: Path, public_key_file: Path) -> AsyncIterator[ProxyProcesses]:
    """``await proxies.start(...)``: ``hexproxy serve`` processes, every one stopped at
    teardown."""
    started = ProxyProcesses(tmp_path / "proxies", public_key_file)
    try:
        yield started
    finally:
        await started.stop_all()


ProxyFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def proxy_config(
    tmp_path: Path, public_key_file: Path, upstream: Upstream
) -> Callable[..., Config]:
    def build(**overrides: Any) -> Config:
        values: dict[tuple[str, str], Any] = {
            ("cache", "dir"): str(tmp_path / "cache"),
            ("upstream", "url"): upstream.url,
            ("upstream", "builds_url"): upstream.url,
            ("upstream", "public_key"): str(public_key_file),
            ("upstream", "connect_timeout"): 1.0,
            ("upstream", "read_timeout"): 2.0,
            ("upstream", "stale_timeout"): 0.5,
        }
        for name, value in overrides.items():
            section, _, key = name.partition("__")
            values[(section, key)] = value
        return load_config(None, {}, values)

    return build


@pytest.fixture
def make_proxy(aiohttp_client: Any, proxy_config: Callable[..., Config]) -> ProxyFactory:
    """``await make_proxy(cache__registry_ttl=0)``: a running proxy and a client for it."""

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(proxy_config(**overrides)))  # type: ignore[no-any-return]

    return start


@pytest.fixture
async def proxy(make_proxy: ProxyFactory) -> TestClient[Any, Any]:
    return await make_proxy()


# ----- a real S3-compatible server (SeaweedFS), shared by the session -----


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    """One ``weed server -s3`` for the whole run; each test gets its own key prefix."""
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed"), require_weed())
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The test credentials in the AWS chain's environment variables (and no other source)."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    env = aws_env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_store_config(s3_server: SeaweedServer, s3_env: dict[str, str]) -> StoreConfig:
    """``[store]`` settings for the shared server, under a prefix no other test uses."""
    return StoreConfig(
        kind="s3",
        bucket=BUCKET,
        prefix=f"test-{uuid.uuid4().hex[:12]}/",
        endpoint_url=s3_server.endpoint,
        region=REGION,
        timeout=5.0,
    )
