"""What the proxy end-to-end client tests (rebar3, mix) share: the tree upstream and
the proxy processes, started per test and always stopped."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Upstream
from tests.fakes.hex_repo import FakeHexRepo
from tests.support.keys import test_private_key
from tests.support.repo import build_repo, erlang_tree

if TYPE_CHECKING:
    from pytest_aiohttp import AiohttpServer


@functools.cache
def tree_files() -> dict[str, bytes]:
    return build_repo(erlang_tree(), test_private_key())


@pytest.fixture
async def tree_upstream(aiohttp_server: AiohttpServer) -> Upstream:
    repo = FakeHexRepo(dict(tree_files()))
    server = await aiohttp_server(repo.app(), host="127.0.0.1")
    return Upstream(repo, server)
