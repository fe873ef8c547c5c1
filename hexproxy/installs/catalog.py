"""The Hex installer files (``mix local.hex`` / ``mix local.rebar``) under ``/installs/``.

Pure parsing and selection, mirroring Elixir's ``Mix.Local`` and the
``local.hex`` / ``local.rebar`` tasks, plus ``warm_installs`` which drives the
cache the way those tasks drive a builds host.

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
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from ..errors import BadSignature, ConfigError, HexproxyError, NotFound, VerificationError
from ..registry import load_public_key, verify_signature
from ..registry.versions import InvalidVersion, Version
from ..store.cachekey import CacheKey, Kind, install_key

if TYPE_CHECKING:
    from ..cache.policy import Cache
    from ..config import Config

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
TOOLS = ("hex", "rebar3")

_SHA512_HEX = re.compile(r"\A[0-9a-fA-F]{128}\Z")
_OTP = re.compile(r"\A[0-9]{1,3}\Z")
_BUILD = re.compile(
    r"\A(?P<elixir>[0-9][0-9A-Za-z.+-]*)/(?P<tool>hex|rebar3|rebar)-"
    r"(?P<version>[0-9][0-9A-Za-z.+-]*?)(?:-otp-(?P<otp>[0-9]{1,3}))?(?P<ez>\.ez)?\Z"
)


@dataclass(frozen=True, slots=True)
class CsvLine:
    version: str
    sha512: bytes
    elixirs: tuple[str, ...]
    otp: str | None = None


@dataclass(frozen=True, slots=True)
class Target:
    """A client to prepare for: an Elixir version and, optionally, its OTP release."""

    elixir: Version
    otp: str | None = None

    @property
    def modern(self) -> bool:
        """Elixir 1.19 and later: unsigned ``hex.csv`` and ``-otp-N`` build names."""
        return (self.elixir.major, self.elixir.minor) >= (1, 19)

    def __str__(self) -> str:
        return f"{self.elixir}/{self.otp}" if self.otp else str(self.elixir)


@dataclass(frozen=True, slots=True)
class BuildRef:
    """What a build file's path says about it: which CSV line must name it."""

    tool: str
    elixir: str
    version: str
    otp: str | None

    @property
    def csv_name(self) -> str:
        if self.tool == "hex":
            return "hex.csv" if self.otp else "hex-1.x.csv"
        if self.tool == "rebar3":
            return "rebar.csv" if self.otp else "rebar3-1.x.csv"
        return "rebar-1.x.csv"


def parse_target(text: str) -> Target:
    """``ELIXIR[/OTP]`` as given to ``hexproxy warm --installs``; ValueError if malformed."""
    elixir, _, otp = text.strip().partition("/")
    try:
        version = Version.parse(elixir.removeprefix("v"))
    except InvalidVersion as exc:
        raise ValueError(f"--installs {text!r}: {exc}") from None
    if otp and not _OTP.match(otp):
        raise ValueError(f"--installs {text!r}: OTP release must be a major number like 27")
    return Target(version, otp or None)


def parse_csv(body: bytes) -> list[CsvLine]:
    """The usable lines of an installs CSV; lines that do not parse are skipped
    (Mix would never select them: their versions do not compare)."""
    lines = []
    for raw in body.decode("utf-8", "replace").splitlines():
        fields = [f.strip() for f in raw.split(",")]
        if len(fields) < 3 or not _SHA512_HEX.match(fields[1]):
            continue
        rest = fields[2:]
        otp = rest.pop() if len(rest) > 1 and _OTP.match(rest[-1]) else None
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


def select(lines: list[CsvLine], target: Target) -> tuple[CsvLine, str] | None:
    """The line Mix would install for ``target`` and the Elixir directory it names."""
    for line in reversed(lines):
        if line.otp and target.otp and int(line.otp) > int(target.otp):
            continue
        for elixir in line.elixirs:
            if Version.parse(elixir) <= target.elixir:
                return line, elixir
    return None


def csv_name(tool: str, target: Target) -> str:
    if tool == "hex":
        return "hex.csv" if target.modern else "hex-1.x.csv"
    return "rebar.csv" if target.modern else "rebar3-1.x.csv"


def build_path(tool: str, target: Target, line: CsvLine, elixir_dir: str) -> str:
    """The path (under ``/installs/``) of the build Mix downloads for this line."""
    suffix = ".ez" if tool == "hex" else ""
    if target.modern:
        if line.otp is None:
            raise ValueError(f"{csv_name(tool, target)} line {line.version} has no OTP release")
        return f"{elixir_dir}/{tool}-{line.version}-otp-{line.otp}{suffix}"
    return f"{elixir_dir}/{tool}-{line.version}{suffix}"


def parse_build(relative: str) -> BuildRef | None:
    """``1.18.4/hex-2.2.1.ez`` and friends; None for anything that is not a build file."""
    m = _BUILD.match(relative)
    if m is None or (m["tool"] == "hex") != bool(m["ez"]):
        return None
    return BuildRef(m["tool"], m["elixir"], m["version"], m["otp"])


def sha512_for(lines: list[CsvLine], ref: BuildRef) -> bytes | None:
    """The sha512 the CSV gives for the build ``ref`` names, if a line names it."""
    for line in lines:
        if line.version == ref.version and ref.elixir in line.elixirs and line.otp == ref.otp:
            return line.sha512
    return None


def is_csv(key: CacheKey) -> bool:
    return key.kind is Kind.INSTALL and key.name in CSV_NAMES


def is_signature(key: CacheKey) -> bool:
    name = key.name
    return key.kind is Kind.INSTALL and name.endswith(".signed") and name[:-7] in CSV_NAMES


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


def load_installs_public_key_pem(config: Config) -> bytes:
    """The configured ``[upstream] installs_public_key`` file, else Elixir's built-in key."""
    configured = config.upstream.installs_public_key
    if not configured:
        return ELIXIR_INSTALLS_PUBLIC_KEY_PEM
    path = Path(configured)
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"[upstream] installs_public_key: cannot read {path}: {exc.strerror}"
        ) from None
    try:
        load_public_key(pem)
    except ValueError as exc:
        raise ConfigError(f"[upstream] installs_public_key: {path}: {exc}") from None
    return pem


@dataclass(slots=True)
class InstallsReport:
    fetched: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)


async def warm_installs(cache: Cache, targets: list[Target]) -> InstallsReport:
    """Cache the CSVs (verified) and the Hex and rebar3 builds each target would install."""
    report = InstallsReport()
    done: set[str] = set()
    for target in targets:
        for tool in TOOLS:
            try:
                for path in await _warm_one(cache, tool, target):
                    if path not in done:
                        done.add(path)
                        report.fetched.append(path)
            except HexproxyError as exc:
                report.failures.append((f"{tool} for Elixir {target}", exc.message))
    return report


async def _warm_one(cache: Cache, tool: str, target: Target) -> list[str]:
    name = csv_name(tool, target)
    small = await cache.get_small(install_key(name))
    paths = [f"/installs/{name}"]
    try:
        await cache.get_small(install_key(name + ".signed"))
        paths.append(f"/installs/{name}.signed")
    except NotFound:
        pass  # hex.csv / rebar.csv may be unsigned (Elixir 1.19+ never asks for .signed)
    lines = small.entry.decoded if isinstance(small.entry.decoded, list) else []
    chosen = select(lines, target)
    if chosen is None:
        raise NotFound(f"/installs/{name} lists no {tool} build for Elixir {target}")
    line, elixir_dir = chosen
    try:
        relative = build_path(tool, target, line, elixir_dir)
    except ValueError as exc:
        raise NotFound(str(exc)) from None
    await cache.fetch_file(install_key(relative))
    return [*paths, f"/installs/{relative}"]


def print_installs(report: InstallsReport, *, as_json: bool) -> None:
    """What ``hexproxy warm --installs`` prints: a count and each failure, or JSON."""
    if as_json:
        failures = [{"what": w, "reason": r} for w, r in report.failures]
        print(json.dumps({"installs": {"fetched": report.fetched, "failures": failures}}))
        return
    print(f"installs: {len(report.fetched)} files cached and verified")
    for what, reason in report.failures:
        print(f"FAILED {what}: {reason}", file=sys.stderr)
