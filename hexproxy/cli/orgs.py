"""``hexproxy orgs hash-key --org ORG``: the value ``[orgs.keys]`` lists for a key.

The key is read from standard input (without echo on a terminal) or from an
environment variable, never from a flag: flags show in ``ps`` and shell history.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from ..config import Config
from ..orgs import listed_hash
from ..registry import is_valid_org
from .options import usage_error


def register(sub: Any) -> None:
    orgs = sub.add_parser("orgs", help="hex.pm organizations: keys for an offline proxy")
    actions = orgs.add_subparsers(dest="orgs_command", required=True, metavar="ACTION")
    hash_key = actions.add_parser(
        "hash-key",
        help="print the hash of an organization key, for [orgs.keys]",
        description="Print what [orgs.keys] lists for a key that may read ORG when the "
        "proxy is offline. The key comes from standard input, or from --key-env VAR.",
    )
    hash_key.add_argument("--org", required=True, metavar="ORG", help="the organization")
    hash_key.add_argument(
        "--key-env", metavar="VAR", help="read the key from this environment variable"
    )
    hash_key.set_defaults(run=run_hash_key)


def run_hash_key(args: argparse.Namespace, config: Config) -> int:
    if not is_valid_org(args.org):
        return usage_error(f"--org: not an organization name: {args.org!r}")
    key = _read_key(args.key_env)
    if not key:
        source = f"${args.key_env}" if args.key_env else "standard input"
        return usage_error(f"no key in {source}")
    print(listed_hash(args.org, key))
    return 0


def _read_key(env: str | None) -> str:
    if env:
        return os.environ.get(env, "").strip()
    if sys.stdin.isatty():
        return getpass.getpass("organization key: ").strip()
    return sys.stdin.read().strip()
