"""A test signing key shared by the whole session (RSA key generation costs ~100 ms)."""

from __future__ import annotations

import functools

from cryptography.hazmat.primitives.asymmetric import rsa


@functools.cache
def test_private_key() -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key, like hexpm's, generated once per test session."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def other_private_key() -> rsa.RSAPrivateKey:
    """A second, unrelated key: for "signed, but by someone else" cases."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


# pytest would otherwise try to collect the function above as a test.
test_private_key.__test__ = False  # type: ignore[attr-defined]
