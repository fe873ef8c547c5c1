"""``hexproxy hosted ...``: hosted repositories from the command line, for pipelines.

Works on ``hosted.dir`` directly, with the same validation (``hexproxy.hosted.package``)
and the same per-repository lock as the HTTP API, so it is safe while the proxy runs.
Exit status: 0 done, 1 ``verify`` found problems, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError, HexproxyError
from ..hosted import Hosted, HostedRepository
from ..hosted.keys import generate_api_key
from ..hosted.repository import RETIREMENT_REASONS
from ..registry import check_name, check_version
from .options import EXIT_FAILED, config_args, usage_error

Run = Callable[[argparse.Namespace, Hosted], int]


def register(sub: Any) -> None:
    parser = sub.add_parser("hosted", help="publish to and inspect hosted repositories")
    actions = parser.add_subparsers(dest="hosted_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, run: Run, repo: bool = True) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        config_args(p)
        if repo:
            p.add_argument("--repo", required=True, metavar="NAME", help="hosted repository")
        p.set_defaults(run=_guarded(run))
        return p

    pub = action(
        "publish", "validate and publish a package tarball (what mix hex.build writes)", run_publish
    )
    pub.add_argument("tarball", type=Path, metavar="PKG.tar")
    pub.add_argument("--replace", action="store_true", help="replace an existing release")
    ls = action("ls", "list hosted repositories, packages and versions", run_ls, repo=False)
    ls.add_argument("--json", action="store_true", help="print one JSON document")
    revert = action("revert", "remove a release (the last one removes the package)", run_revert)
    revert.add_argument("target", metavar="NAME@VERSION")
    retire = action("retire", "mark a release retired", run_retire)
    retire.add_argument("target", metavar="NAME@VERSION")
    retire.add_argument("reason", choices=sorted(RETIREMENT_REASONS))
    retire.add_argument("--message", required=True, help="why (3 to 140 characters)")
    unretire = action("unretire", "clear a release's retirement", run_unretire)
    unretire.add_argument("target", metavar="NAME@VERSION")
    key = actions.add_parser("key", help="print a repository's public key and fingerprint")
    config_args(key)
    key.add_argument("name", metavar="NAME")
    key.add_argument("--url", help="the proxy's public URL, for the printed commands")
    key.set_defaults(run=_guarded(run_key))
    verify = action("verify", "re-check every hosted registry file and tarball", run_verify, False)
    verify.add_argument("--purge", action="store_true", help="remove tarballs no release uses")
    new_key = actions.add_parser("new-key", help="make an API key and its config digest")
    new_key.set_defaults(run=run_new_key)


def _guarded(run: Run) -> Callable[[argparse.Namespace, Config], int]:
    def guarded(args: argparse.Namespace, config: Config) -> int:
        if not config.hosted.repos:
            return _fail("no hosted repositories are configured ([[hosted.repos]] in --config)")
        try:
            return run(args, Hosted.open(config))
        except ConfigError:
            raise
        except HexproxyError as exc:
            return _fail(exc.message)
        except OSError as exc:
            return _fail(
                f"{getattr(exc, 'filename', '') or ''}: {exc.strerror or exc}".lstrip(": ")
            )

    return guarded


def _fail(message: str) -> int:
    return usage_error(message)


def _target(text: str) -> tuple[str, str]:
    name, at, version = text.partition("@")
    if not at:
        raise ConfigError(f"expected NAME@VERSION, got {text[:80]!r}")
    return check_name(name), check_version(version)


def run_publish(args: argparse.Namespace, hosted: Hosted) -> int:
    data = args.tarball.read_bytes()
    result = hosted.publish(args.repo, data, replace=args.replace)
    verb = "published" if result.created else "replaced"
    pkg = result.package
    print(f"{verb} {pkg.name} {pkg.version} in {args.repo} ({pkg.outer_checksum.hex()})")
    return 0


def run_ls(args: argparse.Namespace, hosted: Hosted) -> int:
    listing = {name: _listing(repo) for name, repo in sorted(hosted.repos.items())}
    if args.json:
        print(json.dumps({"repositories": listing}, indent=2, sort_keys=True))
        return 0
    for name, packages in listing.items():
        print(
            f"{name}: {len(packages)} packages, {sum(len(v) for v in packages.values())} releases"
        )
        for package, versions in packages.items():
            print(f"  {package}  {', '.join(versions)}")
    return 0


def _listing(repo: HostedRepository) -> dict[str, list[str]]:
    return {e.name: list(e.versions) for e in repo.versions().packages}


def run_revert(args: argparse.Namespace, hosted: Hosted) -> int:
    name, version = _target(args.target)
    hosted.repo(args.repo).revert(name, version)
    print(f"reverted {name} {version} in {args.repo}")
    return 0


def run_retire(args: argparse.Namespace, hosted: Hosted) -> int:
    name, version = _target(args.target)
    hosted.repo(args.repo).retire(name, version, args.reason, args.message)
    print(f"retired {name} {version} in {args.repo} ({args.reason})")
    return 0


def run_unretire(args: argparse.Namespace, hosted: Hosted) -> int:
    name, version = _target(args.target)
    hosted.repo(args.repo).unretire(name, version)
    print(f"unretired {name} {version} in {args.repo}")
    return 0


def run_key(args: argparse.Namespace, hosted: Hosted) -> int:
    repo = hosted.repo(args.name)
    url = f"{(args.url or 'http://PROXY:4000').rstrip('/')}/internal/{repo.name}"
    sys.stdout.write(repo.public_key_pem.decode("ascii"))
    print(repo.fingerprint)
    print()
    print(f"mix hex.repo add {repo.name} {url} --fetch-public-key {repo.fingerprint}")
    return 0


def run_verify(args: argparse.Namespace, hosted: Hosted) -> int:
    bad = 0
    for name, repo in sorted(hosted.repos.items()):
        problems = repo.verify(purge_orphans=args.purge)
        for problem in problems:
            label = ("REMOVED" if args.purge else "ORPHAN") if problem.orphan else "BAD"
            print(f"  {label}  {name}/{problem.path}: {problem.problem}")
        bad += sum(1 for p in problems if not p.orphan)
        releases = sum(len(e.versions) for e in repo.versions().packages)
        print(f"{name}: {releases} releases checked, {len(problems)} problems")
    return EXIT_FAILED if bad else 0


def run_new_key(args: argparse.Namespace, config: Config) -> int:
    key, digest = generate_api_key()
    print(f"API key (give it to the client; it is not stored): {key}")
    print(f'config digest (put it in read_keys or write_keys): "{digest}"')
    return 0
