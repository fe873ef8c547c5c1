"""mix.lock / rebar.lock parsing: a real Phoenix lock, every rebar3 format, bad input."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from hexproxy.airgap.lockfiles import (
    LockedPackage,
    LockfileError,
    MixLock,
    RebarLock,
    parse_lockfile,
    parse_mix_lock,
    parse_rebar_lock,
)
from tests.support.fixtures import FIXTURES

if TYPE_CHECKING:
    from collections.abc import Callable

PHOENIX = FIXTURES / "phoenix-tree"

A = "a" * 64
B = "B" * 64
C = "0123456789abcdef" * 4


def _phoenix_lock() -> MixLock:
    return parse_mix_lock((PHOENIX / "mix.lock").read_text())


@pytest.mark.real_data
def test_phoenix_mix_lock_lists_every_hex_package() -> None:
    lock = _phoenix_lock()
    assert len(lock.packages) == 32
    by_name = {p.name: p for p in lock.packages}
    assert by_name["phoenix"].version == "1.6.0"
    assert by_name["cowboy"] == LockedPackage(
        name="cowboy",
        version="2.9.0",
        repository="hexpm",
        outer_checksum=bytes.fromhex(
            "2c729f934b4e1aa149aff882f57c6372c15399a20d54f65c8d67bef583021bde"
        ),
        inner_checksum=bytes.fromhex(
            "865dd8b6607e14cf03282e10e934023a1bd8be6f6bacf921a7e2a96d800cd452"
        ),
        app="cowboy",
    )
    assert by_name["telemetry_poller"].version == "1.0.0"
    assert all(p.repository == "hexpm" and p.app == p.name for p in lock.packages)


@pytest.mark.real_data
def test_phoenix_mix_lock_skips_git_entries_with_reasons() -> None:
    skipped = dict(_phoenix_lock().skipped)
    assert set(skipped) == {"elixir_nsq", "rummage_ecto"}
    assert "git" in skipped["elixir_nsq"]
    assert "https://github.com/wistia/elixir_nsq" in skipped["elixir_nsq"]


@pytest.mark.real_data
def test_phoenix_outer_checksums_match_the_tarballs() -> None:
    for package in _phoenix_lock().packages:
        tarball = PHOENIX / "tarballs" / f"{package.name}-{package.version}.tar"
        assert package.outer_checksum == hashlib.sha256(tarball.read_bytes()).digest(), tarball


MIX_VARIANTS = f"""%{{
  # a comment, and every key style mix has ever written
  "current": {{:hex, :current, "1.0.0", "{A}", [:mix],
    [{{:dep, "~> 1.0", [hex: :dep, repo: "hexpm", optional: false]}}], "hexpm", "{C}"}},
  "private": {{:hex, :private_pkg, "0.2.0-rc.1", "{A}", [:rebar3], [],
    "hexpm:myorg", "{C.upper()}"}},
  "no_outer": {{:hex, :no_outer, "2.0.0", "{A}", [:mix], [], "hexpm"}},
  "six": {{:hex, :six, "3.0.0", "{A}", [:mix], []}},
  "ancient": {{:hex, :ancient, "0.1.0"}},
  "renamed": {{:hex, :"other-name", "1.1.0", "{A}", [:make], [], "hexpm", "{C}"}},
  "arrow" => {{:hex, :arrow, "1.0.0", "{A}", [:mix], [], "hexpm", "{C}"}},
  "local": {{:path, "../local", [in_umbrella: true, opts: nil, n: -1_000]}},
  "forked": {{:git, "https://example.com/a \\"b\\".git", "abc123", [branch: "main"]}},
}}
"""


def test_mix_lock_variants() -> None:
    lock = parse_mix_lock(MIX_VARIANTS)
    by_app = {p.app: p for p in lock.packages}
    assert list(by_app) == ["current", "private", "no_outer", "six", "ancient", "renamed", "arrow"]
    assert by_app["current"].outer_checksum == bytes.fromhex(C)
    assert by_app["current"].inner_checksum == bytes.fromhex(A)
    assert by_app["private"].repository == "hexpm:myorg"
    assert by_app["private"].outer_checksum == bytes.fromhex(C)
    assert by_app["no_outer"].outer_checksum is None
    assert by_app["six"] == LockedPackage("six", "3.0.0", "hexpm", None, bytes.fromhex(A), "six")
    assert by_app["ancient"] == LockedPackage("ancient", "0.1.0", app="ancient")
    assert by_app["renamed"].name == "other-name"
    assert lock.skipped == [
        ("local", "path dependency ../local, not from Hex"),
        ("forked", 'git dependency https://example.com/a "b".git, not from Hex'),
    ]


def test_empty_mix_lock() -> None:
    assert parse_mix_lock("%{}\n") == MixLock()


REBAR_1_2 = f"""{{"1.2.0",
[{{<<"cowboy">>,{{pkg,<<"cowboy">>,<<"2.10.0">>}},0}},
 {{<<"my_app_name">>,{{pkg,<<"hex_name">>,<<"1.0.0">>}},1}},
 {{<<"gitdep">>,{{git,"https://example.com/gitdep.git",{{ref,"deadbeef"}}}},0}}]}}.
[
{{pkg_hash,[
 {{<<"cowboy">>, <<"{B}">>}},
 {{<<"my_app_name">>, <<"{C.upper()}">>}}]}},
{{pkg_hash_ext,[
 {{<<"cowboy">>, <<"{C.upper()}">>}},
 {{<<"my_app_name">>, <<"{B}">>}}]}}
].
"""

REBAR_1_1 = f"""%% rebar3 3.7 era: no pkg_hash_ext
{{"1.1.0",
[{{<<"cowboy">>,{{pkg,<<"cowboy">>,<<"2.6.0">>}},0}}]}}.
[
{{pkg_hash,[
 {{<<"cowboy">>, <<"{B}">>}}]}}
].
"""

REBAR_OLDEST = """[{<<"cowboy">>,{pkg,<<"cowboy">>,<<"1.0.4">>},0},
 {<<"ranch">>,{pkg,<<"ranch">>,<<"1.3.2">>},1},
 {<<"q">>,{'git',"https://example.com/q.git",{tag,"v1"}},0}].
"""


def test_rebar_lock_1_2_0() -> None:
    lock = parse_rebar_lock(REBAR_1_2)
    assert lock.packages == [
        LockedPackage("cowboy", "2.10.0", "hexpm", bytes.fromhex(C), bytes.fromhex(B), "cowboy"),
        LockedPackage(
            "hex_name", "1.0.0", "hexpm", bytes.fromhex(B), bytes.fromhex(C), "my_app_name"
        ),
    ]
    assert lock.skipped == [
        ("gitdep", "git dependency https://example.com/gitdep.git, not from Hex")
    ]


def test_rebar_lock_1_1_0_has_no_outer_checksum() -> None:
    (package,) = parse_rebar_lock(REBAR_1_1).packages
    assert package == LockedPackage("cowboy", "2.6.0", "hexpm", None, bytes.fromhex(B), "cowboy")


def test_rebar_lock_oldest_untagged_list() -> None:
    lock = parse_rebar_lock(REBAR_OLDEST)
    assert [(p.name, p.version, p.outer_checksum) for p in lock.packages] == [
        ("cowboy", "1.0.4", None),
        ("ranch", "1.3.2", None),
    ]
    assert lock.skipped == [("q", "git dependency https://example.com/q.git, not from Hex")]


def test_rebar_lock_empty_and_version_only() -> None:
    assert parse_rebar_lock("[].\n") == RebarLock()
    assert parse_rebar_lock('{"1.2.0",[]}.\n[].\n') == RebarLock()


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("mix.lock", "%{}", MixLock),
        ("/x/y/rebar.lock", "[].", RebarLock),
        ("deps.lock", "  %{}", MixLock),
        ("deps.lock", "[].", RebarLock),
    ],
)
def test_parse_lockfile_chooses_by_name_then_content(name: str, text: str, kind: type) -> None:
    assert type(parse_lockfile(name, text)) is kind


MALFORMED = [
    # (parser, text, line number the message must name)
    (parse_mix_lock, '%{\n  "a": {:hex, :a, "1.0.0\n}\n', 2),
    (parse_mix_lock, '%{\n  "a": {:hex, :a, "1.0.0"}}}\n', 2),
    (parse_mix_lock, '%{\n  "a": {:hex, :a, "1.0.0"},\n  "b": {:hex, :b,', 3),
    (parse_mix_lock, '%{\n  "a": {:hex, :a, "1.0.0"]\n}', 2),
    (parse_mix_lock, '%{\n\n  "a": {:hex, :a, "1.0.0", "nothex"}\n}', 3),
    (parse_mix_lock, '%{\n  "a": {:hex, "a", "1.0.0"}\n}', 2),
    (parse_mix_lock, '%{\n  "a": 42\n}', 2),
    (parse_mix_lock, "[1, 2]", 1),
    (parse_mix_lock, '%{"a" {:hex}}', 1),
    (parse_mix_lock, '%{\n  "a": {:hex, :a, "1.0.0", [:mix], &foo}\n}', 2),
    (parse_mix_lock, "", 1),
    (parse_rebar_lock, '{"1.2.0",\n[{<<"a">>,{pkg,<<"a>>,<<"1">>},0}]}.\n', 2),
    (parse_rebar_lock, '{"1.2.0",\n[{<<"a">>,{pkg,<<"a">>,<<"1">>},0}]\n', 3),
    (parse_rebar_lock, '{"1.2.0",\n[{<<"a">>,{pkg,<<"a">>,<<"1">>},0}]}}.\n', 2),
    (parse_rebar_lock, '{"1.2.0",\n[{<<"a">>,\n{pkg,<<"a">>,<<"1">>},0', 3),
    (parse_rebar_lock, '{"1.2.0",[]}.\n[{pkg_hash,[{<<"a">>,<<"XYZ">>}]}].\n', 2),
    (parse_rebar_lock, '[{<<"a">>,\n  Var}].', 2),
    (parse_rebar_lock, '[\n{<<"a">>, 1, 0}].', 2),
    (parse_rebar_lock, "", 1),
]


@pytest.mark.parametrize(("parser", "text", "line"), MALFORMED)
def test_malformed_input_names_the_line(
    parser: Callable[[str], object], text: str, line: int
) -> None:
    with pytest.raises(LockfileError) as info:
        parser(text)
    message = str(info.value)
    assert f"line {line}:" in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)
