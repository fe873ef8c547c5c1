"""Running wrk and reading its report."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_SIZE = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    bytes_read: float
    errors: int  # socket errors of any kind plus non-2xx/3xx answers

    @property
    def mb_per_s(self) -> float:
        return self.bytes_read / self.seconds / 1e6


def run_wrk(url: str, *, connections: int, seconds: float, threads: int = 2) -> WrkResult:
    threads = min(threads, connections)
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency", url]
    out = subprocess.run(
        argv, capture_output=True, text=True, check=True, timeout=seconds + 60
    ).stdout
    return parse(out)


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _bytes(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", text)
    if match is None:
        raise ValueError(f"unexpected wrk size {text!r}")
    return float(match.group(1)) * _SIZE[match.group(2)]


def parse(out: str) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    if not (done and rps and p50 and p99):
        raise ValueError(f"cannot parse wrk output:\n{out}")
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        errors += int(non_2xx.group(1))
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=_ms(p50.group(1)),
        p99_ms=_ms(p99.group(1)),
        bytes_read=_bytes(done.group(3)),
        errors=errors,
    )
