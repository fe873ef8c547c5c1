"""A stand-in for repo.hex.pm in its own process: serves a repository directory as-is.

    python bench/fake_upstream.py --root DIR --port-file FILE [--rate BYTES_PER_S] [--delay S]

``DIR`` is laid out like the repository (``names``, ``packages/NAME``,
``tarballs/NAME-VERSION.tar``). ``--rate`` throttles each response body (a slow
upstream, so that concurrent misses really overlap); ``--delay`` waits before
answering. ``GET /__stats`` returns how many times each path was requested, so a
benchmark can prove that 200 concurrent misses cost one upstream request.

The chosen port is written to ``--port-file`` once the server listens. The process
stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
from collections import Counter
from pathlib import Path

from aiohttp import web

CHUNK = 64 * 1024


class Repo:
    def __init__(self, root: Path, rate: float, delay: float) -> None:
        self.root = root.resolve()
        self.rate = rate
        self.delay = delay
        self.counts: Counter[str] = Counter()

    def resolve(self, path: str) -> Path | None:
        target = (self.root / path.lstrip("/")).resolve()
        if self.root not in target.parents or not target.is_file():
            return None
        return target

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/__stats":
            return web.json_response(dict(self.counts))
        self.counts[request.path] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        target = self.resolve(request.path)
        if target is None:
            return web.Response(status=404, text="not found\n")
        body = target.read_bytes()
        headers = {
            "ETag": '"' + hashlib.md5(body).hexdigest() + '"',
            "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT",
            "Content-Type": "application/octet-stream",
        }
        if not self.rate:
            return web.Response(body=body, headers=headers)
        response = web.StreamResponse(headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        pause = CHUNK / self.rate
        for start in range(0, len(body), CHUNK):  # bounded by the file size
            await response.write(body[start : start + CHUNK])
            await asyncio.sleep(pause)
        await response.write_eof()
        return response


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--rate", type=float, default=0.0, help="bytes/s per response; 0: no limit")
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the benchmark upstream listens on loopback only")

    repo = Repo(args.root, args.rate, args.delay)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", repo.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, args.host, 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server)
    port = server.sockets[0].getsockname()[1]
    args.port_file.write_text(str(port))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
