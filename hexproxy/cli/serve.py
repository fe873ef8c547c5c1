"""``hexproxy serve``: run the proxy."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Config
from ..web.server import serve
from .options import config_args


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the proxy")
    config_args(parser)
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="address to listen on (127.0.0.1:4000)"
    )
    parser.add_argument("--workers", metavar="N", help="worker processes sharing the port (1)")
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="access and server log format"
    )
    parser.add_argument(
        "--event-loop", metavar="LOOP", help="event loop: uvloop or asyncio (uvloop)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, config: Config) -> int:
    return serve(config)
