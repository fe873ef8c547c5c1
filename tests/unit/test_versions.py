"""Table-driven tests for Elixir-compatible version ordering and requirement matching."""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hexproxy.registry.versions import (
    InvalidRequirement,
    InvalidVersion,
    Version,
    all_matches,
    best_match,
    parse_requirement,
)

# (requirement, version, matches with allow_pre=False, matches with allow_pre=True)
MATCH_CASES = [
    # == and bare versions
    ("== 1.0.0", "1.0.0", True, True),
    ("== 1.0.0", "1.0.1", False, False),
    ("1.0.0", "1.0.0", True, True),
    ("==1.0.0", "1.0.0", True, True),
    ("== 1.0.0", "1.0.0+build.7", True, True),
    ("== 1.0.0+abc", "1.0.0", True, True),
    ("== 1.0.0-rc.1", "1.0.0-rc.1", True, True),
    ("== 1.0.0-rc.1", "1.0.0", False, False),
    # != (deprecated, and never filters pre-releases)
    ("!= 1.0.0", "1.0.0", False, False),
    ("!= 1.0.0", "1.0.1", True, True),
    ("!= 1.0.0", "1.0.1-dev", True, True),
    ("! 1.0.0", "1.0.0", False, False),
    # >
    ("> 1.0.0", "1.0.1", True, True),
    ("> 1.0.0", "1.0.0", False, False),
    ("> 1.0.0", "0.9.9", False, False),
    ("> 1.0.0", "1.0.1-dev", False, True),
    ("> 1.0.0-rc.1", "1.0.0-rc.2", True, True),
    ("> 1.0.0-rc.1", "1.0.0", True, True),
    ("> 1.0.0-rc.1", "1.0.0-rc.1", False, False),
    # >=
    (">= 1.0.0", "1.0.0", True, True),
    (">= 1.0.0", "2.3.4", True, True),
    (">= 1.0.0", "0.99.0", False, False),
    (">= 2.1.0", "2.2.0-dev", False, True),
    (">= 1.0.0", "1.0.0-rc.1", False, False),
    (">= 2.1.0-dev", "2.2.6-dev", True, True),
    (">= 1.0.0-beta", "1.0.0-beta", True, True),
    (">= 1.0.0-beta", "1.0.0-alpha", False, False),
    # < and <= do not filter pre-releases, exactly like Elixir
    ("< 1.0.0", "0.9.0", True, True),
    ("< 1.0.0", "1.0.0", False, False),
    ("< 1.0.0", "0.9.0-dev", True, True),
    ("< 1.0.0", "1.0.0-rc.1", True, True),
    ("< 1.0.0-rc.2", "1.0.0-rc.1", True, True),
    ("<= 1.0.0", "1.0.0", True, True),
    ("<= 1.0.0", "1.0.1", False, False),
    ("<= 1.0.0", "1.0.0-rc.1", True, True),
    ("<=1.0.0", "0.0.1", True, True),
    # ~> with two parts: bumps the major
    ("~> 2.0", "2.1.0", True, True),
    ("~> 2.0", "2.0.0", True, True),
    ("~> 2.0", "3.0.0", False, False),
    ("~> 2.1", "2.0.9", False, False),
    ("~> 2.1", "2.99.99", True, True),
    ("~> 2.1", "3.0.0-rc.0", False, False),
    ("~> 2.1", "3.0.0-0", False, False),
    ("~> 2.1", "2.5.0-dev", False, True),
    # ~> with three parts: bumps the minor
    ("~> 2.0.0", "2.0.5", True, True),
    ("~> 2.0.0", "2.1.0", False, False),
    ("~> 2.1.2", "2.1.2", True, True),
    ("~> 2.1.2", "2.1.1", False, False),
    ("~> 2.1.2", "2.1.6-dev", False, True),
    ("~> 2.1.2", "2.2.0-rc.1", False, False),
    # ~> with a pre-release operand
    ("~> 2.1-dev", "2.2.0-dev", True, True),
    ("~> 2.1-dev", "2.1.0-dev", True, True),
    ("~> 2.1-dev", "3.0.0-dev", False, False),
    ("~> 2.1.2-dev", "2.1.6-dev", True, True),
    ("~> 2.1.3-dev", "2.1.3-dev", True, True),
    ("~> 2.1.3-dev", "2.1.3", True, True),
    ("~> 2.1.3-dev", "2.1.2", False, False),
    ("~> 2.1.3-dev", "2.2.0-dev", False, False),
    # and / or; "and" binds tighter than "or"
    (">= 1.0.0 and < 2.0.0", "1.5.0", True, True),
    (">= 1.0.0 and < 2.0.0", "2.0.0", False, False),
    ("~> 0.4 or ~> 1.0", "0.4.1", True, True),
    ("~> 0.4 or ~> 1.0", "1.3.0", True, True),
    ("~> 0.4 or ~> 1.0", "2.0.0", False, False),
    ("== 3.0.0 or >= 1.0.0 and < 2.0.0", "3.0.0", True, True),
    ("== 3.0.0 or >= 1.0.0 and < 2.0.0", "1.2.0", True, True),
    ("== 3.0.0 or >= 1.0.0 and < 2.0.0", "2.5.0", False, False),
    (">= 1.0.0 and < 2.0.0 or == 3.0.0", "3.0.0", True, True),
    ("< 1.0.0 or > 2.0.0 and < 3.0.0", "0.5.0", True, True),
    ("< 1.0.0 or > 2.0.0 and < 3.0.0", "3.5.0", False, False),
    # the pre-release filter is per clause: the pre operand unlocks its own clause only
    (">= 1.0.0-rc.1 and < 2.0.0", "1.5.0-dev", True, True),
    (">= 1.0.0 or == 2.0.0-rc.1", "2.0.0-rc.1", True, True),
    (">= 1.0.0 or == 2.0.0-rc.1", "2.0.0-rc.2", False, True),
    # whitespace tolerance
    ("  >=   1.0.0   and   <  2.0.0  ", "1.0.0", True, True),
    ("~>1.0", "1.9.0", True, True),
]


@pytest.mark.parametrize(("requirement", "version", "strict", "loose"), MATCH_CASES)
def test_requirement_matches(requirement: str, version: str, strict: bool, loose: bool) -> None:
    req = parse_requirement(requirement)
    assert req.matches(version) is strict
    assert req.matches(version, allow_pre=False) is strict
    assert req.matches(Version.parse(version), allow_pre=True) is loose


INVALID_REQUIREMENTS = [
    "",
    "   ",
    "~>",
    ">=",
    ">= 1",
    "== 1.0",
    "1.0",
    "< 2.0 and > 1.0.0",
    "1.0.0 and",
    "1.0.0 or",
    "or 1.0.0",
    "and 1.0.0",
    "1.0.0 and or 2.0.0",
    "~> a.b",
    "=> 1.0.0",
    "= 1.0.0",
    "== == 1.0.0",
    "1.0.0 1.0.0",
    ">= 01.0.0",
    ">= 1.0.0-",
    ">= 1.0.0-rc..1",
    "~> 1",
    "~> 1.0.0.0",
    ">= 1.0.0and < 2.0.0",
    "~> 2.0-01",
]


@pytest.mark.parametrize("text", INVALID_REQUIREMENTS)
def test_invalid_requirement(text: str) -> None:
    with pytest.raises(InvalidRequirement) as info:
        parse_requirement(text)
    message = str(info.value)
    assert repr(text) in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


SEMVER_SPEC_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.1.0",
    "1.10.0",
    "2.0.0-0",
    "2.0.0",
    "10.0.0",
]


@pytest.mark.parametrize(("lower", "higher"), list(pairwise(SEMVER_SPEC_ORDER)))
def test_ordering_follows_semver(lower: str, higher: str) -> None:
    low, high = Version.parse(lower), Version.parse(higher)
    assert low < high
    assert high > low
    assert low <= high
    assert not high <= low
    assert low != high


def test_sorting_the_spec_list_is_identity() -> None:
    shuffled = list(reversed(SEMVER_SPEC_ORDER))
    assert [str(v) for v in sorted(map(Version.parse, shuffled))] == SEMVER_SPEC_ORDER


@pytest.mark.parametrize(
    ("left", "right"),
    [("1.0.0+build.1", "1.0.0+build.2"), ("1.0.0+x", "1.0.0"), ("1.0.0-rc.1+a", "1.0.0-rc.1")],
)
def test_build_metadata_is_ignored_for_precedence(left: str, right: str) -> None:
    a, b = Version.parse(left), Version.parse(right)
    assert a == b
    assert hash(a) == hash(b)
    assert not a < b
    assert not b < a
    assert str(a) == left


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("1.2.3", (1, 2, 3, (), ())),
        ("0.0.0", (0, 0, 0, (), ())),
        ("1.0.0-alpha.1", (1, 0, 0, ("alpha", 1), ())),
        ("1.0.0-x-y.0+b.c-d", (1, 0, 0, ("x-y", 0), ("b", "c-d"))),
        ("1.0.0+001", (1, 0, 0, (), ("001",))),
    ],
)
def test_parse_fields(text: str, fields: tuple[object, ...]) -> None:
    v = Version.parse(text)
    assert (v.major, v.minor, v.patch, v.pre, v.build) == fields
    assert str(v) == text
    assert v.is_prerelease is bool(fields[3])


@pytest.mark.parametrize(
    "text", ["1.0", "1", "v1.0.0", "1.0.0.0", "01.0.0", "1.0.0-01", "1.0.0-", "1.0.0+", " 1.0.0"]
)
def test_invalid_version(text: str) -> None:
    with pytest.raises(InvalidVersion):
        Version.parse(text)


def test_str_of_hand_built_version_is_canonical() -> None:
    assert str(Version(1, 2, 3, ("rc", 1), ("b",))) == "1.2.3-rc.1+b"
    assert Version(1, 2, 3) == Version.parse("1.2.3")


def test_str_of_requirement_is_source() -> None:
    assert str(parse_requirement("~> 1.0 or ~> 2.0")) == "~> 1.0 or ~> 2.0"


RELEASES = ["0.9.0", "1.0.0", "1.4.2", "1.5.0-rc.0", "2.0.0-rc.1", "not-a-version", "1.4.10"]


@pytest.mark.parametrize(
    ("requirement", "allow_pre", "exclude", "expected"),
    [
        ("~> 1.0", False, (), "1.4.10"),
        ("~> 1.0", True, (), "1.5.0-rc.0"),
        ("~> 1.0", False, ("1.4.10",), "1.4.2"),
        (">= 0.0.0", False, (), "1.4.10"),
        (">= 0.0.0", True, (), "2.0.0-rc.1"),
        ("~> 2.0-rc", False, (), "2.0.0-rc.1"),
        # a stable match wins over a newer pre-release, as in Hex's solver
        (">= 1.4.0-rc", False, (), "1.4.10"),
        ("== 2.0.0-rc.1", False, (), "2.0.0-rc.1"),
        ("~> 3.0", False, (), None),
        ("== 0.9.0", False, ("0.9.0",), None),
    ],
)
def test_best_match(
    requirement: str, allow_pre: bool, exclude: tuple[str, ...], expected: str | None
) -> None:
    assert best_match(requirement, RELEASES, allow_pre=allow_pre, exclude=exclude) == expected


def test_best_match_accepts_parsed_requirement_and_generator() -> None:
    req = parse_requirement("~> 1.4.0")
    assert best_match(req, (v for v in RELEASES)) == "1.4.10"


def test_best_match_rejects_invalid_requirement() -> None:
    with pytest.raises(InvalidRequirement):
        best_match(">= 1", RELEASES)


def test_all_matches_sorted_ascending_and_skips_garbage() -> None:
    assert all_matches("~> 1.0", RELEASES) == ["1.0.0", "1.4.2", "1.4.10"]
    assert all_matches("~> 1.0", RELEASES, allow_pre=True) == [
        "1.0.0",
        "1.4.2",
        "1.4.10",
        "1.5.0-rc.0",
    ]
    assert all_matches("< 1.0.0", RELEASES, exclude=["0.9.0"]) == []


_ident = st.one_of(
    st.integers(min_value=0, max_value=20).map(str),
    st.text(alphabet="abcz-", min_size=1, max_size=3),
)


def _version_text(major: int, minor: int, patch: int, pre: list[str]) -> str:
    return f"{major}.{minor}.{patch}" + (f"-{'.'.join(pre)}" if pre else "")


_versions = st.builds(
    _version_text,
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    st.lists(_ident, max_size=3),
)


@given(st.lists(_versions, min_size=1, max_size=8))
def test_ordering_is_a_total_order_consistent_with_sorting(texts: list[str]) -> None:
    versions = sorted(Version.parse(t) for t in texts)
    for a, b in pairwise(versions):
        assert a <= b
        assert (a < b) != (a == b)
        assert (a < b) == (b > a)
    for a in versions:
        for b in versions:
            assert sum([a < b, a == b, a > b]) == 1


@given(_versions, _versions)
def test_pessimistic_never_reaches_next_minor(operand: str, candidate: str) -> None:
    op = Version.parse(operand)
    upper = Version.parse(f"{op.major}.{op.minor + 1}.0-0")
    req = parse_requirement(f"~> {operand}")
    version = Version.parse(candidate)
    if version >= upper:
        assert not req.matches(version, allow_pre=True)
    if req.matches(version, allow_pre=True):
        assert op <= version < upper
