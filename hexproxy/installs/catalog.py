"""The Hex installer files (``mix local.hex`` / ``mix local.rebar``) under ``/installs/``.

This module holds the CSV files themselves: their lines, and how they are
verified. ``builds`` picks the build a client installs from them. Pure,
mirroring Elixir's ``Mix.Local`` and the ``local.hex`` / ``local.rebar`` tasks.

Files per Elixir generation (``lib/mix/lib/mix/tasks/local.{hex,rebar}.ex``):

* Elixir 1.18 and earlier: ``hex-1.x.csv`` (+ ``.signed``),
  ``ELIXIR/hex-HEXVER.ez``, ``rebar3-1.x.csv`` (+ ``.signed``), ``ELIXIR/rebar3-VER``.
* Elixir 1.19 and later: ``hex.csv``, ``ELIXIR/hex-HEXVER-otp-OTP.ez``,
  ``rebar.csv``, ``ELIXIR/rebar3-VER-otp-OTP``.

A CSV line is ``toolver,sha512hex,elixirver[,otprelease]`` (older lines may list
several Elixir versions). Mix reads the lines last to first and takes the first
whose Elixir version (and OTP release, when the line has one) is not above the
running one; it then installs the named file with ``--sha512``.

Signatures: Elixir 1.18 and earlier refuse ``*-1.x.csv`` unless its ``.signed``
(base64 RSA-SHA512) verifies with the key built into Mix; 1.19 and later do not
read ``.signed`` at all. So the proxy requires a valid signature for the 1.x
CSVs (a client that needs them would fail without one anyway) and, for
``hex.csv`` / ``rebar.csv``, verifies a ``.signed`` when upstream has one and
otherwise accepts the CSV over HTTPS, as Mix 1.19 itself does.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ..errors import BadSignature, VerificationError
from ..registry import verify_signature
from ..registry.versions import InvalidVersion, Version

# Elixir's own key for the installer CSVs: the ``@in_memory_key`` of ``Mix.Local``
# (``lib/mix/lib/mix/local.ex``; formerly ``Mix.PublicKey`` in ``public_key.ex``),
# the first entry ``Mix.Local.public_keys/0`` tries. Not hexpm's registry key.
ELIXIR_INSTALLS_PUBLIC_KEY_PEM = b"""-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAslPz1mAfyAvRv8W8xOdv
HQMbDJkDKfRhsL4JBGwGH7qw0xh+TbaUlNaM3pF+i8VUjS/4FeXjT/OAUEAHu5Y2
rBVlx00QcH8Dpbyf+H73XiCs0MXnTSecqDgzx6i6NMi8knklHT7yHySHtuuPmPuN
Po8QTKolCKftwPE/iNDeyZfwufd+hTCoCQdoTVcB01SElfNtvKRtoKbx35q80IPr
rOcGsALmr58+bWqCTY/51kFeRxzrPJ5LdcLU/AebyWddD4IUfPDxk16jTiCagMWA
JPSwo8NUrWDIBbD+rEUp06y0ek276rG5Tzm/3Bma56RN/u6nAqBTBE8F2Hu2QBKj
lQIDAQAB
-----END PUBLIC KEY-----
"""

# CSVs that Elixir 1.18 and earlier verify: without a good .signed they are refused.
SIGNATURE_REQUIRED = frozenset({"hex-1.x.csv", "rebar3-1.x.csv", "rebar-1.x.csv"})
CSV_NAMES = SIGNATURE_REQUIRED | {"hex.csv", "rebar.csv"}

_SHA512_HEX = re.compile(r"\A[0-9a-fA-F]{128}\Z")
# An OTP release as the CSVs and ``--installs ELIXIR/OTP`` give it: its major number.
OTP_RELEASE = re.compile(r"\A[0-9]{1,3}\Z")


@dataclass(frozen=True, slots=True)
class CsvLine:
    version: str
    sha512: bytes
    elixirs: tuple[str, ...]
    otp: str | None = None


def parse_csv(body: bytes) -> list[CsvLine]:
    """The usable lines of an installs CSV; lines that do not parse are skipped
    (Mix would never select them: their versions do not compare)."""
    lines = []
    for raw in body.decode("utf-8", "replace").splitlines():
        fields = [f.strip() for f in raw.split(",")]
        if len(fields) < 3 or not _SHA512_HEX.match(fields[1]):
            continue
        rest = fields[2:]
        otp = rest.pop() if len(rest) > 1 and OTP_RELEASE.match(rest[-1]) else None
        if not rest or not all(_is_version(v) for v in rest):
            continue
        lines.append(CsvLine(fields[0], bytes.fromhex(fields[1]), tuple(rest), otp))
    return lines


def _is_version(text: str) -> bool:
    try:
        Version.parse(text)
    except InvalidVersion:
        return False
    return True


def verify_csv(name: str, body: bytes, signed: bytes | None, key: RSAPublicKey) -> list[CsvLine]:
    """Check a CSV against its ``.signed`` companion (None: upstream has none)."""
    if signed is None:
        if name in SIGNATURE_REQUIRED:
            raise VerificationError(f"/installs/{name} has no .signed signature upstream")
        return parse_csv(body)
    try:
        signature = base64.b64decode(signed.replace(b"\n", b"").strip(), validate=True)
        verify_signature(body, signature, key)
    except (binascii.Error, ValueError, BadSignature):
        raise VerificationError(
            f"/installs/{name}: signature does not verify with the installs public key"
        ) from None
    return parse_csv(body)
