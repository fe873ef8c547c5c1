"""Run the real ``python -m hexproxy serve`` as a subprocess on a free 127.0.0.1 port.

The client end-to-end tests drive the proxy exactly the way an operator starts it:
the CLI, its flags and ``HEXPROXY_*`` environment, the health endpoint, SIGTERM to stop.
`ProxyProcesses` starts any number of them for one test and stops every one at
teardown, whatever the test did. Output goes to a log file per process, so a chatty
proxy can never block on a full pipe, and `log_tail()` puts it into assertion messages.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

import aiohttp

from tests.support.fixtures import REPO_ROOT

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["ProxyProcess", "ProxyProcesses", "free_port"]

STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A port nothing listens on right now (the proxy binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env() -> dict[str, str]:
    # Drop proxy variables (the upstream is on loopback) and any HEXPROXY_* setting of
    # the developer's shell, so only what a test passes configures the proxy.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.lower().endswith("_proxy") and not name.startswith("HEXPROXY_")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


class ProxyProcess:
    """One ``hexproxy serve`` process; ``url`` is its base URL once `start()` returned."""

    def __init__(
        self,
        *,
        upstream_url: str,
        cache_dir: Path,
        public_key: Path,
        log_path: Path,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.upstream_url = upstream_url
        self.cache_dir = cache_dir
        self.public_key = public_key
        self.log_path = log_path
        # HEXPROXY_<SECTION>_<KEY> values, e.g. {"CACHE_REGISTRY_TTL": "0"}.
        self.settings = dict(settings or {})
        self.port = 0
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no proxy log)"
        return "--- proxy log (tail)\n" + "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        # free_port() can race with another process grabbing the port; retry on a new one.
        for _ in range(3):
            self.port = free_port()
            await self._spawn()
            if await self._wait_healthy():
                return
            await self.stop()
        raise RuntimeError(f"hexproxy did not become healthy\n{self.log_tail()}")

    async def _spawn(self) -> None:
        env = base_env()
        env.update({f"HEXPROXY_{key}": value for key, value in self.settings.items()})
        args = [
            *("-m", "hexproxy", "serve"),
            *("--listen", f"127.0.0.1:{self.port}"),
            *("--upstream", self.upstream_url),
            *("--cache-dir", str(self.cache_dir)),
            *("--public-key", str(self.public_key)),
        ]
        with self.log_path.open("ab") as log:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                cwd=REPO_ROOT,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        self.returncode = None

    async def _wait_healthy(self) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            while time.monotonic() < deadline:
                if self._proc.returncode is not None:
                    return False
                try:
                    async with session.get(f"{self.url}/_hexproxy/health") as response:
                        if response.status == 200:
                            return True
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.05)
        return False

    async def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; returns the exit status (None if never run)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return self.returncode
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        self.returncode = proc.returncode
        return self.returncode


class ProxyProcesses:
    """Starts proxies for one test and stops all of them in `stop_all()` (the teardown)."""

    def __init__(self, workdir: Path, public_key: Path) -> None:
        self.workdir = workdir
        self.public_key = public_key
        self.started: list[ProxyProcess] = []

    async def start(
        self, upstream_url: str, cache_dir: Path, **settings: str | float
    ) -> ProxyProcess:
        """``await start(url, cache, CACHE_REGISTRY_TTL=0)``: a healthy proxy."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        proxy = ProxyProcess(
            upstream_url=upstream_url,
            cache_dir=cache_dir,
            public_key=self.public_key,
            log_path=self.workdir / f"proxy-{len(self.started)}.log",
            settings={key: str(value) for key, value in settings.items()},
        )
        self.started.append(proxy)
        await proxy.start()
        return proxy

    async def stop_all(self) -> list[int | None]:
        """Stop every proxy (SIGTERM); their exit statuses, 0 for a clean shutdown."""
        return [await proxy.stop() for proxy in self.started]
