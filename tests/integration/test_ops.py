"""Operator endpoints: health, ready, metrics, the status page, and JSON access logs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from hexproxy.web.ops import EVICTOR
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream

TARBALL = "/tarballs/alpha-1.0.0.tar"


async def scrape(
    proxy: TestClient[Any, Any],
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /_hexproxy/metrics, keyed by (sample name, sorted labels)."""
    response = await proxy.get("/_hexproxy/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


async def fetch(proxy: TestClient[Any, Any], path: str) -> int:
    """GET and read the whole body (a miss is stored once the body has been read)."""
    response = await proxy.get(path)
    await response.read()
    return response.status


def sample(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# ----- health and ready -----


async def test_health_is_ok_while_serving(proxy: TestClient[Any, Any]) -> None:
    response = await proxy.get("/_hexproxy/health")
    assert (response.status, await response.text()) == (200, "ok\n")


async def test_ready_reports_upstream_up_then_down_then_paused(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(upstream__failure_threshold=2, upstream__retry_after=60)
    response = await proxy.get("/_hexproxy/ready")
    text = await response.text()
    assert response.status == 200
    assert "cache: writable" in text
    assert "upstream repository: up\n" in text and "upstream builds: up\n" in text

    await upstream.stop()
    assert (await proxy.get("/packages/alpha")).status == 502
    text = await (await proxy.get("/_hexproxy/ready")).text()
    assert "upstream repository: down (1 failures): cannot connect to upstream" in text

    assert (await proxy.get("/packages/beta")).status == 502
    response = await proxy.get("/_hexproxy/ready")
    text = await response.text()
    # Upstream trouble does not make the proxy unready: the cache still serves.
    assert response.status == 200
    assert "upstream repository: paused for" in text
    assert "upstream builds: up\n" in text  # its own breaker: package misses do not touch it


async def test_ready_says_offline(make_proxy: ProxyFactory) -> None:
    proxy = await make_proxy(upstream__offline=True)
    text = await (await proxy.get("/_hexproxy/ready")).text()
    assert "upstream repository: offline" in text and "upstream builds: offline" in text


@contextlib.contextmanager
def read_only_mount(directory: Path) -> Iterator[None]:
    """Remount ``directory`` read-only in place (root ignores permissions, not mounts)."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("a read-only bind mount needs root and mount(8)")
    bind = subprocess.run(["mount", "--bind", directory, directory], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        ro = subprocess.run(
            ["mount", "-o", "remount,ro,bind", directory, directory], capture_output=True
        )
        if ro.returncode != 0:
            pytest.skip(f"cannot remount read-only: {ro.stderr.decode().strip()}")
        yield
    finally:
        subprocess.run(["umount", directory], check=True)


async def test_ready_fails_on_a_read_only_cache_dir(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy = await make_proxy()
    assert (await proxy.get("/_hexproxy/ready")).status == 200
    # Nothing may hold a file open inside the mount, or it cannot be undone: the evictor's
    # lock and the index's connection are long-lived.
    await proxy.server.app[EVICTOR].stop()
    proxy.server.app[CACHE].storage.index.close()
    with read_only_mount(tmp_path / "cache"):
        response = await proxy.get("/_hexproxy/ready")
        assert response.status == 503
        assert "cache: NOT writable" in await response.text()
    assert (await proxy.get("/_hexproxy/ready")).status == 200


async def test_ready_fails_when_the_temp_dir_is_not_a_directory(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    # The unprivileged way to break writes: nothing can be created under tmp/.
    proxy = await make_proxy()
    tmp = tmp_path / "cache" / "tmp"
    shutil.rmtree(tmp)
    tmp.write_text("not a directory")
    response = await proxy.get("/_hexproxy/ready")
    assert response.status == 503


# ----- metrics -----


async def test_metrics_count_exactly_the_traffic_sent(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    tarball = upstream.repo.files[TARBALL.lstrip("/")]
    for _ in range(3):
        assert (await fetch(proxy, TARBALL)) == 200  # 1 miss, 2 hits
    for _ in range(2):
        assert (await fetch(proxy, "/packages/beta")) == 200  # 1 miss, 1 hit
    assert (await proxy.head(TARBALL)).status == 200
    missing = await proxy.get("/packages/nosuch")
    assert missing.status == 404
    assert (await proxy.get("/no/such/route")).status == 404
    upstream.repo.fail("flip", "/tarballs/beta-2.0.0.tar")
    with contextlib.suppress(Exception):
        await (await proxy.get("/tarballs/beta-2.0.0.tar")).read()

    m = await scrape(proxy)
    requests = "hexproxy_requests_total"
    route = "/tarballs/{filename}"
    assert sample(m, requests, route=route, status="200", cache="MISS") == 2  # alpha, bad beta
    assert sample(m, requests, route=route, status="200", cache="HIT") == 3  # 2 GET + 1 HEAD
    assert sample(m, requests, route="/packages/{name}", status="200", cache="MISS") == 1
    assert sample(m, requests, route="/packages/{name}", status="200", cache="HIT") == 1
    assert sample(m, requests, route="/packages/{name}", status="404", cache="-") == 1
    assert sample(m, requests, route="unmatched", status="404", cache="-") == 1
    # 2 GETs of alpha and the bad beta, cut one byte short (HEAD sends no body).
    assert sample(m, "hexproxy_response_bytes_total", route=route) >= 2 * len(tarball)
    package_bytes = 2 * len(upstream.repo.files["packages/beta"]) + len(await missing.read())
    assert sample(m, "hexproxy_response_bytes_total", route="/packages/{name}") == package_bytes

    upstream_requests = "hexproxy_upstream_requests_total"
    assert sample(m, upstream_requests, kind="tarball", status="200") == 2
    assert sample(m, upstream_requests, kind="package", status="200") == 2  # alpha, beta
    assert sample(m, upstream_requests, kind="package", status="404") == 1
    assert sample(m, "hexproxy_upstream_response_seconds_count", kind="tarball") == 2
    assert sample(m, "hexproxy_verification_failures_total") == 1
    # The bad tarball was upstream's last answer: one failure, not yet a pause.
    assert sample(m, "hexproxy_upstream_state", state="down") == 1
    assert sample(m, "hexproxy_upstream_state", state="paused") == 0
    assert sample(m, "hexproxy_cache_max_size_bytes") == 0
    assert ("hexproxy_cache_size_bytes", ()) in m


async def test_counters_copied_from_the_cache_are_added_once(
    proxy: TestClient[Any, Any],
) -> None:
    # The cache's own counters reach the shared slots as differences (web/metrics.py):
    # scraping again, or rendering the status page between, must not add them twice.
    counters = proxy.server.app[CACHE].counters
    counters.failure("first")
    first = await scrape(proxy)
    assert (await proxy.get("/_hexproxy/")).status == 200
    second = await scrape(proxy)
    counters.failure("second")
    third = await scrape(proxy)
    failures = "hexproxy_verification_failures_total"
    assert [sample(m, failures) for m in (first, second, third)] == [1, 1, 2]
    assert sample(third, "hexproxy_worker_requests_total", worker="0") == 3  # 2 scrapes, page
    assert sample(third, "process_cpu_seconds_total") > 0


async def test_metrics_show_upstream_failures_and_the_open_circuit(
    make_proxy: ProxyFactory, upstream: Upstream
) -> None:
    proxy = await make_proxy(upstream__failure_threshold=1, upstream__retry_after=60)
    upstream.repo.fail("503", "/packages/alpha")
    assert (await proxy.get("/packages/alpha")).status == 502
    m = await scrape(proxy)
    assert sample(m, "hexproxy_upstream_requests_total", kind="package", status="503") == 1
    assert sample(m, "hexproxy_upstream_failures_total", error="UpstreamStatus") == 1
    assert sample(m, "hexproxy_upstream_state", state="paused") == 1
    assert sample(m, "hexproxy_upstream_state", state="up") == 0


async def test_cache_size_metric_follows_the_eviction_round(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    assert (await fetch(proxy, TARBALL)) == 200
    await proxy.server.app[EVICTOR].run_once()
    m = await scrape(proxy)
    root = proxy.server.app[CACHE].storage.root
    on_disk = sum(
        p.stat().st_size
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix not in (".meta", ".lock", ".part")
        and not p.name.startswith("index.sqlite3")  # the entry index is not an object
    )
    assert sample(m, "hexproxy_cache_size_bytes") == on_disk
    assert sample(m, "hexproxy_cache_entries") == 2  # /packages/alpha and the tarball


# ----- status page -----


async def test_status_page_shows_state_and_escapes(
    proxy: TestClient[Any, Any], upstream: Upstream
) -> None:
    assert (await fetch(proxy, TARBALL)) == 200
    assert (await fetch(proxy, TARBALL)) == 200
    proxy.server.app[CACHE].counters.failure("<script>alert(1)</script> & more")
    await proxy.server.app[EVICTOR].run_once()
    response = await proxy.get("/_hexproxy/")
    html = await response.text()
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert 'class="up">up</b>' in html
    assert "Hit ratio" in html and "50.0%" in html  # tarball: 1 miss, 1 hit
    assert "<td>alpha</td><td>2</td>" in html
    assert "no limit" in html


# ----- JSON access log, through the real command -----


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_log_format_json_gives_one_object_per_request(
    upstream: Upstream, public_key_file: Path, tmp_path: Path
) -> None:
    port = free_port()
    argv = [
        sys.executable, "-m", "hexproxy", "serve", "--log-format", "json",
        "--listen", f"127.0.0.1:{port}", "--cache-dir", str(tmp_path / "cache"),
        "--upstream", upstream.url, "--public-key", str(public_key_file),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, stderr=asyncio.subprocess.PIPE, env={**os.environ, "HEXPROXY_CONFIG": ""}
    )
    try:
        async with ClientSession() as session:
            base = f"http://127.0.0.1:{port}"
            for _ in range(400):  # up to 20 s on a loaded machine
                assert proc.returncode is None, "hexproxy serve exited early"
                with contextlib.suppress(OSError):
                    async with session.get(f"{base}/_hexproxy/health") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
            async with session.get(f"{base}/packages/alpha", headers={"User-Agent": "t/1"}) as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    lines = [json.loads(line) for line in err.decode().splitlines()]  # every line is JSON
    access = [e for e in lines if e.get("path") == "/packages/alpha"]
    assert len(access) == 1
    assert access[0]["status"] == 200
    assert access[0]["cache"] == "MISS"
    assert access[0]["user_agent"] == "t/1"
    assert access[0]["method"] == "GET"
    assert access[0]["bytes"] == len(upstream.repo.files["packages/alpha"])
