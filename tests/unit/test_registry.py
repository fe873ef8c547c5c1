"""The registry protocol layer: round trips, every failure kind, and real hexpm-signed data."""

from __future__ import annotations

import gzip
import tracemalloc
import zlib
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from hexproxy.errors import (
    BadOrigin,
    BadSignature,
    MalformedRegistry,
    TooLarge,
    VerificationError,
)
from hexproxy.registry import (
    HEXPM_PUBLIC_KEY_PEM,
    Dependency,
    Names,
    Package,
    Release,
    Retirement,
    RetirementReason,
    Versions,
    VersionsEntry,
    build_names,
    build_package,
    build_versions,
    decode_package,
    decode_signed,
    encode_package,
    fingerprint,
    gunzip,
    load_public_key,
    open_signed,
    parse_tarball_filename,
    public_key_pem,
    seal,
    verify_names,
    verify_package,
    verify_versions,
)
from hexproxy.registry._pb import hex_registry_pb2 as pb
from hexproxy.registry.tarball import outer_checksum
from tests.support.fixtures import FIXTURES
from tests.support.keys import other_private_key, test_private_key

if TYPE_CHECKING:
    from collections.abc import Callable

    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

LIMIT = 64 * 1024 * 1024
HEXPM_FINGERPRINT = "SHA256:O1LOYhHFW4kcrblKAxROaDEzLD8bn1seWbe5tq8TRsk"
HEXPM_SIGNED = FIXTURES / "hexpm-signed"
PHOENIX = FIXTURES / "phoenix-tree"

Resource = Names | Versions | Package


def public_key() -> RSAPublicKey:
    return test_private_key().public_key()


def build(resource: Resource) -> bytes:
    key = test_private_key()
    if isinstance(resource, Names):
        return build_names(resource, key)
    if isinstance(resource, Versions):
        return build_versions(resource, key)
    return build_package(resource, key)


def verify(
    body: bytes,
    like: Resource,
    *,
    key: RSAPublicKey | None = None,
    repository: str | None = None,
    name: str | None = None,
    limit: int = LIMIT,
) -> Resource:
    """Verify `body` as the same kind of resource as `like`, expecting like's origin."""
    key = key or public_key()
    repository = repository or like.repository
    if isinstance(like, Names):
        return verify_names(body, key, repository=repository, max_uncompressed=limit)
    if isinstance(like, Versions):
        return verify_versions(body, key, repository=repository, max_uncompressed=limit)
    name = name or like.name
    return verify_package(body, key, repository=repository, name=name, max_uncompressed=limit)


CHECKSUM_A = bytes(range(32))
CHECKSUM_B = bytes(range(32, 64))

FULL_PACKAGE = Package(
    name="plug",
    repository="hexpm",
    releases=(
        # Registries from before 2019 have no outer checksum.
        Release("0.1.0", CHECKSUM_A, None),
        Release(
            "1.0.0-rc.1+build.5",
            CHECKSUM_A,
            CHECKSUM_B,
            dependencies=(
                Dependency("mime", "~> 1.0"),
                Dependency("jason", ">= 0.0.0", optional=True),
                Dependency("cowboy", "~> 2.0", app="cowboy_app"),
                Dependency("secret", "1.0.0", repository="hexpm:acme"),
            ),
            retired=Retirement(RetirementReason.SECURITY, "CVE-2024-0001"),
        ),
        Release("1.0.0", CHECKSUM_B, CHECKSUM_A, retired=Retirement(RetirementReason.RENAMED)),
        # Clients must tolerate reasons newer than the schema.
        Release("1.0.1", CHECKSUM_B, CHECKSUM_A, retired=Retirement(42, "future")),
    ),
)

ROUND_TRIP_CASES: dict[str, Resource] = {
    "names-empty": Names("hexpm", ()),
    "names": Names("hexpm", ("addressBook", "jason", "plug", "plug_cowboy")),
    "names-org": Names("acme", ("internal",)),
    "versions-empty": Versions("hexpm", ()),
    "versions": Versions(
        "hexpm",
        (
            VersionsEntry("jason", ("1.0.0", "1.1.0", "1.2.0-rc.0"), retired=(0, 2)),
            VersionsEntry("nothing_released", ()),
            VersionsEntry("plug", ("1.12.1",)),
        ),
    ),
    "package-no-releases": Package("empty", "hexpm", ()),
    "package-full": FULL_PACKAGE,
    "package-org": replace(FULL_PACKAGE, repository="acme"),
}


@pytest.mark.parametrize("resource", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_build_then_verify_gives_back_the_same_resource(resource: Resource) -> None:
    assert verify(build(resource), resource) == resource


@pytest.mark.parametrize("resource", ROUND_TRIP_CASES.values(), ids=ROUND_TRIP_CASES.keys())
def test_build_is_deterministic(resource: Resource) -> None:
    assert build(resource) == build(resource)


def test_encoder_omits_fields_where_hexpm_does() -> None:
    dep = Dependency("mime", "~> 1.0", optional=False, app="mime", repository="hexpm")
    pkg = Package("plug", "hexpm", (Release("1.0.0", CHECKSUM_A, CHECKSUM_B, (dep,)),))
    wire = pb.Package.FromString(encode_package(pkg)).releases[0].dependencies[0]
    assert not wire.HasField("optional")
    assert not wire.HasField("app")
    assert not wire.HasField("repository")
    decoded = decode_package(encode_package(pkg), repository="hexpm", name="plug")
    assert decoded.releases[0].dependencies == (Dependency("mime", "~> 1.0"),)


def test_package_release_lookup() -> None:
    assert FULL_PACKAGE.release("1.0.0") is FULL_PACKAGE.releases[2]
    assert FULL_PACKAGE.release("9.9.9") is None


# --- failures --------------------------------------------------------------------------------

GOOD = FULL_PACKAGE


def regzip_signed(body: bytes, edit: Callable[[pb.Signed], None]) -> bytes:
    """Decode the Signed envelope of a body, change it, and wrap it again."""
    signed = pb.Signed.FromString(gzip.decompress(body))
    edit(signed)
    return gzip.compress(signed.SerializeToString(), mtime=0)


def flip_last_signature_byte(signed: pb.Signed) -> None:
    signed.signature = signed.signature[:-1] + bytes([signed.signature[-1] ^ 1])


def flip_first_payload_byte(signed: pb.Signed) -> None:
    signed.payload = bytes([signed.payload[0] ^ 1]) + signed.payload[1:]


def drop_signature(signed: pb.Signed) -> None:
    signed.ClearField("signature")


def signed_payload(payload: bytes) -> bytes:
    return seal(payload, test_private_key())


def package_payload(**fields: Any) -> bytes:
    return pb.Package(**fields).SerializePartialToString()


FAILURES: dict[str, tuple[Callable[[], bytes], dict[str, Any], type[VerificationError]]] = {
    "not gzip": (lambda: b"definitely not gzip", {}, MalformedRegistry),
    "empty body": (lambda: b"", {}, MalformedRegistry),
    "zlib instead of gzip": (
        lambda: zlib.compress(gzip.decompress(build(GOOD))),
        {},
        MalformedRegistry,
    ),
    "truncated gzip": (lambda: build(GOOD)[:-9], {}, MalformedRegistry),
    "trailing garbage": (lambda: build(GOOD) + b"\0", {}, MalformedRegistry),
    "corrupt deflate data": (
        lambda: build(GOOD)[:20] + bytes([build(GOOD)[20] ^ 0xFF]) + build(GOOD)[21:],
        {},
        MalformedRegistry,
    ),
    "over the size limit": (lambda: build(GOOD), {"limit": 100}, TooLarge),
    "Signed does not decode": (lambda: gzip.compress(b"\xff\xff\xff"), {}, MalformedRegistry),
    "Signed without payload": (lambda: gzip.compress(b""), {}, MalformedRegistry),
    "signed payload is not a Package": (
        lambda: signed_payload(b"\x0a\xff\xff\xff"),
        {},
        MalformedRegistry,
    ),
    "no signature": (lambda: regzip_signed(build(GOOD), drop_signature), {}, BadSignature),
    "flipped signature byte": (
        lambda: regzip_signed(build(GOOD), flip_last_signature_byte),
        {},
        BadSignature,
    ),
    "flipped payload byte": (
        lambda: regzip_signed(build(GOOD), flip_first_payload_byte),
        {},
        BadSignature,
    ),
    "signed by another key": (
        lambda: build_package(GOOD, other_private_key()),
        {},
        BadSignature,
    ),
    "repository mismatch": (lambda: build(GOOD), {"repository": "acme"}, BadOrigin),
    "package name mismatch": (lambda: build(GOOD), {"name": "phoenix"}, BadOrigin),
    "pre-2019 file without repository": (
        lambda: signed_payload(package_payload(name="plug")),
        {},
        BadOrigin,
    ),
}


@pytest.mark.parametrize(("make_body", "kwargs", "error"), FAILURES.values(), ids=FAILURES.keys())
def test_every_failure_kind_raises_its_error(
    make_body: Callable[[], bytes], kwargs: dict[str, Any], error: type[VerificationError]
) -> None:
    with pytest.raises(error):
        verify(make_body(), GOOD, **kwargs)


def test_origin_errors_name_expected_and_actual() -> None:
    with pytest.raises(BadOrigin, match=r"'hexpm'.*'acme'"):
        verify(build(GOOD), GOOD, repository="acme")
    with pytest.raises(BadOrigin, match=r"'plug'.*'phoenix'"):
        verify(build(GOOD), GOOD, name="phoenix")


@pytest.mark.parametrize("resource", [Names("hexpm", ("a",)), Versions("hexpm", ())])
def test_names_and_versions_check_repository(resource: Resource) -> None:
    with pytest.raises(BadOrigin):
        verify(build(resource), resource, repository="acme")


def test_gzip_bomb_is_refused_without_allocating_its_size() -> None:
    bomb = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)  # ~64 KB on the wire
    limit = 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge):
            gunzip(bomb, limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * limit


def test_gunzip_accepts_exactly_the_limit() -> None:
    data = b"x" * 1000
    assert gunzip(gzip.compress(data), 1000) == data
    with pytest.raises(TooLarge):
        gunzip(gzip.compress(data), 999)


def test_decode_signed_returns_empty_signature_when_absent() -> None:
    assert decode_signed(pb.Signed(payload=b"p").SerializeToString()) == (b"p", b"")


def test_open_signed_returns_the_exact_payload() -> None:
    payload = encode_package(GOOD)
    assert open_signed(seal(payload, test_private_key()), public_key(), max_uncompressed=LIMIT) == (
        payload
    )


# --- real data ---------------------------------------------------------------------------------


def hexpm_key() -> RSAPublicKey:
    return load_public_key(HEXPM_PUBLIC_KEY_PEM)


@pytest.mark.real_data
def test_real_versions_verifies_with_the_builtin_key() -> None:
    body = (HEXPM_SIGNED / "versions").read_bytes()
    versions = verify_versions(body, hexpm_key(), repository="hexpm", max_uncompressed=LIMIT)
    assert versions.repository == "hexpm"
    assert len(versions.packages) == 11_454
    assert sum(len(p.versions) for p in versions.packages) == 70_684


def test_protobuf_decodes_with_its_compiled_runtime() -> None:
    # The real /versions (70,684 releases) decodes in ~50 ms with upb and takes seconds
    # with the pure-Python fallback. Ask which runtime is loaded rather than time it.
    from google.protobuf.internal import api_implementation

    assert api_implementation.Type() == "upb"


@pytest.mark.real_data
def test_real_package_verifies_with_the_builtin_key() -> None:
    body = (HEXPM_SIGNED / "packages" / "exfmt").read_bytes()
    package = verify_package(
        body, hexpm_key(), repository="hexpm", name="exfmt", max_uncompressed=LIMIT
    )
    assert len(package.releases) == 10
    assert all(
        r.outer_checksum is not None and len(r.outer_checksum) == 32 for r in package.releases
    )


@pytest.mark.real_data
@pytest.mark.parametrize("path", ["versions", "packages/exfmt"])
def test_real_file_fails_after_a_one_byte_change(path: str) -> None:
    body = (HEXPM_SIGNED / path).read_bytes()  # a copy: the fixture is never touched
    like: Resource = Versions("hexpm", ()) if path == "versions" else Package("exfmt", "hexpm", ())
    middle = len(body) // 2
    raw_flip = body[:middle] + bytes([body[middle] ^ 1]) + body[middle + 1 :]
    with pytest.raises(VerificationError):
        verify(raw_flip, like, key=hexpm_key())
    with pytest.raises(BadSignature):
        verify(regzip_signed(body, flip_first_payload_byte), like, key=hexpm_key())


@pytest.mark.real_data
def test_real_versions_rejects_another_repository_name() -> None:
    body = (HEXPM_SIGNED / "versions").read_bytes()
    with pytest.raises(BadOrigin):
        verify_versions(body, hexpm_key(), repository="acme", max_uncompressed=LIMIT)


def phoenix_key() -> RSAPublicKey:
    return load_public_key((PHOENIX / "public_key").read_bytes())


@pytest.mark.real_data
def test_phoenix_tree_names_and_versions_verify() -> None:
    key = phoenix_key()
    names = verify_names(
        (PHOENIX / "names").read_bytes(), key, repository="hexpm", max_uncompressed=LIMIT
    )
    versions = verify_versions(
        (PHOENIX / "versions").read_bytes(), key, repository="hexpm", max_uncompressed=LIMIT
    )
    package_files = sorted(p.name for p in (PHOENIX / "packages").iterdir())
    assert list(names.packages) == package_files
    assert [e.name for e in versions.packages] == package_files


@pytest.mark.real_data
def test_phoenix_tree_packages_verify_and_match_their_tarballs() -> None:
    key = phoenix_key()
    tarballs = sorted((PHOENIX / "tarballs").iterdir())
    assert len(tarballs) == 32
    for tarball in tarballs:
        name, version = parse_tarball_filename(tarball.name)
        body = (PHOENIX / "packages" / name).read_bytes()
        package = verify_package(body, key, repository="hexpm", name=name, max_uncompressed=LIMIT)
        release = package.release(version)
        assert release is not None, tarball.name
        assert release.outer_checksum == outer_checksum(tarball.read_bytes()), tarball.name


@pytest.mark.real_data
def test_phoenix_tree_is_not_signed_by_hexpm() -> None:
    with pytest.raises(BadSignature):
        verify_names(
            (PHOENIX / "names").read_bytes(),
            hexpm_key(),
            repository="hexpm",
            max_uncompressed=LIMIT,
        )


# --- keys ----------------------------------------------------------------------------------------


def test_builtin_key_has_hexpms_published_fingerprint() -> None:
    assert fingerprint(hexpm_key()) == HEXPM_FINGERPRINT


@pytest.mark.real_data
def test_builtin_key_equals_the_fixture_copy() -> None:
    from_file = load_public_key((HEXPM_SIGNED / "hexpm_public_key.pem").read_bytes())
    assert from_file.public_numbers() == hexpm_key().public_numbers()


@pytest.mark.real_data
def test_pkcs1_and_spki_forms_load_to_the_same_key() -> None:
    pkcs1 = (PHOENIX / "public_key").read_bytes()
    assert b"BEGIN RSA PUBLIC KEY" in pkcs1
    key = load_public_key(pkcs1)
    spki = public_key_pem(key)
    assert spki.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert load_public_key(spki).public_numbers() == key.public_numbers()
    assert fingerprint(load_public_key(spki)) == fingerprint(key)


def _pem(key: Any, private: bool = False) -> bytes:
    if private:
        return bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return bytes(
        key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


INVALID_PEMS: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "garbage": lambda: b"not a key at all",
    "truncated": lambda: HEXPM_PUBLIC_KEY_PEM[:200],
    "bad base64": lambda: b"-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n",
    "rsa private key": lambda: _pem(test_private_key(), private=True),
    "traditional rsa private key": lambda: test_private_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ),
    "ec public key": lambda: _pem(ec.generate_private_key(ec.SECP256R1()).public_key()),
    "ed25519 public key": lambda: _pem(ed25519.Ed25519PrivateKey.generate().public_key()),
}


@pytest.mark.parametrize("make_pem", INVALID_PEMS.values(), ids=INVALID_PEMS.keys())
def test_invalid_pems_raise_a_one_line_value_error(make_pem: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError) as info:
        load_public_key(make_pem())
    message = str(info.value)
    assert message
    assert "\n" not in message
