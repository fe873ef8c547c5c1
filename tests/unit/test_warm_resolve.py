"""Which releases warming picks: one table of packages, one table of cases."""

from __future__ import annotations

import pytest

from hexproxy.airgap.lockfiles import LockedPackage
from hexproxy.airgap.resolve import (
    SpecError,
    Want,
    check_locked,
    dependency_wants,
    parse_spec,
    select_versions,
)
from hexproxy.registry import Dependency, Package, Release


def release(version: str, *deps: Dependency, outer: bytes | None = None) -> Release:
    return Release(version, b"i" * 32, outer or version.encode().ljust(32, b"."), tuple(deps))


PLUG = Package(
    "plug",
    "hexpm",
    tuple(
        release(v)
        for v in ("1.0.0", "1.1.0", "1.2.0-rc.0", "1.2.0", "1.3.0-beta.1", "2.0.0-rc.1", "0.9.0")
    ),
)
ONLY_PRE = Package("edge", "hexpm", (release("0.1.0-dev"), release("0.2.0-dev")))

SELECT_CASES = [
    # requirement, all_versions, package, expected
    (">= 0.0.0", False, PLUG, ["1.2.0"]),  # a bare NAME: newest stable
    ("~> 1.0", False, PLUG, ["1.2.0"]),
    ("~> 1.1.0", False, PLUG, ["1.1.0"]),
    ("== 1.0.0", False, PLUG, ["1.0.0"]),
    ("1.0.0", False, PLUG, ["1.0.0"]),
    ("1.2.0-rc.0", False, PLUG, ["1.2.0-rc.0"]),  # asked for by name
    ("~> 2.0-rc", False, PLUG, ["2.0.0-rc.1"]),  # the requirement itself is a pre-release
    ("~> 1.0 or ~> 0.9", False, PLUG, ["1.2.0"]),
    (">= 1.0.0 and < 1.2.0", False, PLUG, ["1.1.0"]),
    ("~> 3.0", False, PLUG, []),
    ("~> 1.0", True, PLUG, ["1.0.0", "1.1.0", "1.2.0"]),  # pre-releases stay out
    (">= 0.0.0", True, PLUG, ["0.9.0", "1.0.0", "1.1.0", "1.2.0"]),
    (">= 0.0.0", False, ONLY_PRE, []),  # only pre-releases: nothing was asked for
    (">= 0.1.0-dev", False, ONLY_PRE, ["0.2.0-dev"]),
]


@pytest.mark.parametrize(("requirement", "all_versions", "package", "expected"), SELECT_CASES)
def test_select_versions(
    requirement: str, all_versions: bool, package: Package, expected: list[str]
) -> None:
    assert select_versions(package, requirement, all_versions=all_versions) == expected


@pytest.mark.parametrize(
    ("text", "name", "requirement"),
    [
        ("phoenix", "phoenix", ">= 0.0.0"),
        ("phoenix@1.7.2", "phoenix", "1.7.2"),
        ("phoenix@~> 1.7", "phoenix", "~> 1.7"),
        ("phoenix@ >= 1.0.0 and < 2.0.0 ", "phoenix", ">= 1.0.0 and < 2.0.0"),
        ("plug_cowboy@2.5.0-rc.1", "plug_cowboy", "2.5.0-rc.1"),
    ],
)
def test_parse_spec(text: str, name: str, requirement: str) -> None:
    spec = parse_spec(text)
    assert (spec.name, str(spec.requirement)) == (name, requirement)
    assert spec.want("hexpm") == Want(name, requirement, "hexpm", top=True)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is not a package name"),
        ("Phoenix", "is not a package name"),
        ("../etc", "is not a package name"),
        ("phoenix@", "nothing after '@'"),
        ("phoenix@~>", "missing version"),
        ("phoenix@1.7", "only '~>' may omit the patch"),
        ("phoenix@>= 1.0.0 xor 2.0.0", "expected 'and' or 'or'"),
        ("phoenix@latest", "invalid requirement"),
    ],
)
def test_parse_spec_rejects(text: str, problem: str) -> None:
    with pytest.raises(SpecError, match="invalid package spec") as caught:
        parse_spec(text)
    assert problem in str(caught.value)


def test_dependencies_keep_their_repository_or_inherit_the_parent() -> None:
    rel = release(
        "1.0.0",
        Dependency("a", "~> 1.0"),
        Dependency("b", ">= 0.1.0", optional=True),
        Dependency("c", "~> 2.0", repository="acme"),
    )
    assert dependency_wants(rel, "hexpm") == [
        Want("a", "~> 1.0", "hexpm"),
        Want("b", ">= 0.1.0", "hexpm"),  # optional ones are warmed too
        Want("c", "~> 2.0", "acme"),
    ]


@pytest.mark.parametrize(
    ("locked", "problem"),
    [
        (LockedPackage("plug", "1.1.0"), None),
        (LockedPackage("plug", "1.1.0", outer_checksum=b"1.1.0".ljust(32, b".")), None),
        (LockedPackage("plug", "1.1.0", inner_checksum=b"i" * 32), None),
        (LockedPackage("plug", "9.9.9"), "the registry has no release 9.9.9"),
        (LockedPackage("plug", "1.1.0", outer_checksum=b"x" * 32), "outer checksum differs"),
        (LockedPackage("plug", "1.1.0", inner_checksum=b"x" * 32), "inner checksum differs"),
    ],
)
def test_check_locked(locked: LockedPackage, problem: str | None) -> None:
    found, reason = check_locked(PLUG, locked)
    if problem is None:
        assert reason is None and found is not None and found.version == locked.version
    else:
        assert found is None and reason is not None and problem in reason
