"""A stand-in for repo.hex.pm that fails on command, in its own process (for bench/soak.py).

    python bench/fault_upstream.py --root DIR --port-file FILE

Serves ``DIR`` (laid out like the repository) on one port and takes orders on a
second, control port, which keeps answering whatever the data port does:

    POST /mode/LABEL   switch fault mode: LABEL is a mode (see MODES) or PHASE-MODE
    GET  /stats        requests per label and path, as JSON

Both ports are written to ``--port-file`` as ``DATA CONTROL`` once they listen. A
mode applies to requests that start while it is on; a response under way keeps the
behaviour it started with. Loopback only; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import signal
import sys
from collections import Counter
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hexproxy.registry import decode_signed
from hexproxy.registry._pb import hex_registry_pb2 as pb

TRICKLE_STEP = 256  # bytes per write in trickle mode (--trickle-rate sets the pace)

# Mode -> (fault, which paths: "" all, "packages", "tarballs").
MODES: dict[str, tuple[str, str]] = {
    "normal": ("", ""),
    "refuse": ("refuse", ""),  # connections refused (listener closed, open ones reset)
    "blackhole": ("blackhole", ""),  # requests read, never answered
    "500": ("500", ""),
    "trickle": ("trickle", ""),  # every body at ~8 KB/s
    "truncate": ("truncate", ""),  # half the declared length, then close
    "tampered_tarball": ("flip", "tarballs"),  # one byte of every tarball changed
    "tampered_signature": ("bad_signature", "packages"),  # registry signatures broken
    "500_tarballs": ("500", "tarballs"),  # path-restricted: registry files are fine
    "blackhole_packages": ("blackhole", "packages"),  # path-restricted: tarballs are fine
}


class FaultRepo:
    def __init__(self, root: Path, trickle_rate: float) -> None:
        self.root = root.resolve()
        self.trickle_pause = TRICKLE_STEP / trickle_rate
        self.mode = "normal"
        self.label = "normal"  # the phase, for counting
        self.changed = asyncio.Event()
        self.counts: Counter[tuple[str, str]] = Counter()  # (label, path) -> requests

    def fault_for(self, path: str) -> str:
        fault, where = MODES[self.mode]
        if where and not path.startswith(f"/{where}/"):
            return ""
        return fault

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.counts[(self.label, path)] += 1
        fault = self.fault_for(path)
        if fault == "refuse":
            _abort(request)
            return web.Response(status=500)  # never sent: the connection is gone
        if fault == "blackhole":
            await self._until_mode_changes()
            _abort(request)
            return web.Response(status=500)
        if fault == "500":
            return web.Response(status=500, text="fault injected\n")
        target = (self.root / path.lstrip("/")).resolve()
        if self.root not in target.parents or not target.is_file():
            return web.Response(status=404, text="not found\n")
        body = target.read_bytes()
        headers = {
            "ETag": '"' + hashlib.md5(body).hexdigest() + '"',
            "Last-Modified": "Wed, 01 Jan 2025 00:00:00 GMT",
            "Content-Type": "application/octet-stream",
        }
        if fault == "flip":
            body = _flip(body)
        elif fault == "bad_signature":
            body = _corrupt_signature(body)
        elif request.headers.get("If-None-Match") == headers["ETag"]:
            return web.Response(status=304, headers={"ETag": headers["ETag"]})
        if fault in ("trickle", "truncate"):
            return await self._stream(request, fault, body, headers)
        return web.Response(body=body, headers=headers)

    async def _until_mode_changes(self) -> None:
        await self.changed.wait()

    async def _stream(
        self, request: web.Request, fault: str, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        if fault == "truncate":
            await response.write(body[: len(body) // 2])
            _abort(request)
            return response
        for start in range(0, len(body), TRICKLE_STEP):  # bounded by the body size
            await response.write(body[start : start + TRICKLE_STEP])
            await asyncio.sleep(self.trickle_pause)
        await response.write_eof()
        return response

    def switch(self, mode: str, label: str) -> None:
        self.mode, self.label = mode, label
        self.changed.set()
        self.changed = asyncio.Event()


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def _corrupt_signature(body: bytes) -> bytes:
    payload, signature = decode_signed(gzip.decompress(body))
    signed = pb.Signed(payload=payload, signature=_flip(signature))
    return gzip.compress(signed.SerializeToString(), mtime=0)


class Server:
    """The data port, which 'refuse' closes, and the control port, which never closes."""

    def __init__(self, repo: FaultRepo, host: str) -> None:
        self.repo = repo
        self.host = host
        self.data_port = 0
        self.data: web.AppRunner | None = None
        self.site: web.TCPSite | None = None

    async def start(self) -> tuple[int, web.AppRunner]:
        data = web.Application()
        data.router.add_route("*", "/{tail:.*}", self.repo.handle)
        # handler_cancellation: a black-holed request whose client gave up ends there.
        self.data = web.AppRunner(data, access_log=None, handle_signals=False,
                                  handler_cancellation=True)  # fmt: skip
        await self.data.setup()
        await self._listen()
        control = web.Application()
        control.router.add_post("/mode/{mode}", self.set_mode)
        control.router.add_get("/stats", self.stats)
        runner = web.AppRunner(control, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, 0)
        await site.start()
        return _port(site), runner

    async def _listen(self) -> None:
        assert self.data is not None
        self.site = web.TCPSite(self.data, self.host, self.data_port, reuse_address=True)
        await self.site.start()
        self.data_port = _port(self.site)

    async def set_mode(self, request: web.Request) -> web.Response:
        label = request.match_info["mode"]
        mode = label.split("-", 1)[-1]
        if mode not in MODES:
            return web.Response(status=400, text=f"unknown mode {mode!r}\n")
        refusing = MODES[self.repo.mode][0] == "refuse"
        if MODES[mode][0] == "refuse" and not refusing and self.site is not None:
            await self.site.stop()
        self.repo.switch(mode, label)
        if refusing and MODES[mode][0] != "refuse":
            await self._listen()
        return web.Response(text=f"{mode}\n")

    async def stats(self, request: web.Request) -> web.Response:
        out: dict[str, dict[str, int]] = {}
        for (label, path), n in self.repo.counts.items():
            out.setdefault(label, {})[path] = n
        return web.json_response(out)


def _port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the listening server here; bench-only introspection
    assert isinstance(server, asyncio.Server)
    return int(server.sockets[0].getsockname()[1])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--trickle-rate", type=float, default=8192.0, help="bytes/s (8 KiB)")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the benchmark upstream listens on loopback only")
    repo = FaultRepo(args.root, args.trickle_rate)
    server = Server(repo, args.host)
    control_port, control = await server.start()
    args.port_file.write_text(f"{server.data_port} {control_port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        repo.switch("normal", "stopping")  # release black-holed handlers
        await control.cleanup()
        if server.data is not None:
            await server.data.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
