"""The status page in a real headless browser (Debian's chromium).

Skipped when chromium is not installed, except in CI (CI=true), where
``.ci/install-chromium.sh`` installs it and a missing browser is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy.web.ops import EVICTOR
from tests.conftest import ProxyFactory, Upstream

BROWSER_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing in CI: run .ci/install-chromium.sh")
        pytest.skip(
            "chromium is not installed (apt-get install chromium, or .ci/install-chromium.sh)"
        )
    return path


async def browse(binary: str, profile: Path, *args: str) -> bytes:
    """Run chromium once against the page; its stdout (the DOM for --dump-dom)."""
    proc = await asyncio.create_subprocess_exec(
        binary,
        *BROWSER_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def traffic(proxy: TestClient[Any, Any], upstream: Upstream) -> None:
    """Known traffic: hits and misses on two packages and one failed verification."""
    for path in ["/tarballs/alpha-1.0.0.tar"] * 3 + ["/packages/beta"] * 2:
        await (await proxy.get(path)).read()
    upstream.repo.fail("flip", "/tarballs/gamma-0.1.0.tar")
    with contextlib.suppress(Exception):
        await (await proxy.get("/tarballs/gamma-0.1.0.tar")).read()
    await proxy.server.app[EVICTOR].run_once()


async def test_status_page_renders_in_chromium(
    make_proxy: ProxyFactory, upstream: Upstream, tmp_path: Path
) -> None:
    binary = chromium()
    proxy = await make_proxy(cache__max_size="10MiB")
    await traffic(proxy, upstream)
    url = str(proxy.make_url("/_hexproxy/"))

    shot = tmp_path / "status.png"
    await browse(binary, tmp_path / "profile-shot", f"--screenshot={shot}", url)
    data = shot.read_bytes()
    assert png_size(data) == (1200, 900)
    assert len(data) > 10_000  # a rendered page, not a blank canvas

    dom = (await browse(binary, tmp_path / "profile-dom", "--dump-dom", url)).decode()
    assert "<h1>hexproxy</h1>" in dom
    # The tampered tarball was upstream's last answer: a failure, not yet a pause.
    assert 'class="down">down</b>' in dom
    assert "Hit ratio" in dom and "50.0%" in dom  # tarball alpha: 1 miss, 2 hits; beta 1/1
    assert "of 10.0 MiB" in dom
    assert "<td>alpha</td><td>3</td>" in dom and "<td>beta</td><td>2</td>" in dom
    assert "Recent verification failures (1 in total)" in dom
    assert "gamma-0.1.0.tar" in dom and "does not match the signed outer checksum" in dom
    if os.environ.get("HEXPROXY_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["HEXPROXY_KEEP_SCREENSHOT"])
