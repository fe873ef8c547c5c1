"""Errors become short plain-text answers; every request gets one access-log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from ..errors import HexproxyError, NotCached, NotFound

log = logging.getLogger("hexproxy.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hex_message(text: str) -> str:
    """An ``x-hex-message`` value mix can parse: quoted, no inner quotes, with a level."""
    clean = text.replace('"', "'").replace("\r", " ").replace("\n", " ")
    return f'"{clean[:300]}"; level=fatal'


def error_response(error: HexproxyError) -> web.Response:
    headers = {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}
    # A plain upstream 404 passes through as upstream sent it; everything the
    # proxy itself has to say goes in the header mix prints.
    if isinstance(error, NotCached) or not isinstance(error, NotFound):
        headers["x-hex-message"] = hex_message(error.message)
    return web.Response(status=error.http_status, text=error.message + "\n", headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HexproxyError as exc:
        if exc.http_status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        return error_response(exc)


class AccessLogger(AbstractAccessLogger):
    """method, path, status, cache result, bytes, duration: in text or as JSON."""

    json_format = False

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        size = (
            response.content_length if response.content_length is not None else response.body_length
        )
        cache = response.headers.get("X-Cache", "-")
        if self.json_format:
            message = json.dumps(
                {
                    "remote": request.remote,
                    "method": request.method,
                    "path": request.path,
                    "status": response.status,
                    "cache": cache,
                    "bytes": size,
                    "duration_ms": round(time * 1000, 3),
                    "user_agent": request.headers.get("User-Agent", ""),
                }
            )
        else:
            message = (
                f'{request.remote} "{request.method} {request.path}" {response.status} '
                f"{cache} {size}B {time * 1000:.1f}ms"
            )
        # This runs for every request: logger.info() would walk the stack to find
        # its caller (which no access line shows) and %-format lazily; building the
        # record directly halves the cost of a line (bench/README.md, "profile").
        logger.handle(logger.makeRecord(logger.name, logging.INFO, "", 0, message, (), None))


class JsonAccessLogger(AccessLogger):
    json_format = True
