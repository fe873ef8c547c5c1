"""Turning cache results into HTTP responses, with the headers real clients need.

rebar3 treats a tarball 200 without an ETag as a failed download, and mix
gunzips twice if a registry file carries Content-Encoding, so every 200 here
has a strong ETag and none has a Content-Encoding.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from aiohttp import web

from ..cache.entries import Answer, Entry, Status, StoredFile
from ..store.cachekey import CacheKey, Kind
from ..store.diskio import open_fd
from .requesthead import etag_matches
from .sendfile import send_file

OCTET = "application/octet-stream"
STALE_WARNING = '110 hexproxy "Response is Stale"'
IMMUTABLE = "public, max-age=604800, immutable"


def if_none_match(request: web.BaseRequest, etag: str) -> bool:
    """Does the client already hold ``etag``? Every If-None-Match line counts, read by the
    same function as the fast path's (requesthead.etag_matches)."""
    return etag_matches(request.headers.getall("If-None-Match", ()), etag)


def content_type(key: CacheKey) -> str:
    if key.kind is Kind.INSTALL and key.name.endswith((".csv", ".signed")):
        return "text/plain; charset=utf-8"
    return OCTET


def cache_control(key: CacheKey, ttl: float) -> str:
    return f"public, max-age={int(ttl)}" if key.is_mutable else IMMUTABLE


def metadata_headers(entry: Entry[object], status: Status, ttl: float) -> dict[str, str]:
    headers = {
        "ETag": entry.etag,
        "Last-Modified": entry.last_modified,
        "Content-Type": content_type(entry.key),
        "Cache-Control": cache_control(entry.key, ttl),
        "X-Cache": status.value,
    }
    if status is Status.STALE:
        headers["Warning"] = STALE_WARNING
    return headers


def metadata_response(request: web.BaseRequest, answer: Answer[object], ttl: float) -> web.Response:
    headers = metadata_headers(answer.entry, answer.status, ttl)
    if if_none_match(request, answer.entry.etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=answer.entry.body, headers=headers)


def file_headers(stored: StoredFile, status: Status) -> dict[str, str]:
    return {
        "ETag": stored.etag,
        "Last-Modified": stored.last_modified,
        "Content-Type": content_type(stored.key),
        "Cache-Control": IMMUTABLE,
        "X-Cache": status.value,
    }


class SendfileResponse(web.StreamResponse):
    """A stored file sent with sendfile(2): the bytes never pass through Python, on
    either event loop (sendfile.py).

    The handler opens the file (in a thread, so that a file pruned in between is a
    clean miss instead of an error here); this response closes it."""

    def __init__(self, stored: StoredFile, headers: dict[str, str], file: BinaryIO | None) -> None:
        super().__init__(status=200, headers=headers)
        self.content_length = stored.size
        self._stored = stored
        self._file = file

    async def prepare(self, request: web.BaseRequest) -> Any:
        file, self._file = self._file, None
        if file is None:  # HEAD
            return await super().prepare(request)
        try:
            writer = await super().prepare(request)
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("client went away")
            # sendfile(2) reads the file in the kernel on the loop's thread: the one disk
            # read left on the loop, deliberately (a thread hop per chunk would cost more
            # than the page-cache read it avoids). The file is already open.
            await send_file(transport, file.fileno(), 0, self._stored.size)
        finally:
            file.close()
        await super().write_eof()
        return writer


async def open_stored(stored: StoredFile) -> BinaryIO | None:
    """The stored file, opened in a thread; None if it is gone."""
    try:
        fd = await open_fd(stored.path)
    except FileNotFoundError:
        return None
    # Wraps the open descriptor (no I/O); the response closes it.
    return open(fd, "rb", closefd=True)  # noqa: ASYNC230
