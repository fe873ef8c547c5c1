"""Soak: `hexproxy serve --workers 2` under mixed load while upstream cycles through faults.

    python bench/soak.py --duration 600            # the full soak of issue 18 (10 minutes)
    python bench/soak.py --duration 40 --phase 4   # a short one

A fake upstream on loopback (fault_upstream.py) switches fault mode every ``--phase``
seconds (normal, refuse, black-hole, 500, trickle, truncate, tampered tarball,
tampered signature, and path-restricted variants); 50 clients, one request at a time
each, ask for registry files and tarballs (5% unknown names and releases, HEAD, right
and wrong If-None-Match, 3 slow readers); `hexproxy cache rm` removes a few releases
(and now and then the 2 MB tarball) every 10 s so misses keep happening.

It reports wrong answers (must be 0), the longest wait for a first byte per mode,
upstream requests per mode (and per key in the tampered-signature phases), the proxy's
RSS and open-file slopes, non-access log lines per request, ERROR lines and
tracebacks, and what `hexproxy cache verify` thinks of the cache afterwards. Every
process started is stopped (bench/procs.py), also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clients import tree_pids, tree_rss
from bench.fault_upstream import MODES
from bench.procs import REPO_ROOT, Processes, free_port, http_ok, wait_until
from bench.soak_load import Catalogue, Load

ROTATION = list(MODES)
PACKAGES = 40
RELEASES = 3
RM_EVERY = 10.0
SIZES = [1_000, 8_000, 40_000]  # per release: blob bytes (incompressible)


def build_catalogue(workdir: Path) -> tuple[Path, Path, Catalogue]:
    """A signed repository on disk, and what clients will ask of it."""
    from hexproxy.registry import public_key_pem
    from tests.support.keys import test_private_key
    from tests.support.repo import PackageSpec, build_repo

    key = test_private_key()
    rng = random.Random(18)
    specs = [
        # Outer tarballs of about 10, 20 and 50 KB.
        PackageSpec(f"pkg{n:03d}", f"1.{r}.0", files={"priv/blob": rng.randbytes(SIZES[r])})
        for n in range(PACKAGES)
        for r in range(RELEASES)
    ]
    specs.append(PackageSpec("bigpkg", "1.1.0", files={"priv/blob": rng.randbytes(2_000_000)}))
    files = build_repo(specs, key)
    root = workdir / "repo"
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    pem = workdir / "public_key.pem"
    pem.write_bytes(public_key_pem(key.public_key()))
    registry = {f"/{p}": b for p, b in files.items() if p.startswith("packages/")}
    tarballs = {f"/{p}": b for p, b in files.items() if p.startswith("tarballs/")}
    big = "/tarballs/bigpkg-1.1.0.tar"
    unknown = [f"/packages/nosuch{n}" for n in range(20)]
    unknown += [
        f"/tarballs/pkg{n:03d}-9.9.{v}.tar" for n in range(0, PACKAGES, 4) for v in range(5)
    ]
    unknown += [f"/tarballs/nosuch{n}-1.0.0.tar" for n in range(10)]
    return root, pem, Catalogue(registry, tarballs, unknown, big)


@dataclass
class Samples:
    times: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)

    def take(self, pid: int, started: float) -> None:
        self.times.append(time.monotonic() - started)
        self.rss.append(tree_rss(pid))
        self.fds.append(sum(_count_fds(each) for each in tree_pids(pid)))


def _count_fds(pid: int) -> int:
    try:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return 0


def slope_per_minute(times: list[float], values: list[int]) -> float:
    """Least-squares slope over the second half of the run (after warm-up), per minute."""
    half = len(times) // 2
    xs, ys = times[half:], values[half:]
    if len(xs) < 2:
        return 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    covar = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return 0.0 if var == 0 else 60 * covar / var


def _post(url: str) -> None:
    request = urllib.request.Request(url, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


async def rotate_faults(
    control: str, load: Load, modes: list[str], phase: float, until: float
) -> list[str]:
    """Switch the upstream's fault mode every ``phase`` seconds; returns the labels used."""
    labels = []
    for index in range(10_000):  # bounded by the deadline below
        if time.monotonic() >= until:
            break
        mode = modes[index % len(modes)]
        label = f"{index:03d}-{mode}"
        await asyncio.to_thread(_post, f"{control}/mode/{label}")
        load.mode = mode
        labels.append(label)
        await asyncio.sleep(min(phase, max(0.0, until - time.monotonic())))
    await asyncio.to_thread(_post, f"{control}/mode/end-normal")
    load.mode = "end"
    return labels


async def remove_releases(cache_dir: Path, catalogue: Catalogue, until: float) -> int:
    """`hexproxy cache rm` of a few releases every RM_EVERY seconds: misses keep coming."""
    rng = random.Random(12)
    tarballs = [p for p in catalogue.tarballs if p != catalogue.big]
    removed = 0
    for round_ in range(100_000):  # bounded by the deadline below
        await asyncio.sleep(min(RM_EVERY, max(0.0, until - time.monotonic())))
        if time.monotonic() >= until:
            break
        targets = rng.sample(tarballs, 3) + ([catalogue.big] if round_ % 3 == 0 else [])
        for path in targets:
            name, _, version = path.removeprefix("/tarballs/").removesuffix(".tar").partition("-")
            argv = [sys.executable, "-m", "hexproxy", "cache", "rm", f"{name}@{version}"]
            process = await asyncio.create_subprocess_exec(
                *argv, "--cache-dir", str(cache_dir),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
                cwd=REPO_ROOT,
            )  # fmt: skip
            try:
                removed += await asyncio.wait_for(process.wait(), 30) == 0
            except TimeoutError:
                process.kill()
                await process.wait()
    return removed


async def sample(pid: int, samples: Samples, until: float) -> None:
    started = time.monotonic()
    while time.monotonic() < until:  # bounded by the deadline
        samples.take(pid, started)
        await asyncio.sleep(1.0)


def start_fault_upstream(procs: Processes, root: Path, trickle_rate: float) -> tuple[str, str]:
    port_file = procs.workdir / "fault-upstream.ports"
    argv = [sys.executable, str(REPO_ROOT / "bench" / "fault_upstream.py")]
    argv += ["--root", str(root), "--port-file", str(port_file)]
    procs.start("fault_upstream", [*argv, "--trickle-rate", str(trickle_rate)])
    wait_until(lambda: len(port_file.read_text().split()) == 2, "the fault upstream")
    data, control = port_file.read_text().split()
    return f"http://127.0.0.1:{data}", f"http://127.0.0.1:{control}"


def start_proxy(
    procs: Processes, upstream: str, cache_dir: Path, pem: Path, phase: float
) -> tuple[str, Any]:
    port = free_port()
    argv = [sys.executable, "-m", "hexproxy", "serve", "--listen", f"127.0.0.1:{port}"]
    argv += ["--upstream", upstream, "--cache-dir", str(cache_dir), "--public-key", str(pem)]
    argv += ["--workers", "2"]
    config = procs.workdir / "hexproxy.toml"
    # A short phase gets a breaker pause no longer than itself, or the circuit opened in
    # one phase would hide the next phases' faults.
    retry_after = min(30.0, phase)
    config.write_text(f"[cache]\nregistry_ttl = 5\n[upstream]\nretry_after = {retry_after}\n")
    proc = procs.start("hexproxy", [*argv, "--config", str(config)])
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: http_ok(url + "/_hexproxy/health"), "hexproxy")
    return url, proc


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    root, pem, catalogue = build_catalogue(workdir)
    cache_dir = workdir / "cache"
    with Processes(workdir) as procs:
        upstream, control = start_fault_upstream(procs, root, args.trickle_rate)
        url, proxy = start_proxy(procs, upstream, cache_dir, pem, args.phase)
        load = Load(catalogue, url)
        samples = Samples()
        until = time.monotonic() + args.duration
        started = time.monotonic()
        results = await asyncio.gather(
            load.run(args.clients, until),
            rotate_faults(control, load, args.modes, args.phase, until),
            remove_releases(cache_dir, catalogue, until),
            sample(proxy.pid, samples, until),
        )
        elapsed = time.monotonic() - started
        stats = await asyncio.to_thread(_get_json, f"{control}/stats")
        procs.stop(proxy)  # SIGTERM: workers flush their logs
        leftover_tmp = sorted(p.name for p in (cache_dir / "tmp").glob("*"))
        verify = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "hexproxy", "cache", "verify", "--json",
             "--cache-dir", str(cache_dir), "--public-key", str(pem)],
            capture_output=True, cwd=REPO_ROOT, timeout=300, check=False,
        )  # fmt: skip
    log = (workdir / "hexproxy.log").read_text(errors="replace").splitlines()
    return summarize(
        load, results[1], results[2], samples, stats, log, elapsed, leftover_tmp, verify.stdout
    )


def summarize(
    load: Load,
    labels: list[str],
    removed: int,
    samples: Samples,
    stats: dict[str, dict[str, int]],
    log: list[str],
    elapsed: float,
    leftover_tmp: list[str],
    verify_json: bytes,
) -> dict[str, Any]:
    modes: dict[str, Any] = {}
    for mode in [*ROTATION, "end"]:
        s = load.per_mode.get(mode)
        if s is None:
            continue
        waits = sorted(s.first_byte)
        upstream_requests = sum(
            sum(paths.values()) for label, paths in stats.items() if label.endswith(f"-{mode}")
        )
        phases = sum(1 for label in labels if label.endswith(f"-{mode}"))
        modes[mode] = {
            "phases": phases,
            "requests": s.requests,
            "outcomes": dict(s.outcomes),
            "statuses": {str(k): v for k, v in sorted(s.statuses.items())},
            "first_byte_max_s": round(waits[-1], 3),
            "first_byte_p99_s": round(waits[int(len(waits) * 0.99)], 3),
            "worst_path": s.worst[1],
            "upstream_requests": upstream_requests,
            "upstream_requests_per_phase": round(upstream_requests / max(phases, 1), 1),
        }
    per_key = [
        n
        for label, paths in stats.items()
        if label.endswith("-tampered_signature")
        for path, n in paths.items()
        if path.startswith("/packages/")
    ]
    non_access = [line for line in log if " hexproxy.access: " not in line]
    verify = json.loads(verify_json or b"{}")
    return {
        "seconds": round(elapsed, 1),
        "requests": load.total,
        "requests_per_s": round(load.total / elapsed),
        "wrong": len(load.wrong),
        "wrong_examples": load.wrong[:10],
        "modes": modes,
        "tampered_signature_upstream_per_key_per_phase_max": max(per_key, default=0),
        "releases_removed": removed,
        "rss_mb_start_end": [round(samples.rss[0] / 2**20), round(samples.rss[-1] / 2**20)],
        "rss_mb_per_min_second_half": round(
            slope_per_minute(samples.times, samples.rss) / 2**20, 2
        ),
        "fds_start_end": [samples.fds[0], samples.fds[-1]],
        "fds_per_min_second_half": round(slope_per_minute(samples.times, samples.fds), 2),
        "log_lines_non_access": len(non_access),
        "log_lines_per_100_requests": round(100 * len(non_access) / max(load.total, 1), 3),
        "log_errors": sum(" ERROR " in line for line in non_access),
        "tracebacks": sum(line.startswith("Traceback") for line in log),
        "cache_verify_ok": verify.get("ok"),
        "cache_verify_bad": len(verify.get("bad", [])),
        "temp_files_left": len(leftover_tmp),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Soak: {result['seconds']} s, {result['requests']} requests "
        f"({result['requests_per_s']}/s), **{result['wrong']} wrong answers**, "
        f"{result['tracebacks']} tracebacks, {result['log_errors']} ERROR lines, "
        f"{result['log_lines_per_100_requests']} non-access log lines per 100 requests.",
        "",
        "| mode | phases | requests | failed | longest first byte | p99 | upstream requests"
        " (per phase) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, m in result["modes"].items():
        lines.append(
            f"| {mode} | {m['phases']} | {m['requests']} | {m['outcomes'].get('failed', 0)} "
            f"| {m['first_byte_max_s']} s | {m['first_byte_p99_s']} s "
            f"| {m['upstream_requests']} ({m['upstream_requests_per_phase']}) |"
        )
    lines += [
        "",
        "- tampered signature: at most "
        f"{result['tampered_signature_upstream_per_key_per_phase_max']}"
        " upstream requests per key in one phase",
        f"- RSS {result['rss_mb_start_end'][0]} -> {result['rss_mb_start_end'][1]} MB, "
        f"{result['rss_mb_per_min_second_half']} MB/min over the second half; open files "
        f"{result['fds_start_end'][0]} -> {result['fds_start_end'][1]}, "
        f"{result['fds_per_min_second_half']}/min",
        f"- cache verify afterwards: ok={result['cache_verify_ok']}, "
        f"{result['cache_verify_bad']} bad; {result['temp_files_left']} temp files left; "
        f"{result['releases_removed']} releases removed during the run",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (600)")
    parser.add_argument("--phase", type=float, default=30.0, help="seconds per fault mode (30)")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument(
        "--modes",
        type=lambda text: text.split(","),
        default=ROTATION,
        help=f"fault modes to rotate through, comma-separated ({','.join(ROTATION)})",
    )
    parser.add_argument("--trickle-rate", type=float, default=8192.0, help="bytes/s (8 KiB)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 unless issue 18's criteria hold (see below)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    unknown = [mode for mode in args.modes if mode not in MODES]
    if unknown:
        parser.error(f"unknown fault modes {unknown}; known: {', '.join(MODES)}")
    workdir = Path(tempfile.mkdtemp(prefix="hexproxy-soak-"))
    try:
        result = asyncio.run(soak(args, workdir))
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory: {workdir}", file=sys.stderr)
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    failures = problems(result) if args.check else []
    for failure in failures:
        print(f"CHECK FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def problems(result: dict[str, Any]) -> list[str]:
    """Issue 18's 'done when', as checks (the first-byte bound is the clients' 15 s)."""
    found = []
    if result["wrong"]:
        found.append(f"{result['wrong']} wrong answers: {result['wrong_examples'][:3]}")
    for mode, figures in result["modes"].items():
        if figures["first_byte_max_s"] >= 15:
            found.append(f"{mode}: a client waited {figures['first_byte_max_s']} s")
    if result["tampered_signature_upstream_per_key_per_phase_max"] > 6:
        found.append("tampered signature: more than 6 upstream requests for one key")
    if result["tracebacks"]:
        found.append(f"{result['tracebacks']} tracebacks in the log")
    if result["log_lines_per_100_requests"] >= 1:
        found.append(f"{result['log_lines_per_100_requests']} log lines per 100 requests")
    if not result["cache_verify_ok"] or result["temp_files_left"]:
        found.append("the cache is not clean afterwards")
    if result["requests"] < 1000:
        found.append(f"only {result['requests']} requests: the load did not run")
    return found


if __name__ == "__main__":
    sys.exit(main())
