"""The ``hexproxy`` command: one subcommand per job, config errors as one line and exit 2.

Each subcommand lives in its own module with a ``register(sub)`` function that
adds its parser and sets ``run(args, config) -> exit status``; this module only
parses, loads the configuration once and dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__, commands
from .commands import cache as cache_command
from .commands import hosted as hosted_command
from .config import Config, load_config
from .errors import ConfigError

EXIT_USAGE = 2


def config_args(parser: argparse.ArgumentParser) -> None:
    """The flags every command that touches the cache or upstream accepts."""
    parser.add_argument("--config", metavar="FILE", type=Path, help="TOML configuration file")
    parser.add_argument("--cache-dir", metavar="DIR", help="where cached files are kept")
    parser.add_argument("--upstream", metavar="URL", help="repository to proxy (repo.hex.pm)")
    parser.add_argument("--public-key", metavar="PEM_FILE", help="key the registry is signed with")
    parser.add_argument("--repo-name", metavar="NAME", help="expected repository name (hexpm)")
    parser.add_argument(
        "--offline", action="store_true", default=None, help="never contact upstream"
    )


def _register_serve(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the proxy")
    config_args(parser)
    parser.add_argument(
        "--listen", metavar="HOST:PORT", help="address to listen on (127.0.0.1:4000)"
    )
    parser.add_argument("--workers", metavar="N", help="worker processes sharing the port (1)")
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="access and server log format"
    )
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace, config: Config) -> int:
    from .server import serve

    return serve(config)


REGISTRARS: list[Callable[[Any], None]] = [_register_serve, commands.register]
REGISTRARS.append(cache_command.register)  # hexproxy cache ls|stats|verify|rm|prune
REGISTRARS.append(hosted_command.register)  # hexproxy hosted publish|ls|revert|retire|key|...


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


def config_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    overrides = {
        FLAG_KEYS[flag]: value
        for flag, value in vars(args).items()
        if flag in FLAG_KEYS and value is not None
    }
    path = getattr(args, "config", None)
    if path is None and env.get("HEXPROXY_CONFIG"):
        path = Path(env["HEXPROXY_CONFIG"])
    return load_config(path, env, overrides)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        return int(args.run(args, config))
    except ConfigError as exc:
        print(f"hexproxy: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
