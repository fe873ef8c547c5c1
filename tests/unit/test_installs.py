"""The Hex installer CSVs: parsing, Mix's selection rule, file names per Elixir generation."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hexproxy.errors import VerificationError
from hexproxy.installs import (
    BuildRef,
    CsvLine,
    build_path,
    csv_name,
    parse_build,
    parse_csv,
    parse_target,
    select,
    sha512_for,
    verify_csv,
)
from hexproxy.registry import load_public_key, sign
from tests.support.keys import other_private_key, test_private_key


def sha(text: str) -> str:
    return hashlib.sha512(text.encode()).hexdigest()


# Shaped like builds.hex.pm's files: one line per (tool version, Elixir[, OTP]).
LEGACY_HEX = f"""\
1.0.1,{sha("a")},1.0.0
2.0.0,{sha("b")},1.10.0
2.0.6,{sha("c")},1.14.0
2.1.1,{sha("d")},1.15.0
2.1.1,{sha("e")},1.16.0
""".encode()

MODERN_HEX = f"""\
2.2.1,{sha("f")},1.18.0,26
2.2.1,{sha("g")},1.18.0,27
2.2.1,{sha("h")},1.18.0,28
2.3.0,{sha("i")},1.19.0,26
2.3.0,{sha("j")},1.19.0,27
2.3.0,{sha("k")},1.19.0,28
""".encode()


def test_parse_csv_reads_every_field_and_skips_junk() -> None:
    lines = parse_csv(MODERN_HEX + b"\nnot,a,line\n2.0.0,abc,1.14.0\n")
    assert len(lines) == 6
    assert lines[0] == CsvLine("2.2.1", bytes.fromhex(sha("f")), ("1.18.0",), "26")
    assert parse_csv(LEGACY_HEX)[0].otp is None


def test_an_old_line_may_list_several_elixir_versions() -> None:
    (line,) = parse_csv(f"0.20.5,{sha('x')},1.1.0,1.0.0\n".encode())
    assert line.elixirs == ("1.1.0", "1.0.0") and line.otp is None
    chosen = select([line], parse_target("1.0.5"))
    assert chosen == (line, "1.0.0")


@pytest.mark.parametrize(
    ("target", "version", "elixir_dir", "otp"),
    [
        ("1.14.5", "2.0.6", "1.14.0", None),
        ("1.15.0", "2.1.1", "1.15.0", None),
        ("1.16.3", "2.1.1", "1.16.0", None),
        ("1.18.4", "2.1.1", "1.16.0", None),  # newest line not above the running Elixir
        ("1.9.4", "1.0.1", "1.0.0", None),
    ],
)
def test_selection_in_the_legacy_csv(
    target: str, version: str, elixir_dir: str, otp: str | None
) -> None:
    chosen = select(parse_csv(LEGACY_HEX), parse_target(target))
    assert chosen is not None
    line, directory = chosen
    assert (line.version, directory, line.otp) == (version, elixir_dir, otp)


@pytest.mark.parametrize(
    ("target", "version", "elixir_dir", "otp"),
    [
        ("1.19.0/28", "2.3.0", "1.19.0", "28"),
        ("1.19.4/27", "2.3.0", "1.19.0", "27"),
        ("1.20.0/26", "2.3.0", "1.19.0", "26"),
        ("1.18.4/27", "2.2.1", "1.18.0", "27"),  # Elixir filter first, then OTP
        ("1.19.1/29", "2.3.0", "1.19.0", "28"),  # newer OTP than any build: the newest
    ],
)
def test_selection_honours_the_otp_release(
    target: str, version: str, elixir_dir: str, otp: str
) -> None:
    chosen = select(parse_csv(MODERN_HEX), parse_target(target))
    assert chosen is not None
    line, directory = chosen
    assert (line.version, directory, line.otp) == (version, elixir_dir, otp)


def test_nothing_selected_below_every_line() -> None:
    assert select(parse_csv(MODERN_HEX), parse_target("1.17.0/27")) is None
    assert select(parse_csv(MODERN_HEX), parse_target("1.19.0/25")) is None


def test_file_names_per_elixir_generation() -> None:
    old, new = parse_target("1.18.4/27"), parse_target("1.19.0/27")
    assert (csv_name("hex", old), csv_name("rebar3", old)) == ("hex-1.x.csv", "rebar3-1.x.csv")
    assert (csv_name("hex", new), csv_name("rebar3", new)) == ("hex.csv", "rebar.csv")
    line = CsvLine("2.3.0", b"", ("1.19.0",), "27")
    assert build_path("hex", new, line, "1.19.0") == "1.19.0/hex-2.3.0-otp-27.ez"
    assert build_path("rebar3", new, line, "1.19.0") == "1.19.0/rebar3-2.3.0-otp-27"
    legacy = CsvLine("2.0.6", b"", ("1.14.0",))
    assert build_path("hex", old, legacy, "1.14.0") == "1.14.0/hex-2.0.6.ez"
    assert build_path("rebar3", old, legacy, "1.14.0") == "1.14.0/rebar3-2.0.6"


@pytest.mark.parametrize(
    ("relative", "ref", "csv"),
    [
        ("1.14.0/hex-2.0.6.ez", BuildRef("hex", "1.14.0", "2.0.6", None), "hex-1.x.csv"),
        ("1.19.0/hex-2.3.0-otp-27.ez", BuildRef("hex", "1.19.0", "2.3.0", "27"), "hex.csv"),
        ("1.13.0/rebar3-3.22.0", BuildRef("rebar3", "1.13.0", "3.22.0", None), "rebar3-1.x.csv"),
        ("1.19.0/rebar3-3.25.1-otp-28", BuildRef("rebar3", "1.19.0", "3.25.1", "28"), "rebar.csv"),
        ("1.0.0/rebar-2.6.2", BuildRef("rebar", "1.0.0", "2.6.2", None), "rebar-1.x.csv"),
    ],
)
def test_a_build_path_names_its_csv(relative: str, ref: BuildRef, csv: str) -> None:
    assert parse_build(relative) == ref
    assert ref.csv_name == csv


@pytest.mark.parametrize(
    "relative",
    ["hex.ez", "1.14.0/hex-2.0.6", "1.14.0/rebar3-3.0.0.ez", "1.14.0/other-1.0.0.ez", "x/hex-1.ez"],
)
def test_other_paths_are_not_builds(relative: str) -> None:
    assert parse_build(relative) is None


def test_sha512_lookup_needs_the_exact_line() -> None:
    lines = parse_csv(MODERN_HEX)
    assert sha512_for(lines, BuildRef("hex", "1.19.0", "2.3.0", "27")) == bytes.fromhex(sha("j"))
    assert sha512_for(lines, BuildRef("hex", "1.19.0", "2.3.0", "25")) is None
    assert sha512_for(lines, BuildRef("hex", "1.19.0", "2.3.0", None)) is None


def signed(body: bytes, private: RSAPrivateKey | None = None) -> bytes:
    signature = sign(body, private or other_private_key())
    return base64.encodebytes(signature)  # wrapped at 76 columns, as openssl base64 does


def test_signature_is_checked_with_the_installs_key() -> None:
    pem = (
        other_private_key()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    key = load_public_key(pem)
    assert len(verify_csv("hex-1.x.csv", LEGACY_HEX, signed(LEGACY_HEX), key)) == 5
    with pytest.raises(VerificationError, match="signature"):
        verify_csv("hex-1.x.csv", LEGACY_HEX + b"\n", signed(LEGACY_HEX), key)
    with pytest.raises(VerificationError, match="signature"):
        verify_csv("hex-1.x.csv", LEGACY_HEX, signed(LEGACY_HEX, test_private_key()), key)
    with pytest.raises(VerificationError, match="signature"):
        verify_csv("hex-1.x.csv", LEGACY_HEX, b"not base64!!", key)
    with pytest.raises(VerificationError, match=r"no \.signed"):
        verify_csv("rebar3-1.x.csv", LEGACY_HEX, None, key)
    assert len(verify_csv("hex.csv", MODERN_HEX, None, key)) == 6


@pytest.mark.parametrize("text", ["1.19", "1.19.0/x", "latest", "1.19.0/270000"])
def test_bad_targets(text: str) -> None:
    with pytest.raises(ValueError, match="--installs"):
        parse_target(text)
