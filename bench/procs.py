"""Starting and (always) stopping the processes a benchmark needs.

Every process is started in its own session, so stopping it also stops what it
forked (hexproxy's workers, nginx's workers): SIGTERM to the process group, then
SIGKILL after a grace period. ``Processes`` is a context manager; leaving it, by
success, exception or Ctrl-C, stops everything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            if check():  # type: ignore[operator]
                return
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return bool(resp.status == 200)


class Processes:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: list[str],
        cwd: Path = REPO_ROOT,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
        log.close()
        self._procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
        # Whatever the group leader did, nothing of the group may outlive it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
        self._procs = [(n, p) for n, p in self._procs if p is not proc]

    def stop_all(self, keep: str | None = None) -> None:
        """Stop every process started here (except those named ``keep``), newest first."""
        for name, proc in reversed(list(self._procs)):
            if name != keep:
                self.stop(proc)

    # ----- the three kinds of server a benchmark runs -----

    def fake_upstream(self, root: Path, *, rate: float = 0.0, delay: float = 0.0) -> str:
        port_file = self.workdir / f"upstream-{time.monotonic_ns()}.port"
        argv = [sys.executable, str(REPO_ROOT / "bench" / "fake_upstream.py")]
        argv += ["--root", str(root), "--port-file", str(port_file)]
        argv += ["--rate", str(rate), "--delay", str(delay)]
        self.start("fake_upstream", argv)
        wait_until(lambda: port_file.read_text().strip().isdigit(), "the fake upstream")
        return f"http://127.0.0.1:{port_file.read_text().strip()}"

    def hexproxy(
        self,
        *,
        upstream: str,
        cache_dir: Path,
        public_key: Path,
        workers: int,
        source: Path = REPO_ROOT,
        env: dict[str, str] | None = None,
    ) -> tuple[str, subprocess.Popen[bytes]]:
        """``python -m hexproxy serve``, importing hexproxy from ``source`` (a checkout)."""
        port = free_port()
        argv = [sys.executable, "-m", "hexproxy", "serve", "--listen", f"127.0.0.1:{port}"]
        argv += ["--upstream", upstream, "--cache-dir", str(cache_dir)]
        argv += ["--public-key", str(public_key), "--workers", str(workers)]
        proc = self.start(f"hexproxy-w{workers}", argv, cwd=source, env=env)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(url + "/_hexproxy/health"), "hexproxy")
        return url, proc

    def nginx(self, root: Path, *, workers: int = 2) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        conf_dir = self.workdir / f"nginx-{port}"
        conf_dir.mkdir()
        # Started as root, nginx's workers run as nobody: they must be able to read.
        for path in (self.workdir, *root.parents[: len(root.relative_to(self.workdir).parts)]):
            path.chmod(0o755)
        root.chmod(0o755)
        (conf_dir / "nginx.conf").write_text(nginx_conf(root, conf_dir, port, workers))
        argv = ["nginx", "-p", str(conf_dir), "-c", str(conf_dir / "nginx.conf")]
        proc = self.start("nginx", argv)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(url + "/names"), "nginx")
        return url, proc

    def bare_aiohttp(self, body: Path, *, workers: int) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        argv = [sys.executable, str(REPO_ROOT / "bench" / "bare_aiohttp.py"), "--port", str(port)]
        argv += ["--body-file", str(body), "--workers", str(workers)]
        proc = self.start(f"bare-aiohttp-w{workers}", argv)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_ok(url + "/"), "bare aiohttp")
        return url, proc


def nginx_conf(root: Path, conf_dir: Path, port: int, workers: int) -> str:
    """A plain static file server on loopback, logging every request like hexproxy does."""
    return f"""
daemon off;
master_process on;
worker_processes {workers};
pid {conf_dir}/nginx.pid;
error_log {conf_dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {conf_dir}/access.log;
    client_body_temp_path {conf_dir}/body;
    proxy_temp_path {conf_dir}/proxy;
    fastcgi_temp_path {conf_dir}/fastcgi;
    uwsgi_temp_path {conf_dir}/uwsgi;
    scgi_temp_path {conf_dir}/scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""
