"""Cold misses across workers: N simultaneous requests for one uncached object, through
``hexproxy serve --workers 4``, and how many requests reached upstream.

    python bench/coalesce.py                      # registry files and a tarball, 4 workers
    python bench/coalesce.py --source ../main     # the same with another checkout's hexproxy

Each object gets a fresh cache directory and its own fresh upstream counters; the fake
upstream waits ``--delay`` seconds before each answer, so the misses really overlap
the fetch (on loopback it would otherwise be over before most clients have connected).
Every client uses its own connection, so the kernel spreads them over the workers.
``bench/run.py cold`` measures the 12 MB tarball at 1 and 2 workers, with memory.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clients import download_many
from bench.procs import Processes
from bench.run import build_repository, upstream_counts

# The object asked for, and what else its miss makes the proxy fetch.
OBJECTS = {
    "/packages/tiny": [],
    "/names": [],
    "/versions": [],
    "/tarballs/medium-0.1.0.tar": ["/packages/medium"],
}


async def _one(procs: Processes, ctx: dict[str, Any], path: str) -> dict[str, Any]:
    upstream = procs.fake_upstream(ctx["root"], delay=ctx["delay"])
    cache = ctx["workdir"] / f"cache-coalesce-{time.monotonic_ns()}"
    url, _ = procs.hexproxy(
        upstream=upstream,
        cache_dir=cache,
        public_key=ctx["pem"],
        workers=ctx["workers"],
        source=ctx["source"],
    )
    expected = hashlib.sha256(ctx["files"][path.lstrip("/")]).hexdigest()
    got = await download_many(url + path, expected, ctx["clients"], seconds=120)
    counts = upstream_counts(upstream)
    procs.stop_all()
    return {
        "object": path,
        "workers": ctx["workers"],
        "clients": ctx["clients"],
        "upstream_requests": counts.get(path, 0),
        "also_fetched": {extra: counts.get(extra, 0) for extra in OBJECTS[path]},
        "ok": got.ok,
        "wrong": got.wrong,
        "failed": got.failed,
        "statuses": got.statuses,
        "seconds": got.seconds,
    }


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| object | workers | clients | upstream requests | correct / wrong / failed | s |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        extra = "".join(f" (+ {p}: {n})" for p, n in r["also_fetched"].items())
        lines.append(
            f"| `{r['object']}` | {r['workers']} | {r['clients']} "
            f"| **{r['upstream_requests']}**{extra} | {r['ok']} / {r['wrong']} / {r['failed']} "
            f"| {r['seconds']:.2f} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--delay", type=float, default=0.2, help="upstream seconds per answer")
    parser.add_argument("--source", type=lambda s: Path(s).resolve(), default=None)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="hexproxy-coalesce-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        root, pem, files = build_repository(Path(tmp))
        ctx: dict[str, Any] = {
            "workdir": Path(tmp),
            "root": root,
            "pem": pem,
            "files": files,
            "workers": args.workers,
            "clients": args.clients,
            "delay": args.delay,
            "source": args.source or Path(__file__).resolve().parents[1],
        }
        rows = []
        for path in OBJECTS:
            row = asyncio.run(_one(procs, ctx, path))
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
