"""``hexproxy cache ls|stats|verify|rm|prune``: look at and steer the store.

The store is the configured one: the cache directory (``[store] kind = "fs"``), or
the bucket replicas share (``"s3"``; ``HEXPROXY_STORE_KIND=fs`` points a command at
the local cache directory instead). The engines (``store.inventory``,
``store.audit``) do the work through the Storage interface; this module turns
flags into their inputs and their results into terminal text or, with ``--json``,
one JSON document for scripts (``ls --json`` writes its document one package at
a time, so its memory does not grow with the cache). Exit status: 0 done, 1 bad
entries left (verify) or nothing to remove (rm), 2 bad input, or a store that
cannot be reached.

They may run while servers serve from the same store: they only ever remove whole
objects, which the servers tolerate (they fetch them again).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..cache.wiring import build_gate
from ..config import Config
from ..errors import HexproxyError
from ..store import audit, inventory
from ..store.backends import open_s3
from ..store.fs_backend import FsStore
from ..store.objects import Storage
from ..store.storage import FileStorage
from ..units import format_size, parse_duration, parse_size
from .options import EXIT_FAILED, EXIT_OK, config_args, usage_error

Action = Callable[[argparse.Namespace, Config, Storage], Awaitable[int]]


def register(sub: Any) -> None:
    parser = sub.add_parser("cache", help="inspect, verify and prune the cache directory")
    actions = parser.add_subparsers(dest="cache_command", required=True, metavar="ACTION")

    def action(name: str, help_text: str, run: Action) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help_text, description=help_text)
        config_args(p)
        p.add_argument("--json", action="store_true", help="print one JSON document")
        p.set_defaults(run=_guarded(run))
        return p

    ls = action("ls", "list cached packages, versions, sizes and last access", run_ls)
    ls.add_argument("pattern", nargs="?", metavar="PATTERN", help="shell pattern, e.g. 'phx*'")
    action("stats", "entries, bytes, per-kind counts, oldest and newest entry", run_stats)
    verify = action("verify", "re-verify every registry file and tarball", run_verify)
    verify.add_argument("--purge", action="store_true", help="remove the bad entries found")
    rm = action("rm", "remove a package or one release (the next request refetches)", run_rm)
    rm.add_argument("target", metavar="NAME[@VERSION]")
    prune = action("prune", "remove least recently used tarballs", run_prune)
    limit = prune.add_mutually_exclusive_group(required=True)
    limit.add_argument("--max-size", type=_arg(parse_size), metavar="SIZE", help="e.g. 20GiB")
    limit.add_argument("--older-than", type=_arg(parse_duration), metavar="AGE", help="e.g. 30d")
    prune.add_argument("--dry-run", action="store_true", help="show what would be removed")


def _arg(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _guarded(run: Action) -> Callable[..., int]:
    """Open the configured store and turn input errors into one line and exit 2."""

    def guarded(args: argparse.Namespace, config: Config) -> int:
        if config.store.kind == "fs" and not config.cache_dir.is_dir():
            return usage_error(f"no cache directory at {config.cache_dir} (see --cache-dir)")
        try:
            return asyncio.run(_with_store(run, args, config))
        except HexproxyError as exc:
            return usage_error(exc.message)

    return guarded


def open_store(config: Config) -> Storage:
    """The store the configuration names (what ``cache`` commands act on)."""
    if config.store.kind == "s3":
        return open_s3(config.store)
    return FsStore(FileStorage(config.cache_dir))


async def _with_store(run: Action, args: argparse.Namespace, config: Config) -> int:
    store = open_store(config)
    try:
        return await run(args, config, store)
    finally:
        await store.close()


def _emit(data: object) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


# ----- ls -----


async def run_ls(args: argparse.Namespace, config: Config, storage: Storage) -> int:
    found = await inventory.package_listings(storage, args.pattern)
    now, ttl = time.time(), config.cache.registry_ttl
    if args.json:
        _stream_packages(_listing_json(p, now, ttl) for p in found)
        return EXIT_OK
    listings = list(found)
    if not listings:
        print("No cached packages" + (f" match {args.pattern!r}." if args.pattern else "."))
        return EXIT_OK
    rows = [("PACKAGE", "VERSION", "SIZE", "LAST ACCESS", "REGISTRY")]
    for p in listings:
        registry = _freshness(p.registry, now, ttl)
        versions = p.releases or (None,)
        for i, item in enumerate(versions):
            rows.append(
                (
                    p.name if i == 0 else "",
                    item.key.version if item else "-",
                    format_size(item.size) if item else "",
                    _ago(now, item.last_access) if item else "",
                    registry if i == 0 else "",
                )
            )
    _table(rows)
    tarballs = sum(len(p.releases) for p in listings)
    total = sum(p.size for p in listings)
    print(f"\n{len(listings)} packages, {tarballs} tarballs, {format_size(total)}")
    return EXIT_OK


def _stream_packages(packages: Iterable[dict[str, Any]]) -> None:
    """Print ``{"packages": [...]}`` exactly as ``_emit`` would, one package at a time."""
    out = sys.stdout
    out.write('{\n  "packages": [')
    separator = "\n"
    for package in packages:
        text = json.dumps(package, indent=2, sort_keys=True)
        out.write(separator + textwrap.indent(text, "    "))
        separator = ",\n"
    out.write("]\n}\n" if separator == "\n" else "\n  ]\n}\n")


def _listing_json(p: inventory.PackageListing, now: float, ttl: float) -> dict[str, Any]:
    reg = p.registry
    return {
        "name": p.name,
        "size": p.size,
        "registry": None
        if reg is None
        else {
            "size": reg.size,
            "validated_at": _iso(reg.validated_at),
            "fresh": reg.validated_at is not None and now - reg.validated_at < ttl,
        },
        "releases": [
            {"version": r.key.version, "size": r.size, "last_access": _iso(r.last_access)}
            for r in p.releases
        ],
    }


def _freshness(item: inventory.Item | None, now: float, ttl: float) -> str:
    if item is None:
        return "not cached"
    if item.validated_at is None:
        return "unchecked"
    state = "fresh" if now - item.validated_at < ttl else "stale"
    return f"{state}, checked {_ago(now, item.validated_at)}"


# ----- stats -----


async def run_stats(args: argparse.Namespace, config: Config, storage: Storage) -> int:
    s = await inventory.stats_of(storage)
    limit = config.cache.max_size if config.store.kind == "fs" else 0
    if args.json:
        _emit(
            {
                "dir": storage.location,
                "entries": s.entries,
                "bytes": s.bytes,
                "evictable_bytes": s.evictable_bytes,
                "max_size": limit,
                "kinds": {
                    k: {"entries": v.entries, "bytes": v.bytes} for k, v in s.by_kind.items()
                },
                "oldest": _item_json(s.oldest),
                "newest": _item_json(s.newest),
            }
        )
        return EXIT_OK
    _print_stats(s, storage, limit)
    return EXIT_OK


def _print_stats(s: inventory.Stats, storage: Storage, limit: int) -> None:
    width = max([len(k) for k in s.by_kind] + [6])
    evictable = f"{format_size(s.evictable_bytes)} evictable"
    where = "Cache directory" if isinstance(storage, FsStore) else "Shared store"
    lines = [
        (where, storage.location),
        ("Entries", f"{s.entries} files, {format_size(s.bytes)} ({evictable})"),
    ]
    lines += [
        (f"  {kind:<{width}}", f"{v.entries:>6}  {format_size(v.bytes):>10}")
        for kind, v in s.by_kind.items()
    ]
    if limit:
        used = f"{s.bytes / limit:.0%} used"
        lines.append(("Limit", f"{format_size(limit)} (max_size), {used}"))
    else:
        lines.append(("Limit", "none (max_size = 0)"))
    now = time.time()
    for label, item in (("Oldest entry", s.oldest), ("Newest entry", s.newest)):
        if item is not None:
            when = item.stored_at or item.last_access
            lines.append((label, f"{item.key.path}, stored {_ago(now, when)}"))
    _table(lines)


def _item_json(item: inventory.Item | None) -> dict[str, Any] | None:
    if item is None:
        return None
    return {"path": item.key.path, "size": item.size, "stored_at": _iso(item.stored_at)}


# ----- verify -----


async def run_verify(args: argparse.Namespace, config: Config, storage: Storage) -> int:
    # The same keys and checks as the server; on the cache directory the keys come from
    # a walk of the tree (what is on disk is what must be checked), without the stat and
    # sidecar read per object that a listing makes.
    keys = await inventory.keys_on_disk(storage)
    report = await audit.audit(storage, build_gate(config), purge=args.purge, keys=keys)
    left = [f for f in report.bad if not f.removed]
    if args.json:
        _emit(
            {
                "checked": report.checked,
                "bad": [_finding_json(f) for f in report.bad],
                "orphans": [_finding_json(f) for f in report.orphans],
                "ok": not left,
            }
        )
        return EXIT_FAILED if left else EXIT_OK
    _print_report(report, args.purge)
    return EXIT_FAILED if left else EXIT_OK


def _print_report(report: audit.Report, purged: bool) -> None:
    checked = ", ".join(f"{n} {kind}" for kind, n in sorted(report.checked.items()))
    print(f"Checked {sum(report.checked.values())} files ({checked or 'none'}).")
    for f in report.findings:
        label = "REMOVED" if f.removed else f.verdict.value.upper()
        print(f"  {label:<8}{f.key.path}: {f.reason}")
    bad, orphans = report.bad, report.orphans
    if not bad and not orphans:
        print("All entries verified.")
    elif bad and not purged:
        print(f"{_count(len(bad), 'bad entry', 'bad entries')}; `--purge` removes them.")
    elif bad:
        removed = _count(sum(f.removed for f in bad), "bad entry", "bad entries")
        print(f"{removed} removed; they are fetched again on use.")
    if orphans:
        print(
            f"{_count(len(orphans), 'tarball', 'tarballs')} could not be checked (registry file "
            "missing or bad); "
            "the next request for the package fetches it, then verify again."
        )


def _finding_json(f: audit.Finding) -> dict[str, Any]:
    return {
        "path": f.key.path,
        "kind": f.key.kind.value,
        "name": f.key.name,
        "version": f.key.version,
        "reason": f.reason,
        "removed": f.removed,
    }


# ----- rm -----


async def run_rm(args: argparse.Namespace, config: Config, storage: Storage) -> int:
    name, _, version = args.target.partition("@")
    matched = await inventory.matching_in(storage, name, version or None)
    removed = await inventory.remove_from(storage, matched)
    freed = sum(i.size for i in removed)
    if args.json:
        _emit({"removed": [_removed_json(i) for i in removed], "bytes": freed})
    elif removed:
        for item in removed:
            print(f"  removed {item.key.path} ({format_size(item.size)})")
        print(f"Removed {len(removed)} files, {format_size(freed)}.")
    else:
        print(f"Nothing cached for {args.target}.")
    return EXIT_OK if removed else EXIT_FAILED


def _removed_json(item: inventory.Item) -> dict[str, Any]:
    return {
        "path": item.key.path,
        "kind": item.key.kind.value,
        "size": item.size,
        "last_access": _iso(item.last_access),
    }


# ----- prune -----


async def run_prune(args: argparse.Namespace, config: Config, storage: Storage) -> int:
    # On the filesystem an object's time is its last use (the servers record it); in a
    # bucket it is when the object was stored, since hits are served from replicas' disks.
    if args.max_size is not None:
        plan = await inventory.plan_prune(storage, max_size=args.max_size)
    else:
        plan = await inventory.plan_prune(storage, older_than=time.time() - args.older_than)
    if args.dry_run:
        removed = list(plan.remove)
    else:
        removed = await inventory.remove_from(storage, plan.remove)
    freed = sum(i.size for i in removed)
    if args.json:
        _emit(
            {
                "dry_run": args.dry_run,
                "removed": [_removed_json(i) for i in removed],
                "bytes_freed": freed,
                "total_before": plan.total_before,
                "total_after": plan.total_before - freed,
                "notes": plan.notes,
            }
        )
        return EXIT_OK
    now = time.time()
    verb = "would remove" if args.dry_run else "removed"
    for item in removed:
        used = _ago(now, item.last_access)
        print(f"  {verb} {item.key.path} ({format_size(item.size)}, used {used})")
    print(
        f"{verb.capitalize()} {len(removed)} files, {format_size(freed)}: "
        f"{format_size(plan.total_before)} -> {format_size(plan.total_before - freed)}."
    )
    for note in plan.notes:
        print(f"Note: {note}.")
    return EXIT_OK


# ----- formatting -----


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _ago(now: float, then: float) -> str:
    seconds = max(0, int(now - then))
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds // span}{unit} ago"
    return f"{seconds}s ago"


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")
