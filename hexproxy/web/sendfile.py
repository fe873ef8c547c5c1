"""sendfile(2) to a transport's socket, awaited: for aiohttp's side of the server.

Neither loop's ``loop.sendfile`` serves: uvloop has none for transports (a fallback
would copy every byte through Python, and 100 clients of a 12 MB file then held about
100 MiB of pieces), and asyncio's costs a writer registration per partial send. This
registers one writer, on a dup of the socket's fd (both loops refuse a writer on the
fd a transport owns), for the whole file. The fast path does the same from its own
callbacks (fastpath.py, _send_rest)."""

from __future__ import annotations

import asyncio
import os


async def send_file(transport: asyncio.Transport, fd: int, offset: int, count: int) -> None:
    """``count`` bytes of ``fd`` from ``offset`` to the transport's socket, after whatever
    the transport still holds (the headers). Raises ConnectionResetError if the client
    goes away or the file turns out shorter than ``count``: the caller must then end the
    connection, since the body is short."""
    if count <= 0:
        return
    sock = transport.get_extra_info("socket")
    if sock is None or transport.is_closing():
        raise ConnectionResetError("client went away")
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    dup = os.dup(sock.fileno())

    def ready() -> None:
        nonlocal offset, count
        if done.done():
            return
        if transport.is_closing():
            done.set_exception(ConnectionResetError("client went away"))
            return
        if transport.get_write_buffer_size():
            return  # what the transport holds goes first; it flushes when there is room
        try:
            sent = os.sendfile(dup, fd, offset, count)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:
            done.set_exception(ConnectionResetError(f"sendfile: {error}"))
            return
        if sent == 0:
            done.set_exception(ConnectionResetError("the file is shorter than recorded"))
            return
        offset += sent
        count -= sent
        if count == 0:
            done.set_result(None)

    try:
        loop.add_writer(dup, ready)
        try:
            await done
        finally:
            loop.remove_writer(dup)
    finally:
        os.close(dup)
