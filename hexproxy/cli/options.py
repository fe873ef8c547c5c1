"""What every subcommand shares: the configuration flags, exit statuses, error lines."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..config import CONFIG_ENV, Config, load_config

EXIT_OK = 0
EXIT_FAILED = 1  # the work ran and something failed, was refused or was not there
EXIT_USAGE = 2  # bad input: a flag, a file, a spec or the configuration


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
    "event_loop": ("server", "event_loop"),
}


def config_from_args(args: argparse.Namespace, env: dict[str, str] | None = None) -> Config:
    env = dict(os.environ) if env is None else env
    overrides = {
        FLAG_KEYS[flag]: value
        for flag, value in vars(args).items()
        if flag in FLAG_KEYS and value is not None
    }
    path = getattr(args, "config", None)
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    # Printed, not logged: logging is set up from this very configuration, later.
    return load_config(path, env, overrides, warn=warning)


def warning(message: str) -> None:
    """The one shape of a warning line: ``hexproxy: warning: MESSAGE`` on stderr."""
    print(f"hexproxy: warning: {message}", file=sys.stderr)


def error(message: str) -> None:
    """The one shape of an error line: ``hexproxy: error: MESSAGE`` on stderr."""
    print(f"hexproxy: error: {message}", file=sys.stderr)


def usage_error(message: str) -> int:
    """Say what is wrong with the input; returns the exit status for it."""
    error(message)
    return EXIT_USAGE
