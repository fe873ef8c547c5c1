"""The ``hexproxy`` command: one subcommand per job, config errors as one line and exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .config import Config, load_config
from .errors import ConfigError

EXIT_USAGE = 2


def _config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", type=Path, help="TOML configuration file")
    parser.add_argument("--cache-dir", metavar="DIR", help="where cached files are kept")
    parser.add_argument("--upstream", metavar="URL", help="repository to proxy (repo.hex.pm)")
    parser.add_argument("--public-key", metavar="PEM_FILE", help="key the registry is signed with")
    parser.add_argument("--repo-name", metavar="NAME", help="expected repository name (hexpm)")
    parser.add_argument(
        "--offline", action="store_true", default=None, help="never contact upstream"
    )


def _serve_parser(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the proxy")
    _config_args(parser)
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="address to listen on (127.0.0.1:4000)"
    )
    parser.add_argument("--workers", metavar="N", help="worker processes sharing the port (1)")
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="access and server log format"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hexproxy",
        description="A verifying, caching pull-through proxy of repo.hex.pm.",
    )
    parser.add_argument("--version", action="version", version=f"hexproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _serve_parser(sub)
    return parser


# Flag -> (section, key): flags override the environment, which overrides the file.
FLAG_KEYS = {
    "cache_dir": ("cache", "dir"),
    "upstream": ("upstream", "url"),
    "public_key": ("upstream", "public_key"),
    "repo_name": ("upstream", "repo_name"),
    "offline": ("upstream", "offline"),
    "listen": ("server", "listen"),
    "workers": ("server", "workers"),
    "log_format": ("server", "log_format"),
}


def config_from_args(args: argparse.Namespace) -> Config:
    overrides = {
        FLAG_KEYS[flag]: value
        for flag, value in vars(args).items()
        if flag in FLAG_KEYS and value is not None
    }
    path = args.config
    if path is None and os.environ.get("HEXPROXY_CONFIG"):
        path = Path(os.environ["HEXPROXY_CONFIG"])
    return load_config(path, os.environ, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"hexproxy: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "serve":
        from .server import serve

        return serve(config)
    raise AssertionError(args.command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
