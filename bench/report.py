"""Rendering a benchmark run as bench/RESULTS.md: figures, machine, versions, commands."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MB = 1e6
MiB = 1024 * 1024

# What users rely on (from the project brief); checked against every run.
SMALL_TARGET = 0.7
BIG_TARGET = 0.95
MEMORY_TARGET = 150 * MiB


def _cmd(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    return (
        (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr) else ""
    )


def _pkg(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine() -> list[str]:
    meminfo = Path("/proc/meminfo").read_text().splitlines()[0].split()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return [
        f"- CPU: {model}, {os.cpu_count()} cores visible",
        f"- Memory: {int(meminfo[1]) / 1024 / 1024:.1f} GiB",
        f"- Kernel: {platform.system()} {platform.release()}",
    ]


def versions() -> list[str]:
    from hexproxy import __version__

    commit = _cmd(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "hexproxy"])
    return [
        f"- hexproxy {__version__} at commit {commit}"
        + (" (with uncommitted changes under hexproxy/)" if dirty else ""),
        f"- Python {platform.python_version()}, aiohttp {_pkg('aiohttp')}, uvloop {_pkg('uvloop')}",
        f"- {_cmd(['nginx', '-v'])}",
        f"- {_cmd(['wrk', '-v'])}",
    ]


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def _find(rows: list[dict[str, Any]], server: str, target: str, conc: int) -> dict[str, Any] | None:
    for row in rows:
        if (row["server"], row["target"], row["connections"]) == (server, target, conc):
            return row
    return None


def _cell(row: dict[str, Any] | None, nginx: dict[str, Any], big: bool) -> str:
    if row is None:
        return "n/a"
    rate = f"{row['mb_per_s']:,.0f} MB/s" if big else f"{row['rps']:,.0f} req/s"
    ratio = row["rps"] / nginx["rps"] if nginx["rps"] else 0.0
    return (
        f"{rate}, **{ratio:.2f}x**, {row['p50_ms']:.2f}/{row['p99_ms']:.2f} ms, "
        f"{row['cpu_us_per_request']:,.0f} µs"
    )


BASELINE = "hexproxy-2w-baseline"  # another checkout, measured in the same rounds


def warm_table(rows: list[dict[str, Any]]) -> list[str]:
    kinds = ["hexproxy-2w", "hexproxy-1w", "bare-aiohttp-2w"]
    titles = "| hexproxy 2 workers | hexproxy 1 worker | bare aiohttp, 2 workers |"
    if any(row["server"] == BASELINE for row in rows):
        kinds.insert(1, BASELINE)
        titles = titles.replace(" | hexproxy 1", " | baseline (--baseline), 2 workers | hexproxy 1")
    lines = [
        "Each cell: throughput, ratio to nginx, p50/p99 latency, server CPU time per request.",
        "",
        "| object | conns | nginx (2 workers) " + titles,
        "|---|---:|---" + "|---" * len(kinds) + "|",
    ]
    seen: list[tuple[str, int]] = []
    for row in rows:
        if (row["target"], row["connections"]) not in seen:
            seen.append((row["target"], row["connections"]))
    for target, conc in seen:
        nginx = _find(rows, "nginx", target, conc)
        assert nginx is not None
        big = target != "small /packages/tiny"
        nginx_rate = f"{nginx['mb_per_s']:,.0f} MB/s" if big else f"{nginx['rps']:,.0f} req/s"
        cells = [_cell(_find(rows, kind, target, conc), nginx, big) for kind in kinds]
        lines.append(
            f"| {target} | {conc} | {nginx_rate}, {nginx['p50_ms']:.2f}/{nginx['p99_ms']:.2f} ms, "
            f"{nginx['cpu_us_per_request']:,.0f} µs | " + " | ".join(cells) + " |"
        )
    errors = sum(row["errors"] for row in rows)
    lines.append("")
    lines.append(f"Errors (socket errors + non-2xx answers) over all warm runs: {errors}.")
    return lines


def warm_checks(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for target, goal in (("small /packages/tiny", SMALL_TARGET), ("12 MB tarball", BIG_TARGET)):
        for row in rows:
            if row["server"] != "hexproxy-2w" or row["target"] != target:
                continue
            nginx = _find(rows, "nginx", target, row["connections"])
            assert nginx is not None
            ratio = row["rps"] / nginx["rps"]
            mark = "met" if ratio >= goal else "NOT met"
            out.append(
                f"- {target}, {row['connections']} connections, 2 workers: "
                f"{ratio:.2f}x nginx (target ≥ {goal}x): {mark}"
            )
    return out


def cold_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| workers | clients | upstream tarball requests | one direct fetch s "
        "| all clients through proxy s | correct / wrong / failed | peak RSS MB |",
        "|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['clients']} | **{r['upstream_tarball_requests']}** "
            f"| {r['direct_seconds']:.2f} | {r['proxy_seconds']:.2f} "
            f"| {r['ok']} / {r['wrong']} / {r['failed']} | {r['peak_rss'] / MiB:.0f} |"
        )
    return lines


def memory_table(m: dict[str, Any]) -> list[str]:
    lines = [
        f"Idle RSS (parent + {m['workers']} workers): {m['idle_rss'] / MiB:.0f} MiB.",
        "",
        "| phase | peak RSS MiB | above idle MiB | time s | correct / wrong / failed | target |",
        "|---|---:|---:|---:|---|---|",
    ]
    for phase in ("cold", "warm"):
        p = m[phase]
        mark = "met" if p["above_idle"] < MEMORY_TARGET else "NOT met"
        lines.append(
            f"| {phase} | {p['peak_rss'] / MiB:.0f} | {p['above_idle'] / MiB:.0f} "
            f"| {p['seconds']:.2f} | {p['ok']} / {p['wrong']} / {p['failed']} "
            f"| < 150 MiB above idle: {mark} |"
        )
    return lines


def render(results: dict[str, Any], argv: list[str]) -> str:
    args = results["args"]
    lines = [
        "# hexproxy benchmark results",
        "",
        "Generated by `bench/run.py` (see bench/README.md for what each figure means).",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        f"- Command: `{shlex.join(['python', *argv])}` (took {results['elapsed']:.0f} s)",
        *machine(),
        *versions(),
        "",
    ]
    if "warm" in results:
        lines += [
            "## Warm hits: hexproxy against nginx",
            "",
            f"`wrk -t2 -c<conns> -d{args['duration']:g}s --latency URL`, one object per run. "
            "All servers run at once on the same cores as wrk; rounds interleave them "
            f"({args['repeat']} rounds, median shown) so load from other processes hits "
            "all alike. nginx: 2 worker processes, `sendfile on`, access log on, serving "
            "the repository directory. hexproxy: default configuration (access log on), "
            "cache warmed first. Bare aiohttp: one handler returning the same bytes, no "
            "logging (bench/bare_aiohttp.py): the floor under any aiohttp server.",
            "",
            *warm_table(results["warm"]),
            "",
            *warm_checks(results["warm"]),
            "",
        ]
    if "cold" in results:
        lines += [
            "## Cold misses and coalescing",
            "",
            f"{args['clients']} simultaneous GETs of one uncached 12 MB tarball, the fake "
            f"upstream throttled to {args['rate']:g} MB/s per response. Every body is checked "
            "against the tarball's sha256.",
            "",
            *cold_table(results["cold"]),
            "",
        ]
    if "memory" in results:
        lines += [
            "## Memory",
            "",
            "Peak resident memory of the proxy process tree (parent + workers, summed VmRSS, "
            "so pages shared after fork count twice: an upper bound), sampled every 10 ms "
            "while 100 clients download the 12 MB tarball: first cold (one upstream fetch "
            f"streamed to all, upstream at {args['memory_rate']:g} MB/s), then warm "
            "(sendfile from the cache).",
            "",
            *memory_table(results["memory"]),
            "",
        ]
    return "\n".join(lines)
