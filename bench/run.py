"""hexproxy benchmarks: warm hits against nginx, cold-miss coalescing, memory.

    python bench/run.py all        # warm, cold and memory; writes bench/RESULTS.md
    python bench/run.py warm       # warm hits only (prints the table)
    python bench/run.py cold       # 200 concurrent misses through a throttled upstream
    python bench/run.py memory     # peak RSS with 100 concurrent 12 MB downloads
    python bench/run.py profile    # py-spy profile of one worker under wrk (small hits)
    python bench/run.py shared     # the S3 backend beside the filesystem one (needs weed)
    python bench/run.py scale      # 10k cached entries: bench/scale.py (its flags: see there)

Everything listens on 127.0.0.1 only, every step has a timeout, and every process
started here is stopped on the way out (see procs.py). Needs ``nginx`` and ``wrk``
on PATH (Debian: ``apt-get install nginx-light wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import report, scale
from bench.clients import PeakSampler, download_many, tree_cpu_seconds, tree_rss
from bench.procs import Processes
from bench.shared import bench_shared
from bench.shared import render as render_shared
from bench.wrk import run_wrk

SMALL = "/packages/tiny"
MEDIUM = "/tarballs/medium-0.1.0.tar"
BIG = "/tarballs/big-1.0.0.tar"
# label -> (path, bytes of incompressible content in the tarball, 0 for none)
OBJECTS = {
    "small /packages/tiny": (SMALL, 0),
    "10 KB tarball": ("/tarballs/ten-1.0.0.tar", 4 * 1000),  # tar pads it to 10,240 B
    "100 KB tarball": (MEDIUM, 100 * 1000),
    "1 MB tarball": ("/tarballs/mega-1.0.0.tar", 1000 * 1000),
    "12 MB tarball": (BIG, 12 * 1000 * 1000),
}
TARGETS = {label: path for label, (path, _) in OBJECTS.items()}


def build_repository(workdir: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """A signed repository with the benchmark objects, on disk as upstream lays it out."""
    from hexproxy.registry import public_key_pem
    from tests.support.keys import test_private_key
    from tests.support.repo import PackageSpec, build_repo

    key = test_private_key()
    rng = __import__("random").Random(6)  # incompressible, yet the same every run
    specs = [PackageSpec("tiny", "1.0.0")]
    for path, size in OBJECTS.values():
        if size:
            name, version = path.rsplit("/", 1)[1].removesuffix(".tar").split("-")
            specs.append(PackageSpec(name, version, files={"priv/blob": rng.randbytes(size)}))
    files = build_repo(specs, key)
    root = workdir / "repo"
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    pem = workdir / "public_key.pem"
    pem.write_bytes(public_key_pem(key.public_key()))
    return root, pem, files


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:
        return bytes(resp.read())


def upstream_counts(upstream: str) -> dict[str, int]:
    return dict(json.loads(fetch(upstream + "/__stats")))


# ----- warm hits -----


def warm_servers(
    procs: Processes, ctx: dict[str, Any], args: argparse.Namespace
) -> dict[str, tuple[str, Any]]:
    """Every server of the comparison, all running at once so rounds can interleave:
    nginx and hexproxy with 2 workers, plus the ``--extra`` ones."""
    servers = {"nginx": procs.nginx(ctx["root"], workers=2)}
    for workers in (2, 1):
        if workers == 1 and "1w" not in args.extra:
            continue
        servers[f"hexproxy-{workers}w"] = procs.hexproxy(
            upstream=ctx["upstream"],
            cache_dir=ctx["workdir"] / f"cache-warm-{workers}w",
            public_key=ctx["pem"],
            workers=workers,
        )
    if ctx.get("baseline"):  # the same server from another checkout, for before/after
        servers[report.BASELINE] = procs.hexproxy(
            upstream=ctx["upstream"],
            cache_dir=ctx["workdir"] / "cache-warm-baseline",
            public_key=ctx["pem"],
            workers=2,
            source=ctx["baseline"],
        )
    if "bare" in args.extra:
        servers["bare-aiohttp-2w"] = procs.bare_aiohttp(ctx["root"] / SMALL.lstrip("/"), workers=2)
    targets = [TARGETS[t] for t in args.targets]
    for kind, (url, _) in servers.items():
        for path in targets:
            if kind.startswith("bare") and path != SMALL:
                continue
            assert fetch(url + path) == ctx["files"][path.lstrip("/")], f"{kind} {path}"
            # Every worker loads its in-memory copies (and hot tarballs) on its first requests.
            run_wrk(url + path, connections=16, seconds=1)
    return servers


def _measure(url: str, pid: int, conc: int, seconds: float) -> dict[str, Any]:
    cpu = tree_cpu_seconds(pid)
    result = run_wrk(url, connections=conc, seconds=seconds)
    cpu = tree_cpu_seconds(pid) - cpu
    row = asdict(result)
    row["mb_per_s"] = result.mb_per_s
    row["cpu_us_per_request"] = cpu / max(result.requests, 1) * 1e6
    row["load"] = os.getloadavg()[0]  # the machine's 1-minute load as the round ended
    return row


def bench_warm(
    procs: Processes, ctx: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Rounds interleave the servers (nginx, hexproxy 2w, ...) so that a noisy neighbour
    hurts all of them alike. Each row is one server's median round; its ratio to nginx is
    the median of the per-round ratios, each against nginx's run just before it (the
    steadiest figure on a shared machine)."""
    if "upstream" not in ctx:
        ctx["upstream"] = procs.fake_upstream(ctx["root"])
    servers = warm_servers(procs, ctx, args)
    rows: list[dict[str, Any]] = []
    for label in args.targets:
        path = TARGETS[label]
        for conc in args.concurrency:
            rounds: dict[str, list[dict[str, Any]]] = {kind: [] for kind in servers}
            for _ in range(args.repeat):
                for kind, (url, proc) in servers.items():
                    if kind.startswith("bare") and path != SMALL:
                        continue
                    rounds[kind].append(_measure(url + path, proc.pid, conc, args.duration))
            rows += _summarise(label, conc, rounds)
    procs.stop_all(keep="fake_upstream")
    return rows


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _summarise(
    label: str, conc: int, rounds: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    rows = []
    nginx = rounds["nginx"]
    for kind, measured in rounds.items():
        if not measured:
            continue
        median = sorted(measured, key=lambda r: r["rps"])[len(measured) // 2]
        row = {"server": kind, "target": label, "connections": conc, **median}
        row["rounds_rps"] = [r["rps"] for r in measured]
        row["rounds_load"] = [r["load"] for r in measured]
        row["ratio"] = _median([m["rps"] / n["rps"] for m, n in zip(measured, nginx, strict=True)])
        row["p99_ratio"] = _median(
            [m["p99_ms"] / n["p99_ms"] for m, n in zip(measured, nginx, strict=True)]
        )
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ----- cold misses -----


async def _cold_once(procs: Processes, ctx: dict[str, Any], workers: int) -> dict[str, Any]:
    upstream = procs.fake_upstream(ctx["root"], rate=ctx["rate"])
    expected = hashlib.sha256(ctx["files"][BIG.lstrip("/")]).hexdigest()
    direct = await download_many(upstream + BIG, expected, 1, seconds=120)
    before = upstream_counts(upstream).get(BIG, 0)
    cache = ctx["workdir"] / f"cache-cold-{workers}w-{time.monotonic_ns()}"
    url, proc = procs.hexproxy(
        upstream=upstream, cache_dir=cache, public_key=ctx["pem"], workers=workers
    )
    idle = tree_rss(proc.pid)
    with PeakSampler(proc.pid) as sampler:
        got = await download_many(url + BIG, expected, ctx["clients"], seconds=300)
    counts = upstream_counts(upstream)
    procs.stop_all()
    return {
        "workers": workers,
        "clients": ctx["clients"],
        "upstream_tarball_requests": counts.get(BIG, 0) - before,
        "upstream_package_requests": counts.get("/packages/big", 0),
        "direct_seconds": direct.seconds,
        "proxy_seconds": got.seconds,
        "ok": got.ok,
        "wrong": got.wrong,
        "failed": got.failed,
        "idle_rss": idle,
        "peak_rss": sampler.peak,
    }


def bench_cold(
    procs: Processes, ctx: dict[str, Any], args: argparse.Namespace
) -> list[dict[str, Any]]:
    rows = []
    for workers in (2, 1):
        row = asyncio.run(_cold_once(procs, ctx, workers))
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


# ----- memory -----


async def _memory(procs: Processes, ctx: dict[str, Any]) -> dict[str, Any]:
    upstream = procs.fake_upstream(ctx["root"], rate=ctx["memory_rate"])
    expected = hashlib.sha256(ctx["files"][BIG.lstrip("/")]).hexdigest()
    cache = ctx["workdir"] / f"cache-memory-{time.monotonic_ns()}"
    url, proc = procs.hexproxy(upstream=upstream, cache_dir=cache, public_key=ctx["pem"], workers=2)
    await asyncio.sleep(1.0)  # let the workers settle before calling it idle
    idle = tree_rss(proc.pid)
    out: dict[str, Any] = {"workers": 2, "clients": 100, "idle_rss": idle}
    for phase in ("cold", "warm"):
        with PeakSampler(proc.pid) as sampler:
            got = await download_many(url + BIG, expected, 100, seconds=300)
        out[phase] = {
            "peak_rss": sampler.peak,
            "above_idle": sampler.peak - idle,
            "seconds": got.seconds,
            "ok": got.ok,
            "wrong": got.wrong,
            "failed": got.failed,
        }
    procs.stop_all()
    print(json.dumps(out), flush=True)
    return out


def bench_memory(procs: Processes, ctx: dict[str, Any], args: argparse.Namespace) -> Any:
    return asyncio.run(_memory(procs, ctx))


# ----- profile -----


def profile(procs: Processes, ctx: dict[str, Any], args: argparse.Namespace) -> None:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    cache = ctx["workdir"] / "cache-profile"
    url, proc = procs.hexproxy(
        upstream=ctx["upstream"], cache_dir=cache, public_key=ctx["pem"], workers=1
    )
    path = TARGETS[args.target]
    fetch(url + path)
    out = Path(args.output).resolve()
    spy = procs.start(
        "py-spy",
        [
            py_spy,
            "record",
            "--pid",
            str(proc.pid),
            "--duration",
            str(int(args.duration) + 1),
            "--format",
            args.format,
            "--output",
            str(out),
            "--nonblocking",
            "--rate",
            "400",
        ],
    )
    time.sleep(1)
    print(run_wrk(url + path, connections=16, seconds=args.duration))
    spy.wait(args.duration + 60)
    print(f"profile written to {out}")


# ----- driver -----


def context(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    root, pem, files = build_repository(workdir)
    return {
        "workdir": workdir,
        "root": root,
        "pem": pem,
        "files": files,
        "clients": args.clients,
        "rate": args.rate * 1e6,
        "memory_rate": args.memory_rate * 1e6,
        "baseline": args.baseline,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="hexproxy benchmarks (loopback only)")
    parser.add_argument("command", choices=("all", *MODES, "profile", "shared", "scale"))
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per wrk run")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds per figure")
    parser.add_argument(
        "--concurrency", type=lambda s: [int(c) for c in s.split(",")], default=[16, 128]
    )
    parser.add_argument("--clients", type=int, default=200, help="concurrent cold misses")
    parser.add_argument("--rate", type=float, default=12.0, help="upstream MB/s for cold misses")
    parser.add_argument(
        "--memory-rate", type=float, default=50.0, help="upstream MB/s for the memory test"
    )
    parser.add_argument("--target", choices=tuple(TARGETS), default="small /packages/tiny")
    parser.add_argument(
        "--targets",
        type=lambda s: [t.strip() for t in s.split(",")],
        default=list(TARGETS),
        help=f"warm: which objects, comma-separated (default all: {', '.join(TARGETS)})",
    )
    parser.add_argument(
        "--extra",
        type=lambda s: set(s.split(",")) - {""},
        default=set(),
        help="warm: also run 1w (hexproxy, 1 worker) and/or bare (bare aiohttp, 2 workers)",
    )
    parser.add_argument("--format", default="speedscope", help="py-spy output format")
    parser.add_argument("--output", default="profile.json", help="py-spy output file")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "RESULTS.md")
    parser.add_argument(
        "--baseline",
        type=lambda s: Path(s).resolve(),
        help="warm: also run hexproxy (2 workers) from this checkout, in the same rounds",
    )
    return parser.parse_args(argv)


Mode = Callable[[Processes, dict[str, Any], argparse.Namespace], Any]
# The measurements, in the order `all` runs them. Each returns what report.SECTIONS
# renders under the same name: a new one is a function here and a renderer there.
MODES: dict[str, Mode] = {"warm": bench_warm, "cold": bench_cold, "memory": bench_memory}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "scale":  # its own runner and report
        return scale.main(["--duration", str(args.duration)])
    started = time.time()
    with (
        tempfile.TemporaryDirectory(prefix="hexproxy-bench-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        ctx = context(Path(tmp), args)
        results: dict[str, Any] = {"args": vars(args) | {"results": str(args.results)}}
        results["load_before"] = os.getloadavg()
        if args.command in ("profile", "shared"):
            ctx["upstream"] = procs.fake_upstream(ctx["root"])
        if args.command == "profile":
            profile(procs, ctx, args)
            return 0
        if args.command == "shared":
            print("\n".join(render_shared(bench_shared(procs, ctx, TARGETS, args))))
            return 0
        for name, mode in MODES.items():
            if args.command in ("all", name):
                results[name] = mode(procs, ctx, args)
                procs.stop_all()
                ctx.pop("upstream", None)
        results["load_after"] = os.getloadavg()
        results["elapsed"] = time.time() - started
        text = report.render(results, sys.argv)
        if args.command == "all":
            args.results.write_text(text)
            print(f"wrote {args.results}")
        else:
            print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
