"""``hexproxy export BUNDLE`` and ``hexproxy import BUNDLE``: carry a cache across a gap."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ..airgap.bundle import ALREADY_CACHED, BundleError, ExportReport, cache_keys, export_bundle
from ..airgap.bundle_import import ImportReport, import_bundle
from ..airgap.shared_bundle import bring_local, share_imported
from ..airgap.warm import summary_lines
from ..cache.policy import Cache
from ..cache.wiring import build_cache
from ..config import Config
from ..hosted import Hosted
from ..hosted.transfer import bundle_files
from ..store.cachekey import CacheKey
from ..store.storage import FileStorage
from ..units import format_size
from .options import EXIT_FAILED, EXIT_OK, config_args, error, usage_error
from .warm import InputError, add_input_args, load_inputs, open_cache, run_warm


def register(sub: Any) -> None:
    export = sub.add_parser(
        "export",
        help="write cached packages into a bundle (a tar file) to carry elsewhere",
        description="Write the whole cache, or what the lock files and specs need, into "
        "BUNDLE with a manifest of every file's sha256. Never contacts upstream.",
    )
    config_args(export)
    export.add_argument("bundle", type=Path, metavar="BUNDLE", help="the tar file to write")
    add_input_args(export)
    export.set_defaults(run=run_export)

    imp = sub.add_parser(
        "import",
        help="verify a bundle and add its good files to the cache",
        description="Check every file of BUNDLE (manifest digest, registry signature and "
        "origin, tarball checksum) and add those that pass; refused files are named.",
    )
    config_args(imp)
    imp.add_argument("bundle", type=Path, metavar="BUNDLE", help="the tar file to read")
    imp.set_defaults(run=run_import)


def run_export(args: argparse.Namespace, config: Config) -> int:
    try:
        keys = _export_keys(args, config)
    except InputError as exc:
        return usage_error(str(exc))
    if keys is None:
        return EXIT_FAILED
    try:
        report = export_bundle(
            FileStorage(config.cache_dir), keys, args.bundle, _hosted_files(args, config)
        )
    except BundleError as exc:
        error(exc.message)
        return EXIT_FAILED
    except OSError as exc:
        return usage_error(f"cannot write {args.bundle}: {exc.strerror or exc}")
    _print_export(args.bundle, report)
    return EXIT_OK


def _hosted_files(args: argparse.Namespace, config: Config) -> list[tuple[str, str, bytes]]:
    """Every hosted repository goes along with a whole-cache export."""
    if args.lock or args.specs or not config.hosted.repos:
        return []
    return [(path, "hosted", data) for path, data in bundle_files(Hosted.open(config))]


def _export_keys(args: argparse.Namespace, config: Config) -> list[CacheKey] | None:
    """Everything cached, or what the inputs need (None, after saying why, if it is
    not all cached: a bundle that silently lacks a package is found out too late)."""
    # Resolve against the cache alone: export must never fetch.
    offline = dataclasses.replace(
        config, upstream=dataclasses.replace(config.upstream, offline=True)
    )
    if not args.lock and not args.specs and config.store.kind == "s3":
        return asyncio.run(_bucket_keys(offline))
    if not args.lock and not args.specs:
        return cache_keys(FileStorage(config.cache_dir))
    inputs = load_inputs(args.lock, args.specs)
    report = asyncio.run(run_warm(offline, inputs, 8, args.all_versions))
    if report.failures:
        for line in summary_lines(report, "checked"):
            print(line, file=sys.stderr)
        error("the cache lacks what is listed above; run hexproxy warm first")
        return None
    return sorted(report.keys, key=lambda k: k.path)


async def _bucket_keys(offline: Config) -> list[CacheKey] | None:
    """Everything in the shared store, brought onto the local disk (verified) to export."""
    async with open_cache(offline) as cache:
        keys, problems = await bring_local(cache)
    for line in problems:
        print(f"not exported: {line}", file=sys.stderr)
    if problems:
        error("some objects in the shared store could not be verified; nothing exported")
        return None
    return keys


def _print_export(bundle: Path, report: ExportReport) -> None:
    print(
        f"exported {report.files} files to {bundle} "
        f"({format_size(report.bytes)}) in {report.seconds:.1f}s"
    )


def run_import(args: argparse.Namespace, config: Config) -> int:
    cache = build_cache(config)  # only for its verification gate: no upstream is started
    cache.storage.tmp.mkdir(parents=True, exist_ok=True)
    try:
        hosted = Hosted.open(config) if config.hosted.repos else None
        report = import_bundle(cache, args.bundle, hosted)
    except BundleError as exc:
        return usage_error(exc.message)
    _print_import(report)
    if cache.shared is not None:
        offered, failed = asyncio.run(_share(cache, report.added))
        print(f"shared {offered - failed} files with {cache.shared.location}")
        if failed:
            error(f"{failed} files could not be shared (the store failed); import again later")
            return EXIT_FAILED
    return EXIT_FAILED if report.refused else EXIT_OK


async def _share(cache: Cache, added: list[str]) -> tuple[int, int]:
    try:
        return await share_imported(cache, added)
    finally:
        await cache.close()


def _print_import(report: ImportReport) -> None:
    print(
        f"imported: {len(report.added)} added ({format_size(report.bytes)}), "
        f"{len(report.skipped)} skipped, {len(report.refused)} refused "
        f"in {report.seconds:.1f}s"
    )
    for path, reason in report.skipped:
        if reason != ALREADY_CACHED:
            print(f"skipped {path}: {reason}")
    for path, reason in report.refused:
        print(f"REFUSED {path}: {reason}", file=sys.stderr)
