"""The floor under hexproxy: a bare aiohttp server answering one fixed body.

    python bench/bare_aiohttp.py --port P --body-file F [--workers N] [--uvloop] [--access-log]

No routing beyond one route, no cache, no logging (unless --access-log). Run
with the same worker count as hexproxy it shows how much of the gap to nginx is
aiohttp itself and how much is the proxy's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web


async def serve(port: int, body: bytes, access_log: bool) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/octet-stream")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    logger = logging.getLogger("bare.access") if access_log else None
    runner = web.AppRunner(app, access_log=logger, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=1024).start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--access-log", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    body = args.body_file.read_bytes()
    run = asyncio.run
    if args.uvloop:
        import uvloop

        run = uvloop.run
    children = []
    for _ in range(max(args.workers, 1)):  # bounded: one fork per worker
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                run(serve(args.port, body, args.access_log))
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        os.waitpid(child, 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
