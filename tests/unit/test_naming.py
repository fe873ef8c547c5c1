"""The name/version grammar: hostile inputs are refused, every real hexpm one passes."""

from __future__ import annotations

import pytest

from hexproxy.errors import InvalidRequest
from hexproxy.registry import (
    HEXPM_PUBLIC_KEY_PEM,
    check_name,
    check_version,
    docs_filename,
    is_valid_name,
    is_valid_version,
    load_public_key,
    parse_docs_filename,
    parse_tarball_filename,
    tarball_filename,
    verify_versions,
)
from tests.support.fixtures import FIXTURES

GOOD_NAMES = [
    "a",
    "jason",
    "plug_cowboy",
    "ex_aws_s3",
    "x1",
    "a_",
    "addressBook",
    "yEnc",
    "a" * 128,
]
BAD_NAMES = [
    "",
    "..",
    ".",
    "a/b",
    "a\\b",
    "%2f",
    "a%2fb",
    "a\0",
    "\0",
    "Jason",  # must start lowercase
    "1abc",  # leading digit
    "_abc",
    "plug-cowboy",
    "plug.cowboy",
    "plug cowboy",
    "jason\n",
    "\njason",
    "jasön",
    "\uff4a\uff41\uff53\uff4f\uff4e",  # fullwidth "jason"
    "a" * 129,
]

GOOD_VERSIONS = [
    "0.0.0",
    "1.0.0",
    "10.20.30",
    "1.0.0-rc.1",
    "1.0.0-alpha",
    "1.0.0-alpha.beta.1",
    "1.0.0-0",
    "1.0.0-x-y-z.--",
    "1.0.0-0a",
    "1.0.0+build.1",
    "1.0.0+001",
    "1.0.0-rc.1+build.1-2",
    "1.2.3-" + "a" * 240,
]
BAD_VERSIONS = [
    "",
    "1",
    "1.0",
    "1.0.0.0",
    "01.0.0",
    "1.00.0",
    "1.0.00",
    "v1.0.0",
    "1.0.0-",
    "1.0.0+",
    "1.0.0-01",  # numeric pre-release identifiers have no leading zeros
    "1.0.0-rc..1",
    "1.0.0-rc_1",
    "1.0.0\n",
    "1.0.0 ",
    " 1.0.0",
    "1.0.0/..",
    "../1.0.0",
    "1.0.0%2f",
    "1.0.0\0",
    "\uff11.0.0",  # fullwidth digit one
    "1.0.0-" + "a" * 250,
]


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_good_names_are_accepted(name: str) -> None:
    assert is_valid_name(name)
    assert check_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_rejected(name: str) -> None:
    assert not is_valid_name(name)
    with pytest.raises(InvalidRequest):
        check_name(name)


@pytest.mark.parametrize("version", GOOD_VERSIONS)
def test_good_versions_are_accepted(version: str) -> None:
    assert is_valid_version(version)
    assert check_version(version) == version


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_bad_versions_are_rejected(version: str) -> None:
    assert not is_valid_version(version)
    with pytest.raises(InvalidRequest):
        check_version(version)


SPLITS = {
    "jason-1.2.2.tar": ("jason", "1.2.2"),
    "plug_cowboy-2.5.2.tar": ("plug_cowboy", "2.5.2"),
    # The first "-" is the split: a pre-release "-" belongs to the version.
    "foo-1.0.0-rc.1.tar": ("foo", "1.0.0-rc.1"),
    "foo-1.0.0-1.tar": ("foo", "1.0.0-1"),
    "foo-1.0.0+build-2.tar": ("foo", "1.0.0+build-2"),
}


@pytest.mark.parametrize(("filename", "parts"), SPLITS.items(), ids=SPLITS.keys())
def test_tarball_filenames_split_on_the_first_dash(filename: str, parts: tuple[str, str]) -> None:
    assert parse_tarball_filename(filename) == parts
    assert tarball_filename(*parts) == filename
    docs = filename + ".gz"
    assert parse_docs_filename(docs) == parts
    assert docs_filename(*parts) == docs


BAD_TARBALL_FILENAMES = [
    "",
    ".tar",
    "jason.tar",
    "jason-.tar",
    "-1.0.0.tar",
    "jason-1.0.0",
    "jason-1.0.0.tar.gz",
    "jason-1.0.0.tgz",
    "jason-1.0.0.TAR",
    "jason-1.0.tar",
    "Jason-1.0.0.tar",
    "../jason-1.0.0.tar",
    "a/b-1.0.0.tar",
    "jason-1.0.0/../x.tar",
    "jason%2f-1.0.0.tar",
    "jason-1.0.0.tar\n",
    "jason-1.0.0\0.tar",
    "jason--1.0.0.tar",
    "a" * 200 + "-1.0.0.tar",
]


@pytest.mark.parametrize("filename", BAD_TARBALL_FILENAMES)
def test_bad_tarball_filenames_are_rejected(filename: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_tarball_filename(filename)


@pytest.mark.parametrize("filename", ["jason-1.0.0.tar", "jason-1.0.0.tar.gz.gz", "jason.tar.gz"])
def test_bad_docs_filenames_are_rejected(filename: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_docs_filename(filename)


def test_invalid_request_message_is_one_line_and_escaped() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_tarball_filename("evil\n-1.0.0.tar")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("name", "version"), [("a/b", "1.0.0"), ("jason", "1.0"), ("..", "1.0.0")])
def test_filenames_are_built_only_from_valid_parts(name: str, version: str) -> None:
    with pytest.raises(InvalidRequest):
        tarball_filename(name, version)
    with pytest.raises(InvalidRequest):
        docs_filename(name, version)


@pytest.mark.real_data
def test_every_real_hexpm_name_and_version_is_valid() -> None:
    body = (FIXTURES / "hexpm-signed" / "versions").read_bytes()
    key = load_public_key(HEXPM_PUBLIC_KEY_PEM)
    versions = verify_versions(body, key, repository="hexpm", max_uncompressed=64 << 20)
    assert [p.name for p in versions.packages if not is_valid_name(p.name)] == []
    bad = [(p.name, v) for p in versions.packages for v in p.versions if not is_valid_version(v)]
    assert bad == []
