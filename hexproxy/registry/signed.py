"""The signed envelope around every registry resource: gzip(Signed{payload, signature}).

Everything here is pure: bytes in, bytes (or an error from hexproxy.errors) out.
"""

from __future__ import annotations

import gzip
import zlib
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from google.protobuf.message import DecodeError

from hexproxy.errors import BadSignature, MalformedRegistry, TooLarge
from hexproxy.registry._pb import hex_registry_pb2 as pb

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = ["decode_signed", "gunzip", "open_signed", "seal", "sign", "verify_signature"]

# wbits=16+MAX_WBITS makes zlib accept exactly one gzip member (header and CRC/size trailer
# checked), and nothing else: a zlib or raw deflate stream is an error, as it is for Hex.
_GZIP_WBITS = 16 + zlib.MAX_WBITS


def gunzip(data: bytes, limit: int) -> bytes:
    """Decompress one gzip member, refusing to produce more than `limit` bytes.

    Registry bodies come from the network, so a few KB of gzip could expand to gigabytes.
    Output is pulled in bounded steps (decompressobj max_length), so memory stays near
    `limit` whatever the input claims. Truncated input and bytes after the member are
    rejected: either means we did not get the file upstream signed.
    """
    inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
    out = bytearray()
    pending = data
    try:
        while not inflater.eof:
            chunk = inflater.decompress(pending, limit + 1 - len(out))
            out += chunk
            if len(out) > limit:
                raise TooLarge(f"gzip body expands beyond {limit} bytes")
            stuck = not chunk and len(inflater.unconsumed_tail) == len(pending)
            pending = inflater.unconsumed_tail
            if stuck:
                raise MalformedRegistry("gzip body is truncated")
    except zlib.error as exc:
        raise MalformedRegistry(f"body is not valid gzip ({exc})") from None
    if inflater.unused_data:
        raise MalformedRegistry("unexpected bytes after the gzip body")
    return bytes(out)


def decode_signed(raw: bytes) -> tuple[bytes, bytes]:
    """Split a serialized Signed message into (payload, signature).

    A missing signature comes back as b"" so that verification, not decoding, rejects it:
    the error a client would see for that file is bad_signature.
    """
    try:
        signed = pb.Signed.FromString(raw)
    except DecodeError as exc:
        raise MalformedRegistry(f"Signed envelope does not decode ({exc})") from None
    if not signed.HasField("payload"):
        raise MalformedRegistry("Signed envelope has no payload")
    return signed.payload, signed.signature


def verify_signature(payload: bytes, signature: bytes, key: RSAPublicKey) -> None:
    """Check the RSA PKCS#1 v1.5 / SHA-512 signature hex_registry:sign/2 produces."""
    try:
        key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA512())
    except InvalidSignature:
        raise BadSignature("registry signature does not verify with the configured key") from None


def sign(payload: bytes, private_key: RSAPrivateKey) -> bytes:
    """Sign a payload the way hexpm does; for tests and tools that publish their own registry."""
    return private_key.sign(payload, padding.PKCS1v15(), hashes.SHA512())


def seal(payload: bytes, private_key: RSAPrivateKey) -> bytes:
    """Build a complete registry body: gzip(Signed(payload, sign(payload))).

    mtime=0 keeps the output byte-for-byte reproducible, which tests rely on (PKCS#1 v1.5
    signatures are deterministic too).
    """
    signed = pb.Signed(payload=payload, signature=sign(payload, private_key))
    return gzip.compress(signed.SerializeToString(), mtime=0)


def open_signed(body: bytes, key: RSAPublicKey, *, max_uncompressed: int) -> bytes:
    """Gunzip, unwrap and verify a registry body; return the signed payload bytes."""
    payload, signature = decode_signed(gunzip(body, max_uncompressed))
    verify_signature(payload, signature, key)
    return payload
