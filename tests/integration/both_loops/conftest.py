"""Every async test in this folder runs twice: on asyncio's event loop and on uvloop's,
the one `hexproxy serve` runs on by default (server.event_loop). The fast path sends
files with its own writer callback on both (web/fastpath.py, _send_file), and the two
loops differ where it matters: uvloop holds small writes until the end of a loop
iteration and has no loop.sendfile. A test picks one loop with
``@pytest.mark.asyncio(loop_factories=["asyncio"])``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
