"""What the proxy end-to-end client tests (rebar3, mix) share: the tree upstream and
the proxy processes, started per test and always stopped."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Upstream
from tests.fakes.hex_repo import FakeHexRepo
from tests.support.keys import test_private_key
from tests.support.proxy_process import ProxyProcesses
from tests.support.repo import build_repo, erlang_tree

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from pytest_aiohttp import AiohttpServer


@functools.cache
def tree_files() -> dict[str, bytes]:
    return build_repo(erlang_tree(), test_private_key())


@pytest.fixture
async def tree_upstream(aiohttp_server: AiohttpServer) -> Upstream:
    repo = FakeHexRepo(dict(tree_files()))
    server = await aiohttp_server(repo.app(), host="127.0.0.1")
    return Upstream(repo, server)


@pytest.fixture
async def proxies(tmp_path: Path, public_key_file: Path) -> AsyncIterator[ProxyProcesses]:
    started = ProxyProcesses(tmp_path / "proxies", public_key_file)
    try:
        yield started
    finally:
        await started.stop_all()
