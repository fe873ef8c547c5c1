"""Rendering a benchmark run as bench/RESULTS.md: figures, machine, versions, commands."""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MB = 1e6
MiB = 1024 * 1024

# Issue 13's targets, checked against every run: objects up to 1 MiB at least as many
# req/s as nginx with p99 at most 1.5x nginx's; 12 MB at 0.95x nginx's MB/s.
SMALL_TARGET = 1.0
SMALL_P99_TARGET = 1.5
BIG_TARGET = 0.95
MEMORY_TARGET = 150 * MiB
BIG_OBJECT = "12 MB tarball"


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


def _rate(row: dict[str, Any]) -> str:
    return f"{row['rps']:,.0f} req/s, {row['mb_per_s']:,.0f} MB/s"


def _cell(row: dict[str, Any] | None, nginx: dict[str, Any]) -> str:
    if row is None:
        return "n/a"
    ratio = row.get("ratio", row["rps"] / nginx["rps"] if nginx["rps"] else 0.0)
    p99_ratio = row.get("p99_ratio", row["p99_ms"] / nginx["p99_ms"] if nginx["p99_ms"] else 0.0)
    return (
        f"{_rate(row)}, **{ratio:.2f}x**; p99 {row['p99_ms']:.2f} ms ({p99_ratio:.2f}x); "
        f"{row['cpu_us_per_request']:,.0f} µs"
    )


_TITLES = {
    "hexproxy-2w": "hexproxy 2 workers",
    "hexproxy-2w-baseline": "baseline (--baseline), 2 workers",
    "hexproxy-1w": "hexproxy 1 worker",
    "bare-aiohttp-2w": "bare aiohttp, 2 workers",
}


BASELINE = "hexproxy-2w-baseline"  # another checkout, measured in the same rounds


def warm_table(rows: list[dict[str, Any]]) -> list[str]:
    present = {row["server"] for row in rows}
    kinds = [kind for kind in _TITLES if kind in present]
    titles = "| " + " | ".join(_TITLES[kind] for kind in kinds) + " |"
    lines = [
        "Each cell: throughput, **ratio to nginx** (median of the per-round ratios), p99 "
        "latency (and its ratio to nginx's), server CPU time per request (all processes).",
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
        cells = [_cell(_find(rows, kind, target, conc), nginx) for kind in kinds]
        lines.append(
            f"| {target} | {conc} | {_rate(nginx)}; p99 {nginx['p99_ms']:.2f} ms; "
            f"{nginx['cpu_us_per_request']:,.0f} µs | " + " | ".join(cells) + " |"
        )
    errors: dict[str, int] = {}
    for row in rows:
        errors[row["server"]] = errors.get(row["server"], 0) + row["errors"]
    loads = [load for row in rows for load in row.get("rounds_load", [])]
    lines.append("")
    lines.append(
        "Errors (socket errors, wrk's 2 s timeouts included, + non-2xx answers) in the median "
        "rounds: " + ", ".join(f"{server} {n}" for server, n in errors.items()) + "."
    )
    if loads:
        lines.append(
            f"Load average (1 min) at the end of the rounds: {min(loads):.2f} to "
            f"{max(loads):.2f}, median {sorted(loads)[len(loads) // 2]:.2f}."
        )
    return lines


def warm_checks(rows: list[dict[str, Any]]) -> list[str]:
    out = []
    for row in rows:
        if row["server"] != "hexproxy-2w":
            continue
        nginx = _find(rows, "nginx", row["target"], row["connections"])
        assert nginx is not None
        ratio = row.get("ratio", row["rps"] / nginx["rps"])
        p99 = row.get("p99_ratio", row["p99_ms"] / nginx["p99_ms"])
        if row["target"] == BIG_OBJECT:
            goal, met = f"≥ {BIG_TARGET}x MB/s", ratio >= BIG_TARGET
            said = f"{ratio:.2f}x nginx's MB/s"
        else:
            goal = f"≥ {SMALL_TARGET}x req/s, p99 ≤ {SMALL_P99_TARGET}x"
            met = ratio >= SMALL_TARGET and p99 <= SMALL_P99_TARGET
            said = f"{ratio:.2f}x nginx's req/s, p99 {p99:.2f}x"
        out.append(
            f"- {row['target']}, {row['connections']} connections, 2 workers: {said} "
            f"(target {goal}): {'met' if met else 'NOT met'}"
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


def warm_section(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
    return [
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


def cold_section(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
    return [
        "## Cold misses and coalescing",
        "",
        f"{args['clients']} simultaneous GETs of one uncached 12 MB tarball, the fake "
        f"upstream throttled to {args['rate']:g} MB/s per response. Every body is checked "
        "against the tarball's sha256.",
        "",
        *cold_table(results["cold"]),
        "",
    ]


def memory_section(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
    return [
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


# One renderer per bench/run.py mode (run.MODES), in the order they appear.
Section = Callable[[dict[str, Any], dict[str, Any]], list[str]]
SECTIONS: dict[str, Section] = {
    "warm": warm_section,
    "cold": cold_section,
    "memory": memory_section,
}


def _load(results: dict[str, Any]) -> str:
    before, after = results.get("load_before"), results.get("load_after")
    if not before or not after:
        return "- Load average: not recorded"
    return (
        f"- Load average (1/5/15 min): {before[0]:.2f}/{before[1]:.2f}/{before[2]:.2f} before, "
        f"{after[0]:.2f}/{after[1]:.2f}/{after[2]:.2f} after"
    )


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
        _load(results),
        *versions(),
        "",
    ]
    for name, section in SECTIONS.items():
        if name in results:
            lines += section(results, args)
    return "\n".join(lines)
