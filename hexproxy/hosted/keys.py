"""Secrets of hosted repositories: each one's RSA signing key, and the API keys.

Signing keys: a configured PEM file, else ``DIR/NAME/private_key.pem``, generated on
first use (2048-bit RSA, like hex.pm's) and written with mode 0600 before any byte of
it exists on disk, so no other user can ever read it.

API keys never exist on disk or in memory in clear beyond the request that carries
one: the configuration lists ``sha256:HEX`` digests, and a presented key is hashed
and compared with each digest in constant time. The keys are random 32-byte values,
so a plain SHA-256 is as good as a slow password hash here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from ..errors import ConfigError

__all__ = [
    "KEY_PREFIX",
    "digest_of",
    "generate_api_key",
    "is_key_digest",
    "load_or_create_signing_key",
    "matches",
]

KEY_PREFIX = "sha256:"
_KEY_FILE = "private_key.pem"


def load_or_create_signing_key(repo_dir: Path, configured: str) -> RSAPrivateKey:
    """The repository's signing key: ``configured`` (a PEM path) or the generated one."""
    path = Path(configured) if configured else repo_dir / _KEY_FILE
    if not configured and not path.exists():
        _create(path)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"[hosted] private_key: cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[hosted] private_key: {path} is not an unencrypted PEM key") from exc
    if not isinstance(key, RSAPrivateKey):
        raise ConfigError(f"[hosted] private_key: {path} is not an RSA key")
    return key


def _create(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    # O_EXCL with 0600 from the start: the key is never readable by others, not even
    # for the moment between create and chmod.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        # link(), not rename(): if another worker created the key first, keep theirs.
        with contextlib.suppress(FileExistsError):
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def generate_api_key() -> tuple[str, str]:
    """A new random API key and the ``sha256:`` digest to put in the configuration."""
    key = secrets.token_hex(32)
    return key, digest_of(key)


def digest_of(key: str) -> str:
    return KEY_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_key_digest(text: str) -> bool:
    hexpart = text.removeprefix(KEY_PREFIX)
    return (
        text.startswith(KEY_PREFIX)
        and len(hexpart) == 64
        and all(c in "0123456789abcdef" for c in hexpart)
    )


def matches(presented: str, digests: Iterable[str]) -> bool:
    """Does ``presented`` hash to one of ``digests``? Every digest is compared, each in
    constant time, so the answer's timing tells nothing about which or how close."""
    mine = digest_of(presented).encode("ascii")
    found = False
    for digest in digests:
        found |= hmac.compare_digest(mine, digest.encode("ascii"))
    return found
