"""``hexproxy warm [--lock FILE]... [SPEC...] [--org ORG]``: fill the cache before it is needed."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

from ..airgap.lockfiles import LockfileError, parse_lockfile
from ..airgap.resolve import Spec, SpecError, parse_spec
from ..airgap.warm import DEFAULT_JOBS, WarmInputs, WarmReport, describe, summary_lines, warm
from ..airgap.warm_installs import InstallsReport, warm_installs
from ..cache.policy import Cache
from ..cache.wiring import build_cache
from ..config import Config
from ..installs import Target
from ..installs import parse_target as parse_installs_target
from ..orgs import OrgSource, org_repos_beside
from ..registry import is_valid_org
from .options import EXIT_FAILED, EXIT_OK, config_args, usage_error

# The variable Hex and rebar3 read a repository key from; CI that runs them has it set.
ORG_KEY_ENV = "HEX_REPOS_KEY"

SPEC_HELP = (
    "a package to warm: NAME (newest stable release), NAME@VERSION, or NAME@REQUIREMENT "
    "such as 'phoenix@~> 1.7' (quote it); its dependencies come too"
)


class InputError(Exception):
    """A lock file or spec the user gave cannot be used; shown as one line, exit 2."""


def add_input_args(parser: argparse.ArgumentParser, *, specs: bool = True) -> None:
    """``--lock``, ``SPEC...`` and ``--all-versions``, shared by warm and export."""
    if specs:
        parser.add_argument("specs", nargs="*", metavar="SPEC", help=SPEC_HELP)
    parser.add_argument(
        "--lock",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a mix.lock or rebar.lock whose Hex packages to take (repeatable)",
    )
    parser.add_argument(
        "--all-versions",
        action="store_true",
        help="take every release matching each SPEC, not only the newest",
    )


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "warm",
        help="fetch and verify packages into the cache ahead of time",
        description="Fetch, verify and cache what lock files and package specs need, "
        "through the same checks as the server. A second run fetches only what is missing.",
    )
    config_args(parser)
    add_input_args(parser)
    parser.add_argument(
        "--jobs",
        type=int,
        default=DEFAULT_JOBS,
        metavar="N",
        help=f"requests to run at once (default {DEFAULT_JOBS})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--org",
        metavar="ORG",
        help="the SPECs are packages of this hex.pm organization (their public dependencies "
        "come from hexpm), and mix.lock entries of hexpm:ORG are warmed too; the key is read "
        "from the environment variable named by --key-env, never from a flag",
    )
    parser.add_argument(
        "--key-env",
        metavar="VAR",
        default=ORG_KEY_ENV,
        help=f"environment variable holding the organization's key (default {ORG_KEY_ENV})",
    )
    parser.add_argument(
        "--installs",
        action="append",
        default=[],
        metavar="ELIXIR[/OTP]",
        help="also cache what `mix local.hex` and `mix local.rebar` install on this Elixir "
        "(and OTP release), e.g. 1.18.4 or 1.19.0/27 (repeatable)",
    )
    parser.set_defaults(run=run)


def load_inputs(locks: Sequence[Path], specs: Sequence[str]) -> WarmInputs:
    """Parse every lock file and spec up front, so bad input fails before any request."""
    if not locks and not specs:
        raise InputError("nothing to warm: give --lock FILE or a package SPEC")
    inputs = WarmInputs(specs=[_spec(text) for text in specs])
    for path in locks:
        try:
            lock = parse_lockfile(path.name, path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise InputError(f"cannot read lock file {path}: {exc.strerror or exc}") from None
        except (LockfileError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: {exc}") from None
        inputs.locked.extend(lock.packages)
        inputs.skipped.extend((f"{path.name} {app}", reason) for app, reason in lock.skipped)
    return inputs


def _spec(text: str) -> Spec:
    try:
        return parse_spec(text)
    except SpecError as exc:
        raise InputError(str(exc)) from None


def run(args: argparse.Namespace, config: Config) -> int:
    try:
        targets = [parse_installs_target(text) for text in args.installs]
        wants_packages = bool(args.lock or args.specs) or not targets
        inputs = load_inputs(args.lock, args.specs) if wants_packages else None
    except (InputError, ValueError) as exc:
        return usage_error(str(exc))
    if args.jobs < 1:
        return usage_error(f"--jobs must be at least 1, not {args.jobs}")
    org = None
    if args.org is not None:
        try:
            org = org_and_key(args.org, args.key_env, config)
        except InputError as exc:
            return usage_error(str(exc))
    installs = asyncio.run(run_installs(config, targets)) if targets else InstallsReport()
    if targets:
        print_installs(installs, as_json=args.json)
    if inputs is None:
        return EXIT_FAILED if installs.failures else EXIT_OK
    show = TtyProgress(sys.stderr) if sys.stderr.isatty() and not args.json else None
    report = asyncio.run(run_warm(config, inputs, args.jobs, args.all_versions, show, org))
    if show is not None:
        show.finish()
    print_report(report, as_json=args.json)
    return EXIT_FAILED if report.failures or installs.failures else EXIT_OK


async def run_installs(config: Config, targets: list[Target]) -> InstallsReport:
    async with open_cache(config) as cache:
        return await warm_installs(cache, targets)


def org_and_key(org: str, key_env: str, config: Config) -> tuple[str, str]:
    """The organization to warm and its key, from the environment (never a flag: flags
    show in ps and shell history)."""
    if not is_valid_org(org) or org == config.upstream.repo_name:
        raise InputError(f"--org: not an organization name: {org!r}")
    key = os.environ.get(key_env, "").strip()
    if not key:
        raise InputError(f"--org {org}: set {key_env} to a key that may read {org}")
    return org, key


async def run_warm(
    config: Config,
    inputs: WarmInputs,
    jobs: int,
    all_versions: bool,
    show: TtyProgress | None = None,
    org: tuple[str, str] | None = None,
) -> WarmReport:
    """Warm ``inputs``; with ``org`` = (ORG, key), the SPECs are that organization's."""
    async with open_cache(config) as cache:
        repos, sources = None, {}
        if org is not None:
            repos = org_repos_beside(cache)
            credential = repos.credential(org[1])
            assert credential is not None  # org_and_key refused an empty one
            sources[org[0]] = OrgSource(repos, org[0], credential)
        try:
            return await warm(
                cache,
                inputs,
                jobs=jobs,
                all_versions=all_versions,
                progress=show.update if show else None,
                orgs=sources,
                top_repository=org[0] if org else None,
            )
        finally:
            if repos is not None:
                await repos.close()


@asynccontextmanager
async def open_cache(config: Config) -> AsyncIterator[Cache]:
    """A started cache, closed afterwards."""
    cache = build_cache(config)
    # No sweep of tmp/: a server may be writing into the same cache right now.
    cache.storage.tmp.mkdir(parents=True, exist_ok=True)
    await cache.start()
    try:
        yield cache
    finally:
        await cache.close()


def print_report(report: WarmReport, *, as_json: bool, verb: str = "warmed") -> None:
    if as_json:
        print(json.dumps(report.as_json(), indent=1))
        return
    for line in summary_lines(report, verb):
        out = sys.stderr if line.startswith("FAILED") else sys.stdout
        print(line, file=out)


class TtyProgress:
    """One line on a terminal, rewritten in place at most ten times a second."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = 0.0
        self._shown = False

    def update(self, report: WarmReport) -> None:
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        self._shown = True
        self.stream.write(f"\r\x1b[K{describe(report)}")
        self.stream.flush()

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def print_installs(report: InstallsReport, *, as_json: bool) -> None:
    """What ``hexproxy warm --installs`` prints: a count and each failure, or JSON."""
    if as_json:
        failures = [{"what": w, "reason": r} for w, r in report.failures]
        print(json.dumps({"installs": {"fetched": report.fetched, "failures": failures}}))
        return
    print(f"installs: {len(report.fetched)} files cached and verified")
    for what, reason in report.failures:
        print(f"FAILED {what}: {reason}", file=sys.stderr)
