"""Scale: what a cache of 10k or 100k entries costs the server and the ``cache`` commands.

    python bench/scale.py [--entries 10000,100000] [--duration 5] [--idle 20]
                          [--baseline CHECKOUT]

For each size it builds a cache with the project's own storage (``FileStorage.put``
of synthetic tarballs and really signed ``/packages/NAME`` files listing their
checksums; 10 cached releases per package, an 11th only upstream), then:

- builds the entry index (the one walk) and times it;
- starts ``hexproxy serve --workers 2`` against a fake upstream (eviction needs one:
  nothing is evicted offline) and reports readiness, the process tree's RSS, and its
  CPU over an idle window longer than the evictor's interval;
- measures warm hits with wrk (a Lua script cycling over 2,000 hot tarballs) while
  a client fetches cold tarballs (misses, which store and so push eviction), once
  with ``max_size = 0`` and once with a ``max_size`` 10% under the cache's size, so
  eviction rounds run during the load; nginx serves the same hot files for a ratio;
- starts once more without an index, to show readiness while it is built in the
  background;
- times ``cache stats``, ``ls --json``, ``verify`` and ``prune`` (with the peak RSS
  of each), and with ``--baseline`` the same commands from another checkout.

The build skips fsync (a benchmark cache need not survive a power cut); everything
listens on 127.0.0.1, and every process started is stopped (procs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clients import tree_cpu_seconds, tree_rss
from bench.procs import REPO_ROOT, Processes, free_port, http_ok, nginx_conf, wait_until
from bench.wrk import parse

RELEASES = 10  # cached per package (as in the measurement); one more upstream only
HOT = 2000  # tarballs the hit load cycles over


@dataclass
class Built:
    cache: Path
    upstream_root: Path
    pem: Path
    entries: int
    bytes: int
    hot: list[str]  # request paths of cached tarballs, the most recently stored
    cold: list[str]  # request paths only upstream has
    build_seconds: float
    index_seconds: float


def build(workdir: Path, entries: int) -> Built:
    from hexproxy.registry import Package, Release, build_package, public_key_pem
    from hexproxy.store.cachekey import package_key, tarball_key
    from hexproxy.store.storage import FileStorage, Meta
    from tests.support.keys import test_private_key

    key = test_private_key()
    pem = workdir / "public_key.pem"
    pem.write_bytes(public_key_pem(key.public_key()))
    cache, upstream_root = workdir / f"cache-{entries}", workdir / f"upstream-{entries}"
    files = FileStorage(cache)
    files.prepare()
    rng = random.Random(13)
    packages = max(1, entries // (RELEASES + 1))
    started, real_fsync = time.perf_counter(), os.fsync
    os.fsync = lambda fd: None  # see the module docstring
    hot: list[str] = []
    cold: list[str] = []
    total = 0
    try:
        for p in range(packages):
            name = f"pkg{p:06d}"
            bodies = {f"1.{r}.0": rng.randbytes(rng.randint(1000, 3000)) for r in range(11)}
            releases = tuple(
                Release(v, bytes(32), hashlib.sha256(b).digest()) for v, b in bodies.items()
            )
            registry = build_package(Package(name, "hexpm", releases), key)
            stored = time.time()
            files.put(package_key(name), registry, _meta(Meta, registry, stored))
            total += len(registry)
            for version, body in list(bodies.items())[:RELEASES]:
                files.put(tarball_key(name, version), body, _meta(Meta, body, stored))
                total += len(body)
                hot.append(f"/tarballs/{name}-{version}.tar")
            cold_version = f"1.{RELEASES}.0"
            target = upstream_root / "tarballs" / f"{name}-{cold_version}.tar"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(bodies[cold_version])
            (upstream_root / "packages").mkdir(exist_ok=True)
            (upstream_root / "packages" / name).write_bytes(registry)
            cold.append(f"/tarballs/{name}-{cold_version}.tar")
    finally:
        os.fsync = real_fsync
    build_seconds = time.perf_counter() - started
    hot = hot[-min(HOT, len(hot) // 4) :]
    for path in hot:  # upstream has them too, should eviction take one
        (upstream_root / path.lstrip("/")).write_bytes(files.path(_key(path)).read_bytes())
    started = time.perf_counter()
    files.build_index()
    index_seconds = time.perf_counter() - started
    files.index.close()
    return Built(
        cache,
        upstream_root,
        pem,
        packages * (RELEASES + 1),
        total,
        hot,
        cold[len(cold) // 4 :],  # not the oldest packages, which eviction takes first
        build_seconds,
        index_seconds,
    )


def _key(path: str) -> Any:
    from hexproxy.store.cachekey import key_for_request_path

    return key_for_request_path(path)


def _meta(meta_type: Any, body: bytes, when: float) -> Any:
    return meta_type(hashlib.sha256(body).hexdigest(), len(body), when, when)


# ----- the server -----


def start_proxy(
    procs: Processes, built: Built, upstream: str, max_size: int, source: Path = REPO_ROOT
) -> tuple[str, Any, float]:
    """``serve --workers 2``; returns its URL, process and seconds until ready."""
    port = free_port()
    config = procs.workdir / f"scale-{port}.toml"
    config.write_text(f"[cache]\nmax_size = {max_size}\n")
    argv = [sys.executable, "-m", "hexproxy", "serve", "--listen", f"127.0.0.1:{port}"]
    argv += ["--upstream", upstream, "--cache-dir", str(built.cache)]
    argv += ["--public-key", str(built.pem), "--workers", "2", "--config", str(config)]
    started = time.perf_counter()
    proc = procs.start(f"hexproxy-scale-{port}", argv, cwd=source)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(url + "/_hexproxy/ready"), "hexproxy ready", timeout=120)
    return url, proc, time.perf_counter() - started


def start_nginx(procs: Processes, built: Built) -> str:
    """nginx over hard links to the hot tarballs, at the paths clients ask for."""
    root = procs.workdir / f"nginx-root-{built.entries}"
    for path in built.hot:
        name, _, rest = path.removeprefix("/tarballs/").partition("-")
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(built.cache / "tarballs" / name / f"{name}-{rest}", target)
    port = free_port()
    conf_dir = procs.workdir / f"nginx-{port}"
    conf_dir.mkdir()
    for path in (procs.workdir, root, root / "tarballs"):
        path.chmod(0o755)
    (conf_dir / "nginx.conf").write_text(nginx_conf(root, conf_dir, port, 2))
    procs.start("nginx", ["nginx", "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf")])
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(url + built.hot[0]), "nginx")
    return url


def wrk_cycle(url: str, paths: list[str], workdir: Path, seconds: float) -> dict[str, Any]:
    script = workdir / "cycle.lua"
    listed = ",".join(json.dumps(p) for p in paths)
    script.write_text(
        f"local paths = {{{listed}}}\nlocal i = math.random(#paths)\n"
        "request = function()\n  i = i % #paths + 1\n"
        '  return wrk.format("GET", paths[i])\nend\n'
    )
    argv = ["wrk", "-t2", "-c16", f"-d{seconds:g}s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=seconds + 60)
    result = parse(out.stdout)
    return {"rps": result.rps, "p99_ms": result.p99_ms, "errors": result.errors}


class Misses(threading.Thread):
    """Fetches cold tarballs one after another: each is stored, so the cache grows."""

    def __init__(self, url: str, paths: list[str]) -> None:
        super().__init__(daemon=True)
        self.url, self.paths = url, paths
        self.stop = threading.Event()
        self.fetched = self.failed = 0

    def run(self) -> None:
        for path in self.paths:
            if self.stop.is_set():
                return
            try:
                with urllib.request.urlopen(self.url + path, timeout=30) as response:
                    response.read()
                self.fetched += 1
            except (OSError, urllib.error.HTTPError):
                self.failed += 1


def index_entries(cache: Path) -> int:
    from hexproxy.store.storage import FileStorage

    files = FileStorage(cache)
    try:
        return files.index.totals().entries
    finally:
        files.index.close()


def serve_phase(
    procs: Processes, built: Built, upstream: str, max_size: int, args: argparse.Namespace
) -> dict[str, Any]:
    url, proc, ready = start_proxy(procs, built, upstream, max_size)
    if max_size:  # the first round's evictions (down to LOW_WATER) are not the idle cost
        low = max_size * 0.9
        wait_until(lambda: index_bytes(built.cache) <= low, "the first eviction", 600)
    time.sleep(2)
    before = index_entries(built.cache)
    cpu = tree_cpu_seconds(proc.pid)
    time.sleep(args.idle)
    idle_cpu = tree_cpu_seconds(proc.pid) - cpu
    rss_idle = tree_rss(proc.pid)
    for path in built.hot:  # every worker opens the hot files once before timing
        urllib.request.urlopen(url + path, timeout=30).read()
    misses = Misses(url, built.cold)
    misses.start()
    hits = wrk_cycle(url, built.hot, procs.workdir, args.duration)
    misses.stop.set()
    misses.join(60)
    time.sleep(1.5)  # a round after the last miss
    row = {
        "max_size": max_size,
        "ready_s": ready,
        "idle_cpu_s": idle_cpu,
        "idle_s": args.idle,
        "rss_idle_mib": rss_idle / 2**20,
        "rss_after_mib": tree_rss(proc.pid) / 2**20,
        "misses": misses.fetched,
        "miss_errors": misses.failed,
        "entries_before_load": before,
        "entries_after_load": index_entries(built.cache),
        **hits,
    }
    procs.stop(proc)
    return row


def unindexed_start(procs: Processes, built: Built, upstream: str) -> dict[str, Any]:
    """Readiness with no index, and how long its background build takes."""
    from hexproxy.store.storage import FileStorage

    for leftover in built.cache.glob("index.sqlite3*"):
        leftover.unlink()
    started = time.perf_counter()
    _, proc, ready = start_proxy(procs, built, upstream, 0)
    files = FileStorage(built.cache)
    wait_until(files.index.built, "the background index build", timeout=600)
    built_after = time.perf_counter() - started
    files.index.close()
    procs.stop(proc)
    return {"ready_s": ready, "index_built_s": built_after}


def baseline_idle(procs: Processes, built: Built, upstream: str, source: Path) -> dict[str, Any]:
    """Another checkout's server, idle over a window that holds one of its minutely rounds."""
    _, proc, ready = start_proxy(procs, built, upstream, 0, source)
    time.sleep(2)
    window = 62.0
    cpu = tree_cpu_seconds(proc.pid)
    time.sleep(window)
    row = {"ready_s": ready, "idle_cpu_s": tree_cpu_seconds(proc.pid) - cpu, "idle_s": window}
    row["rss_idle_mib"] = tree_rss(proc.pid) / 2**20
    procs.stop(proc)
    return row


# ----- the cache commands -----

MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "use = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(code, time.perf_counter() - t, use.ru_maxrss, use.ru_utime + use.ru_stime)\n"
)


def cache_command(built: Built, source: Path, *argv: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "hexproxy", "cache", *argv]
    command += ["--cache-dir", str(built.cache), "--public-key", str(built.pem)]
    return _measured(command, source, timeout=3600)


def import_floor(source: Path) -> dict[str, Any]:
    """What any ``hexproxy`` command pays before it does anything: importing the CLI."""
    return _measured([sys.executable, "-c", "import hexproxy.cli"], source, timeout=600)


def _measured(command: list[str], source: Path, timeout: float) -> dict[str, Any]:
    """Run ``command`` in ``source`` under MEASURE: exit status, wall time, peak RSS, CPU."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *command],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    ).stdout.split()
    return {
        "exit": int(out[0]),
        "seconds": float(out[1]),
        "peak_rss_mib": int(out[2]) / 1024,
        "cpu_s": float(out[3]),
    }


def stats_in_process(built: Built) -> float:
    """``cache stats``'s own work, without the process around it."""
    from hexproxy.store import inventory
    from hexproxy.store.fs_backend import FsStore
    from hexproxy.store.storage import FileStorage

    files = FileStorage(built.cache)
    started = time.perf_counter()
    asyncio.run(inventory.stats_of(FsStore(files)))
    elapsed = time.perf_counter() - started
    files.index.close()
    return elapsed


def cache_commands(built: Built, source: Path) -> dict[str, dict[str, Any]]:
    limit = str(int(built.bytes * 0.85))
    return {
        "(import only)": import_floor(source),
        "stats": cache_command(built, source, "stats"),
        "ls --json": cache_command(built, source, "ls", "--json"),
        "verify": cache_command(built, source, "verify"),
        "prune --dry-run": cache_command(built, source, "prune", "--max-size", limit, "--dry-run"),
    }


# ----- one size, and the report -----


def bench_size(procs: Processes, entries: int, args: argparse.Namespace) -> dict[str, Any]:
    built = build(procs.workdir, entries)
    upstream = procs.fake_upstream(built.upstream_root)
    result: dict[str, Any] = {
        "entries": built.entries,
        "bytes": built.bytes,
        "build_s": built.build_seconds,
        "index_build_s": built.index_seconds,
        "load_before": os.getloadavg()[0],
    }
    nginx = start_nginx(procs, built)
    result["nginx"] = wrk_cycle(nginx, built.hot, procs.workdir, args.duration)
    result["no_limit"] = serve_phase(procs, built, upstream, 0, args)
    limit = int(index_bytes(built.cache) * 0.9)
    result["evicting"] = serve_phase(procs, built, upstream, limit, args)
    result["unindexed"] = unindexed_start(procs, built, upstream)
    result["commands"] = cache_commands(built, REPO_ROOT)
    result["stats_in_process_s"] = stats_in_process(built)
    if args.baseline:
        result["baseline_idle"] = baseline_idle(procs, built, upstream, args.baseline)
        result["baseline_commands"] = cache_commands(built, args.baseline)
    result["load_after"] = os.getloadavg()[0]
    procs.stop_all()
    return result


def index_bytes(cache: Path) -> int:
    from hexproxy.store.storage import FileStorage

    files = FileStorage(cache)
    try:
        return files.index.totals().bytes
    finally:
        files.index.close()


def render(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| entries | index build | ready (no index) | idle CPU | RSS idle → after load "
        "| hits req/s (x nginx) | p99 ms (x nginx) | evicting: req/s | evicting: p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        a, b, n = r["no_limit"], r["evicting"], r["nginx"]
        lines.append(
            f"| {r['entries']:,} | {r['index_build_s']:.1f} s "
            f"| {a['ready_s']:.2f} s ({r['unindexed']['ready_s']:.2f} s, built in "
            f"{r['unindexed']['index_built_s']:.1f} s) "
            f"| {a['idle_cpu_s']:.2f} s / {b['idle_cpu_s']:.2f} s per {a['idle_s']:g} s "
            f"| {a['rss_idle_mib']:.0f} → {a['rss_after_mib']:.0f} MiB "
            f"| {a['rps']:.0f} ({a['rps'] / n['rps']:.2f}x) "
            f"| {a['p99_ms']:.1f} ({a['p99_ms'] / n['p99_ms']:.2f}x) "
            f"| {b['rps']:.0f} | {b['p99_ms']:.1f} ({b['p99_ms'] / a['p99_ms']:.2f}x no limit) |"
        )
    lines += [
        "",
        "| entries | command | wall s | CPU s | peak RSS | baseline wall s | CPU s | RSS |",
    ]
    lines.insert(0, "")
    for r in results:
        if "baseline_idle" in r:
            b = r["baseline_idle"]
            lines.insert(
                0,
                f"- {r['entries']:,} entries, baseline server (no limit): "
                f"ready {b['ready_s']:.2f} s, idle CPU {b['idle_cpu_s']:.2f} s "
                f"per {b['idle_s']:g} s, RSS {b['rss_idle_mib']:.0f} MiB",
            )
        lines.insert(
            0,
            f"- {r['entries']:,} entries: `cache stats` query in process "
            f"{r['stats_in_process_s'] * 1000:.0f} ms; load {r['load_before']:.1f} "
            f"→ {r['load_after']:.1f}",
        )
    lines.append("|---|---|---|---|---|---|---|---|")
    for r in results:
        base = r.get("baseline_commands", {})
        for name, c in r["commands"].items():
            old = base.get(name)
            tail = (
                f"{old['seconds']:.2f} | {old['cpu_s']:.2f} | {old['peak_rss_mib']:.0f} MiB"
                if old
                else "- | - | -"
            )
            lines.append(
                f"| {r['entries']:,} | `cache {name}` | {c['seconds']:.2f} | {c['cpu_s']:.2f} "
                f"| {c['peak_rss_mib']:.0f} MiB | {tail} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="hexproxy at 10k/100k cached entries")
    parser.add_argument(
        "--entries", type=lambda s: [int(n) for n in s.split(",")], default=[10_000]
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--idle", type=float, default=20.0, help="idle window, seconds")
    parser.add_argument("--baseline", type=lambda s: Path(s).resolve(), help="another checkout")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="hexproxy-scale-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        for entries in args.entries:
            result = bench_size(procs, entries, args)
            print(json.dumps(result), flush=True)
            results.append(result)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print("\n".join(render(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
