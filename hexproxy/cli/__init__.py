"""The ``hexproxy`` command: one subcommand per job, config errors as one line and exit 2.

Each subcommand group lives in its own module with a ``register(sub)`` function
that adds its parsers and sets ``run(args, config) -> exit status``; the engines
they drive (``web``, ``airgap``, ``store``) know nothing of argparse or terminals.
This module only parses, loads the configuration once and dispatches. Exit
statuses: 0 done, 1 something failed or was refused, 2 bad input.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from .. import __version__
from ..errors import ConfigError
from . import bundle, cache, hosted, orgs, serve, warm
from .options import config_from_args, usage_error

__all__ = ["build_parser", "main"]

REGISTRARS: list[Callable[[Any], None]] = [
    serve.register,  # hexproxy serve
    warm.register,  # hexproxy warm
    bundle.register,  # hexproxy export | import
    cache.register,  # hexproxy cache ls|stats|verify|rm|prune
    hosted.register,  # hexproxy hosted publish|ls|revert|retire|unretire|key|verify|new-key
    orgs.register,  # hexproxy orgs hash-key
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hexproxy",
        description="A verifying, caching pull-through proxy of repo.hex.pm.",
    )
    parser.add_argument("--version", action="version", version=f"hexproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        return int(args.run(args, config))
    except ConfigError as exc:
        return usage_error(exc.message)
