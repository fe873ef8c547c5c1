"""RSA public keys that sign Hex registries: the built-in hexpm key, loading, fingerprints."""

from __future__ import annotations

import base64
import hashlib

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

__all__ = ["HEXPM_PUBLIC_KEY_PEM", "fingerprint", "load_public_key", "public_key_pem"]

# repo.hex.pm's signing key, as built into hex_core and Hex (hex_core.erl HEXPM_PUBLIC_KEY).
# Its fingerprint is SHA256:O1LOYhHFW4kcrblKAxROaDEzLD8bn1seWbe5tq8TRsk; a test pins it.
HEXPM_PUBLIC_KEY_PEM = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEApqREcFDt5vV21JVe2QNB
Edvzk6w36aNFhVGWN5toNJRjRJ6m4hIuG4KaXtDWVLjnvct6MYMfqhC79HAGwyF+
IqR6Q6a5bbFSsImgBJwz1oadoVKD6ZNetAuCIK84cjMrEFRkELtEIPNHblCzUkkM
3rS9+DPlnfG8hBvGi6tvQIuZmXGCxF/73hU0/MyGhbmEjIKRtG6b0sJYKelRLTPW
XgK7s5pESgiwf2YC/2MGDXjAJfpfCd0RpLdvd4eRiXtVlE9qO9bND94E7PgQ/xqZ
J1i2xWFndWa6nfFnRxZmCStCOZWYYPlaxr+FZceFbpMwzTNs4g3d4tLNUcbKAIH4
0wIDAQAB
-----END PUBLIC KEY-----
"""

_PKCS1_MARKER = b"-----BEGIN RSA PUBLIC KEY-----"


def load_public_key(pem: bytes) -> RSAPublicKey:
    """Load an RSA public key from SPKI ("PUBLIC KEY") or PKCS#1 ("RSA PUBLIC KEY") PEM.

    Both forms occur in the wild: hex.pm publishes SPKI, while `mix hex.registry build`
    writes PKCS#1. Anything else (a private key, another algorithm, garbage) is a
    configuration mistake, reported as a one-line ValueError rather than a crypto traceback.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ValueError(_describe_unloadable(pem)) from exc
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic keys
        raise ValueError(f"unsupported public key: {type(exc).__name__}") from exc
    if not isinstance(key, RSAPublicKey):
        raise ValueError(f"public key is not RSA (got {type(key).__name__})")
    return key


def _describe_unloadable(pem: bytes) -> str:
    if b"PRIVATE KEY-----" in pem:
        return "expected a public key PEM, got a private key"
    if b"-----BEGIN " not in pem:
        return "not a PEM public key (no -----BEGIN line)"
    if _PKCS1_MARKER in pem:
        return "malformed PKCS#1 RSA PUBLIC KEY PEM"
    return "malformed or unsupported public key PEM"


def fingerprint(key: RSAPublicKey) -> str:
    """Return the key's fingerprint the way Hex prints and checks it.

    Hex uses `public_key:ssh_hostkey_fingerprint(sha256, Key)` (hex_repo:fingerprint/1 and
    `mix hex.repo add --fetch-public-key`), i.e. the OpenSSH format: SHA-256 over the SSH wire
    blob ("ssh-rsa", e, n), base64 without padding. Hashing the DER SPKI instead gives a
    different value that users could never match against hex.pm/docs/public_keys.
    """
    ssh_line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(ssh_line.split()[1])
    digest = base64.b64encode(hashlib.sha256(blob).digest()).rstrip(b"=")
    return "SHA256:" + digest.decode("ascii")


def public_key_pem(key: RSAPublicKey) -> bytes:
    """Serialize as SPKI PEM, the form `/public_key` serves and Hex's config expects."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
