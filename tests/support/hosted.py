"""Helpers for the hosted-repository tests: API keys, configurations, tarballs.

Keys are generated per test session and only their ``sha256:`` digests go into the
configuration, as an operator would do. ``raw_tarball`` builds the outer tar by hand so
tests can break exactly one rule (a wrong CHECKSUM, metadata that does not parse).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import replace
from typing import Any

from cryptography.hazmat.primitives import serialization

from hexproxy.config import Config, HostedRepoConfig, load_config
from hexproxy.hosted import etf
from hexproxy.hosted.keys import digest_of
from hexproxy.registry import Dependency
from hexproxy.registry.tarball import build_tarball
from tests.support.keys import test_private_key

WRITE_KEY = "write-key-" + "a" * 40
READ_KEY = "read-key-" + "b" * 40
OTHER_KEY = "other-repo-key-" + "c" * 40
ETF = "application/vnd.hex+erlang"


def hosted_config(
    tmp: Any, *, read_protected: bool = False, generate_keys: bool = False, **overrides: Any
) -> Config:
    """A proxy config with hosted repositories ``acme`` (and ``beta``) in ``tmp``.

    Both sign with the session's test key unless ``generate_keys`` (RSA key generation
    costs a noticeable fraction of a second per repository)."""
    values: dict[tuple[str, str], Any] = {
        ("cache", "dir"): str(tmp / "cache"),
        ("hosted", "dir"): str(tmp / "hosted"),
        ("upstream", "offline"): True,
    }
    for name, value in overrides.items():
        section, _, key = name.partition("__")
        values[(section, key)] = value
    config = load_config(None, {"HOME": str(tmp)}, values)
    key_file = ""
    if not generate_keys:
        tmp.mkdir(parents=True, exist_ok=True)
        key_file = str(tmp / "signing_key.pem")
        if not (tmp / "signing_key.pem").exists():  # another process's test key stays
            (tmp / "signing_key.pem").write_bytes(private_key_pem())
    acme = HostedRepoConfig(
        "acme",
        private_key=key_file,
        read_keys=(digest_of(READ_KEY),) if read_protected else (),
        write_keys=(digest_of(WRITE_KEY),),
    )
    beta = HostedRepoConfig("beta", private_key=key_file, write_keys=(digest_of(OTHER_KEY),))
    return replace(config, hosted=replace(config.hosted, repos=(acme, beta)))


def private_key_pem() -> bytes:
    return test_private_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def package_tarball(
    name: str, version: str, deps: list[Dependency] | None = None, *, note: str = ""
) -> bytes:
    tar, _ = build_tarball(
        name,
        version,
        files={f"src/{name}.erl": f"-module({name}).\n%% {note}\n".encode()},
        requirements=deps or [],
        description=f"{name} for tests",
    )
    return tar


def raw_tarball(
    metadata: bytes,
    *,
    contents: bytes | None = None,
    checksum: str | None = None,
    version: bytes = b"3",
    extra: dict[str, bytes] | None = None,
) -> bytes:
    """An outer tarball from parts; CHECKSUM is correct unless ``checksum`` is given."""
    if contents is None:
        contents = gzip.compress(_tar({"src/x.erl": b"-module(x).\n"}), mtime=0)
    inner = hashlib.sha256(version + metadata + contents).hexdigest().upper()
    members = {
        "VERSION": version,
        "CHECKSUM": (checksum or inner).encode(),
        "metadata.config": metadata,
        "contents.tar.gz": contents,
        **(extra or {}),
    }
    return _tar(members)


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path, data in members.items():
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def docs_tarball(files: dict[str, bytes]) -> bytes:
    return gzip.compress(_tar(files), mtime=0)


def decode(body: bytes) -> Any:
    return etf.decode(body)


def encode(term: Any) -> bytes:
    return etf.encode(term)
