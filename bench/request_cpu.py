"""CPU per warm hit, this checkout against another, measured on the server's side.

    python bench/request_cpu.py --baseline DIR [--requests N] [--rounds R] [--workers W]

Starts the fake upstream and one ``hexproxy serve`` from each checkout (``DIR``, e.g.
``git archive main | tar -x -C /tmp/base``, and this one), warms ``/packages/tiny`` and
a 100 KB tarball, then sends N pipelined requests for each over 8 keep-alive connections
and divides the proxy's CPU time (parent and workers, from /proc) by N. The checkouts
alternate round by round so that a load change on the machine hits both. Wall-clock
throughput would move with everything else running here; CPU per request moves far less.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.clients import tree_cpu_seconds
from bench.procs import REPO_ROOT, Processes
from bench.run import MEDIUM, SMALL, build_repository

CONNECTIONS = 8
BATCH = 50  # requests written at once on one connection


def drive(port: int, path: str, requests: int) -> None:
    """``requests`` GETs of ``path``, pipelined, over CONNECTIONS connections; reads every
    answer to its end (Content-Length framing) so the server did all the work."""
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    per_connection = requests // CONNECTIONS
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNECTIONS)]
    try:
        for sock in socks:
            left = per_connection
            pending = b""
            while left:
                batch = min(BATCH, left)
                sock.sendall(request * batch)
                for _ in range(batch):
                    pending = _read_answer(sock, pending)
                left -= batch
    finally:
        for sock in socks:
            sock.close()


def _read_answer(sock: socket.socket, pending: bytes) -> bytes:
    while b"\r\n\r\n" not in pending:
        pending += _recv(sock)
    head, _, rest = pending.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += _recv(sock)
    return rest[length:]


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 20)
    if not data:
        raise ConnectionError("the proxy closed the connection")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--paths", default=f"{SMALL},{MEDIUM}", help="comma-separated")
    args = parser.parse_args()
    paths = args.paths.split(",")
    with tempfile.TemporaryDirectory(prefix="request-cpu-") as tmp, Processes(Path(tmp)) as procs:
        work = Path(tmp)
        root, pem, _ = build_repository(work)
        upstream = procs.fake_upstream(root)
        servers = {}
        for name, source in (("before", args.baseline), ("after", REPO_ROOT)):
            url, proc = procs.hexproxy(
                upstream=upstream,
                cache_dir=work / f"cache-{name}",
                public_key=pem,
                workers=args.workers,
                source=source,
                env={"HEXPROXY_SERVER_ACCESS_LOG": "false"},
            )
            servers[name] = (int(url.rsplit(":", 1)[1]), proc.pid)
        results: dict[tuple[str, str], list[float]] = {}
        for path in paths:
            for port, _ in servers.values():
                drive(port, path, CONNECTIONS * 4)  # warm: the miss, then prepared hits
        for _ in range(args.rounds):
            for path in paths:
                for name, (port, pid) in servers.items():
                    before = tree_cpu_seconds(pid)
                    drive(port, path, args.requests)
                    spent = tree_cpu_seconds(pid) - before
                    results.setdefault((name, path), []).append(spent / args.requests * 1e6)
        print("| object | before µs/request | after µs/request | after / before | rounds |")
        print("|---|---|---|---|---|")
        for path in paths:
            rounds = " ".join(
                f"{a / b:.2f}"
                for b, a in zip(results[("before", path)], results[("after", path)], strict=True)
            )
            before = statistics.median(results[("before", path)])
            after = statistics.median(results[("after", path)])
            print(f"| `{path}` | {before:.1f} | {after:.1f} | {after / before:.3f} | {rounds} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
