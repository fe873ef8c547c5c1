"""``hexproxy serve --workers N`` keeps its workers running: a worker killed under load is
replaced, and its clients lose only the connections it held; workers that cannot start
make the parent give up with status 1 instead of looping."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Upstream
from tests.support.fixtures import REPO_ROOT
from tests.support.proxy_process import ProxyProcesses
from tests.support.waiting import wait_until

CLIENTS = 16
WAIT = 30.0  # seconds: a generous bound on every wait below


def workers_of(parent: int) -> set[int]:
    """The live child processes of ``parent``."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[1]) == parent and fields[0] != "Z":
                children.add(int(entry.name))
    return children


def running(pids: set[int]) -> set[int]:
    return {pid for pid in pids if Path(f"/proc/{pid}").exists()}


def connections_held(pid: int, port: int) -> int:
    """Established TCP connections to ``port`` whose socket ``pid`` has open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                local_port = int(parts[1].rsplit(":", 1)[1], 16)
                if local_port == port and parts[3] == "01" and parts[9] in inodes:
                    held += 1
    return held


@dataclass
class Load:
    """CLIENTS clients, each on its own keep-alive connection, asking again and again;
    a client whose connection breaks counts a failure and connects again."""

    port: int
    expected: bytes
    ok: list[int]
    failures: list[int]
    stop: asyncio.Event

    async def client(self, index: int) -> None:
        request = b"GET /packages/alpha HTTP/1.1\r\nHost: x\r\n\r\n"
        while not self.stop.is_set():
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            try:
                while not self.stop.is_set():
                    writer.write(request)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    body = await asyncio.wait_for(reader.readexactly(length), WAIT)
                    assert head.startswith(b"HTTP/1.1 200 ") and body == self.expected
                    self.ok[index] += 1
            except (ConnectionError, asyncio.IncompleteReadError):
                self.failures[index] += 1
            finally:
                writer.transport.abort()


async def test_a_killed_worker_is_replaced_and_costs_only_its_connections(
    upstream: Upstream, proxies: ProxyProcesses, tmp_path: Path
) -> None:
    proxy = await proxies.start(
        upstream.url, tmp_path / "cache", SERVER_WORKERS=2, SERVER_ACCESS_LOG="false"
    )
    await wait_until(lambda: len(workers_of(proxy.pid)) == 2, "two workers")
    expected = upstream.repo.files["packages/alpha"]
    load = Load(proxy.port, expected, [0] * CLIENTS, [0] * CLIENTS, asyncio.Event())
    clients = [asyncio.create_task(load.client(i)) for i in range(CLIENTS)]
    try:
        await wait_until(lambda: all(load.ok), "every client served")
        workers = workers_of(proxy.pid)
        held = {pid: connections_held(pid, proxy.port) for pid in workers}
        victim = max(held, key=lambda pid: held[pid])
        assert sum(held.values()) == CLIENTS and held[victim] > 0, held

        os.kill(victim, signal.SIGKILL)
        served_at_kill = list(load.ok)
        await wait_until(
            lambda: len(workers_of(proxy.pid) - {victim}) == 2, "a new worker in its place"
        )
        # The server keeps answering: every client, on its old or a new connection.
        await wait_until(
            lambda: all(now > then + 3 for now, then in zip(load.ok, served_at_kill, strict=True)),
            "every client served again",
        )
    finally:
        load.stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
    for task in clients:
        assert task.exception() is None, task.exception()
    assert sum(load.failures) <= held[victim], (load.failures, held)
    log = proxy.log_path.read_text()
    assert f"worker {victim} was killed by SIGKILL; starting another" in log, log[-3000:]
    survivors = workers_of(proxy.pid)
    assert await proxy.stop() == 0
    assert not running(survivors), "a worker outlived its parent's stop"


async def test_workers_that_cannot_start_make_the_parent_give_up(
    upstream: Upstream, tmp_path: Path, public_key_file: Path
) -> None:
    # The port is taken, without SO_REUSEPORT: no worker can ever listen.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "proxy.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "hexproxy", "serve", "--workers", "2"),
                *("--listen", f"127.0.0.1:{port}", "--upstream", upstream.url),
                *("--cache-dir", str(tmp_path / "cache"), "--public-key", str(public_key_file)),
                cwd=REPO_ROOT,
                stdout=out,
                stderr=out,
                env={k: v for k, v in os.environ.items() if not k.startswith("HEXPROXY_")},
            )
        try:
            code = await asyncio.wait_for(proc.wait(), WAIT)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    text = log.read_text()
    assert code == 1, text[-3000:]
    assert "before it could serve (5 in a row)" in text
    assert "giving up: the last 5 workers died before they could serve" in text
