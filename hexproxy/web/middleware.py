"""Errors become short plain-text answers (the access log is in accesslog.py)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import HexproxyError
from .clients import accepts_hex_message

log = logging.getLogger("hexproxy.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def hex_message(text: str, level: str = "fatal") -> str:
    """An ``x-hex-message`` value mix can parse: quoted, no inner quotes, with a level."""
    clean = text.replace('"', "'").replace("\r", " ").replace("\n", " ")
    return f'"{clean[:300]}"; level={level}'


# The stable name of what went wrong (HexproxyError.code), for scripts; the body is for people.
ERROR_CODE_HEADER = "X-Hexproxy-Error"


def error_response(error: HexproxyError, user_agent: str | None) -> web.Response:
    """The plain-text answer for ``error``; the body always carries the text, and the
    ``x-hex-message`` header repeats it only for clients that print it without crashing."""
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "Cache-Control": "no-store",
        ERROR_CODE_HEADER: error.code,
    }
    if error.client_message and accepts_hex_message(user_agent):
        headers["x-hex-message"] = hex_message(error.message)
    return web.Response(status=error.http_status, text=error.message + "\n", headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HexproxyError as exc:
        if exc.http_status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        return error_response(exc, request.headers.get("User-Agent"))
