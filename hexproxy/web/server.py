"""Running the proxy: one process, or a parent with N workers sharing the port.

Workers each bind the listening address with SO_REUSEPORT, so the kernel spreads
connections between them; they share the cache directory, and downloads take a
lock file so one object is fetched once across all of them. The parent only keeps
them running (supervisor.py) and maps, before it forks them, the memory in which they
count together (tally.py): one slot each, adopted by the worker that replaces it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import uvloop
from aiohttp import web

from ..config import Config
from ..store.storage import FileStorage
from . import create_app
from .accesslog import AccessLog, logger_class
from .fastpath import FastPath, FastPathProtocol
from .logrepeats import Repeats
from .ops import EVICTOR, METRICS
from .requesthead import AIOHTTP_LIMITS
from .state import CACHE
from .supervisor import Supervisor
from .tally import Board

log = logging.getLogger("hexproxy")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        return json.dumps(
            {
                "time": self.formatTime(record),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
            }
        )


class TextFormatter(logging.Formatter):
    """The default text format, with the timestamp's strftime done once per second
    instead of once per line (an access line is written for every request)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(second))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"


def setup_logging(config: Config) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.server.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    # Identical lines repeated under a sustained fault become one line per interval
    # with a count (logrepeats.py); access lines are written apart (web/accesslog.py).
    root.handlers[:] = [Repeats(handler)]
    root.setLevel(logging.INFO)


@dataclass
class Running:
    """A started proxy: aiohttp's runner, behind the fast-path listener unless it is off."""

    runner: web.AppRunner
    listener: asyncio.Server
    connections: set[FastPathProtocol]
    access_log: AccessLog | None = None
    fast: FastPath | None = None

    @property
    def port(self) -> int:
        return int(self.listener.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        self.listener.close()
        for connection in list(self.connections):
            if connection.inner is None and connection.transport is not None:
                connection.transport.close()  # fast-path-only connections; aiohttp closes its own
        if self.fast is not None:
            await self.fast.close()
        await self.runner.cleanup()
        if self.access_log is not None:
            self.access_log.flush()


async def start(
    config: Config, *, sweep_temp: bool = True, board: Board | None = None, slot: int = 0
) -> Running:
    """Build the app and listen: connections reach the fast path first (web/fastpath.py),
    which hands anything but a fresh registry hit or a known tarball to aiohttp. A worker
    counts into ``slot`` of the server's ``board``."""
    app = create_app(config, sweep_temp=sweep_temp, board=board, slot=slot)
    json_log = config.server.log_format == "json"
    access_log = AccessLog(json_format=json_log) if config.server.access_log else None
    # aiohttp's parser limits, set to the numbers the fast path checks against.
    kwargs: dict[str, Any] = {"access_log": None, **AIOHTTP_LIMITS}
    if access_log is not None:
        kwargs["access_log"] = logging.getLogger("hexproxy.access")  # unused by our class
        kwargs["access_log_class"] = logger_class(access_log)
    runner = web.AppRunner(app, handle_signals=False, **kwargs)
    await runner.setup()
    assert runner.server is not None
    connections: set[FastPathProtocol] = set()
    factory: Callable[[], asyncio.Protocol] = runner.server
    fast = None
    if config.server.fast_path:
        fast = FastPath(
            app[CACHE],
            config.cache.registry_ttl,
            access_log,
            app[METRICS].traffic,
            accessed=app[EVICTOR].access.accessed,
        )
        make_inner = runner.server

        def factory() -> FastPathProtocol:
            return FastPathProtocol(fast, make_inner, connections)

    listener = await asyncio.get_running_loop().create_server(
        factory,
        config.server.host,
        config.server.port,
        reuse_port=config.server.workers > 1,
        backlog=1024,
    )
    return Running(runner, listener, connections, access_log, fast)


async def run(
    config: Config,
    *,
    sweep_temp: bool = True,
    ready_fd: int | None = None,
    board: Board | None = None,
    slot: int = 0,
) -> None:
    """Serve until SIGTERM or SIGINT. A worker tells its parent it listens on ``ready_fd``."""
    running = await start(config, sweep_temp=sweep_temp, board=board, slot=slot)
    loop = asyncio.get_running_loop()
    log.info(
        "hexproxy (pid %d) serving http://%s (cache %s, upstream %s%s, event loop %s)",
        os.getpid(),
        config.server.listen,
        config.cache.dir,
        config.upstream.url,
        ", OFFLINE" if config.upstream.offline else "",
        type(loop).__module__.partition(".")[0],  # the loop it runs on, not the one asked for
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_fd is not None:
        os.write(ready_fd, b"R")
        os.close(ready_fd)
    try:
        await stop.wait()
    finally:
        await running.stop()


def run_loop(config: Config, main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on the configured event loop. uvloop by default: a warm hit costs
    about 11% less CPU on it (62 -> 55 µs per small registry hit, bench/README.md), the
    loop's own work per request being most of what a hit costs. asyncio.Runner rather
    than uvloop.run, which releases before 0.18 lack."""
    factory = uvloop.new_event_loop if config.server.event_loop == "uvloop" else None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


def serve(config: Config) -> int:
    setup_logging(config)
    if config.server.workers == 1:
        run_loop(config, run(config))
        return 0
    FileStorage(config.cache_dir).prepare()  # once, before any worker writes
    board = Board(config.server.workers)  # inherited by every worker forked below

    def work(ready_fd: int, slot: int) -> None:
        main = run(config, sweep_temp=False, ready_fd=ready_fd, board=board, slot=slot)
        run_loop(config, main)

    return Supervisor(config.server.workers, work, ended=board.vacate).run()
