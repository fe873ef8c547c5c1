"""Running the proxy: one process, or a parent with N workers sharing the port.

Workers each bind the listening address with SO_REUSEPORT, so the kernel spreads
connections between them; they share the cache directory, and downloads take a
lock file so one object is fetched once across all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time

from aiohttp import web

from .config import Config
from .storage import FileStorage
from .web import create_app
from .web.middleware import AccessLogger, JsonAccessLogger

log = logging.getLogger("hexproxy")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import json

        message = record.getMessage()
        if record.name == "hexproxy.access":
            return message  # already one JSON object
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
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


async def run(config: Config, *, sweep_temp: bool = True, ready_fd: int | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    app = create_app(config, sweep_temp=sweep_temp)
    access_class = JsonAccessLogger if config.server.log_format == "json" else AccessLogger
    runner = web.AppRunner(
        app,
        access_log=logging.getLogger("hexproxy.access") if config.server.access_log else None,
        access_log_class=access_class,
        handle_signals=False,
    )
    await runner.setup()
    site = web.TCPSite(
        runner,
        config.server.host,
        config.server.port,
        reuse_port=config.server.workers > 1,
        backlog=1024,
    )
    await site.start()
    log.info(
        "hexproxy (pid %d) serving http://%s (cache %s, upstream %s%s)",
        os.getpid(),
        config.server.listen,
        config.cache.dir,
        config.upstream.url,
        ", OFFLINE" if config.upstream.offline else "",
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(config: Config) -> int:
    setup_logging(config)
    if config.server.workers == 1:
        asyncio.run(run(config))
        return 0
    return _serve_workers(config)


def _serve_workers(config: Config) -> int:
    FileStorage(config.cache_dir).prepare()  # once, before any worker writes
    children: list[int] = []
    for _ in range(config.server.workers):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                asyncio.run(run(config, sweep_temp=False))
            except BaseException:
                log.exception("worker crashed")
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    return 0 if status in (0, -signal.SIGTERM, -signal.SIGINT) else 1
