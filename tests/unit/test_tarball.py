"""build_tarball writes hex_core's package format v3, byte-compatible with real tarballs."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile

import pytest

from hexproxy.registry import Dependency
from hexproxy.registry.tarball import build_tarball, outer_checksum
from tests.support.fixtures import FIXTURES

MEMBERS = ["VERSION", "CHECKSUM", "metadata.config", "contents.tar.gz"]
Y2K = 946_684_800
FILES = {
    "src/foo.erl": b"-module(foo).\n-export([hi/0]).\nhi() -> ok.\n",
    "src/foo.app.src": b'{application, foo, [{vsn, "1.0.0"}, {applications, [kernel, stdlib]}]}.\n',
    "rebar.config": b"{erl_opts, []}.\n",
}
REQUIREMENTS = [
    Dependency("telemetry", "~> 1.0"),
    Dependency("jason", ">= 0.0.0", optional=True, app="jason_app", repository="hexpm"),
]


def members(tar_bytes: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        out = {}
        for info in tar.getmembers():
            f = tar.extractfile(info)
            assert f is not None
            out[info.name] = (info, f.read())
        return out


@pytest.fixture(scope="module")
def built() -> tuple[bytes, bytes]:
    return build_tarball("foo", "1.0.0", files=FILES, requirements=REQUIREMENTS)


def test_outer_tar_has_exactly_the_four_members_in_hex_core_order(
    built: tuple[bytes, bytes],
) -> None:
    assert list(members(built[0])) == MEMBERS


def test_outer_members_are_plain_ustar_files(built: tuple[bytes, bytes]) -> None:
    assert built[0][257:263] == b"ustar\0"
    for info, _ in members(built[0]).values():
        assert info.isreg()
        assert (info.mode, info.mtime, info.uid, info.gid) == (0o644, Y2K, 0, 0)


def test_checksum_is_uppercase_sha256_of_version_metadata_and_contents(
    built: tuple[bytes, bytes],
) -> None:
    tar, inner = built
    m = {name: data for name, (_, data) in members(tar).items()}
    assert m["VERSION"] == b"3"
    expected = hashlib.sha256(m["VERSION"] + m["metadata.config"] + m["contents.tar.gz"])
    assert m["CHECKSUM"] == expected.hexdigest().upper().encode()
    assert inner == expected.digest()


def test_contents_is_a_gzipped_tar_of_exactly_the_files(built: tuple[bytes, bytes]) -> None:
    contents = members(built[0])["contents.tar.gz"][1]
    inner = members(gzip.decompress(contents))
    assert list(inner) == sorted(FILES)
    assert {name: data for name, (_, data) in inner.items()} == FILES
    assert all(info.mode == 0o644 and info.mtime == Y2K for info, _ in inner.values())


def test_metadata_config_is_erlang_terms_in_hex_core_shape(built: tuple[bytes, bytes]) -> None:
    metadata = members(built[0])["metadata.config"][1].decode()
    assert metadata == (
        '{<<"app">>,<<"foo">>}.\n'
        '{<<"build_tools">>,[<<"rebar3">>]}.\n'
        '{<<"description">>,<<"">>}.\n'
        '{<<"files">>,[<<"rebar.config">>,<<"src/foo.app.src">>,<<"src/foo.erl">>]}.\n'
        '{<<"licenses">>,[<<"Apache-2.0">>]}.\n'
        '{<<"name">>,<<"foo">>}.\n'
        '{<<"requirements">>,['
        '{<<"jason">>,[{<<"app">>,<<"jason_app">>},{<<"optional">>,true},'
        '{<<"requirement">>,<<">= 0.0.0">>},{<<"repository">>,<<"hexpm">>}]},'
        '{<<"telemetry">>,[{<<"app">>,<<"telemetry">>},{<<"optional">>,false},'
        '{<<"requirement">>,<<"~> 1.0">>}]}]}.\n'
        '{<<"version">>,<<"1.0.0">>}.\n'
    )


def test_metadata_strings_are_escaped_for_erlang() -> None:
    tar, _ = build_tarball("foo", "1.0.0", files={}, description='Say "hi"\\ to\nJosé')
    metadata = members(tar)["metadata.config"][1].decode()
    assert '{<<"description">>,<<"Say \\"hi\\"\\\\ to\\012José"/utf8>>}.\n' in metadata


def test_build_is_deterministic(built: tuple[bytes, bytes]) -> None:
    again = build_tarball(
        "foo", "1.0.0", files=dict(reversed(FILES.items())), requirements=REQUIREMENTS
    )
    assert again == built


def test_outer_checksum_is_sha256_of_the_whole_file(built: tuple[bytes, bytes]) -> None:
    assert outer_checksum(built[0]) == hashlib.sha256(built[0]).digest()


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", ""])
def test_unsafe_file_paths_are_refused(path: str) -> None:
    with pytest.raises(ValueError, match="unsafe path"):
        build_tarball("foo", "1.0.0", files={path: b""})


@pytest.mark.real_data
def test_layout_matches_a_real_hex_tarball() -> None:
    """Rebuild telemetry 1.0.0's metadata and compare it with the real file, term for term."""
    real_tar = (FIXTURES / "phoenix-tree" / "tarballs" / "telemetry-1.0.0.tar").read_bytes()
    real = members(real_tar)
    assert list(real) == MEMBERS
    files = {name: b"" for name in _real_files(real["metadata.config"][1])}
    ours, _ = build_tarball(
        "telemetry",
        "1.0.0",
        files=files,
        description="Dynamic dispatching library for metrics and instrumentations",
        licenses=["Apache 2.0"],
    )
    # Our builder does not write optional `links`; drop it, then compare ignoring layout
    # whitespace (io_lib_pretty wraps lines, we do not).
    real_metadata = re.sub(
        rb"\{<<\"links\">>.*?\}\]\}\.\n", b"", real["metadata.config"][1], flags=re.S
    )
    assert _squash(members(ours)["metadata.config"][1]) == _squash(real_metadata)
    for name in MEMBERS:
        ours_info, real_info = members(ours)[name][0], real[name][0]
        # Permission bits only: erl_tar also stores S_IFREG (0100644), which Python's tarfile
        # masks off; every tar reader, erl_tar included, ignores those bits.
        assert (ours_info.mode, ours_info.mtime, ours_info.uid, ours_info.type) == (
            real_info.mode & 0o7777,
            real_info.mtime,
            real_info.uid,
            real_info.type,
        )


def _real_files(metadata: bytes) -> list[str]:
    files_term = re.search(rb"\{<<\"files\">>,(.*?)\]\}\.", metadata, flags=re.S)
    assert files_term is not None
    return [m.decode() for m in re.findall(rb'<<"([^"]*)">>', files_term.group(1))]


def _squash(metadata: bytes) -> bytes:
    return re.sub(rb"\s+", b"", metadata)
