"""The Erlang term codecs, checked against Erlang/OTP itself.

Each case is written once in Erlang syntax and once as the Python value: Erlang's
``term_to_binary`` must decode to the value, our encoding must be what
``binary_to_term(B, [safe])`` reads back as the same term, and ``io_lib_pretty`` output
(what hex_core writes into metadata.config) must parse to it. Without ``erl`` the
Erlang half skips (fails under CI=true, like the rebar3 tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hexproxy.hosted import etf
from hexproxy.hosted.consult import ConsultError, parse_terms
from hexproxy.hosted.etf import Atom, EtfError

CASES: list[tuple[str, Any]] = [
    (
        '#{<<"status">> => 422, <<"message">> => <<"Validation failed">>, '
        '<<"errors">> => #{<<"name">> => <<"metadata does not match package name">>}}',
        {
            "status": 422,
            "message": "Validation failed",
            "errors": {"name": "metadata does not match package name"},
        },
    ),
    ('#{<<"organizations">> => []}', {"organizations": []}),
    (
        "[0, 255, 256, -1, 70000, -70000, 1 bsl 40, -(1 bsl 70)]",
        [0, 255, 256, -1, 70000, -70000, 1 << 40, -(1 << 70)],
    ),
    ('{<<"a">>, [], nil, true, false}', ("a", [], None, True, False)),
    ('<<"h", 233/utf8, "llo ", 9731/utf8>>', "héllo ☃"),
    ("<<255, 0, 1>>", b"\xff\x00\x01"),
    (
        '#{<<"reason">> => <<"security">>, <<"message">> => <<"CVE-2026-1">>}',
        {"reason": "security", "message": "CVE-2026-1"},
    ),
    ("[foo, 'Quoted atom']", [Atom("foo"), Atom("Quoted atom")]),
]


def _erl() -> str:
    found = shutil.which("erl")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but erl is not installed", pytrace=False)
        pytest.skip("erl is not installed")
    return found


def run_erlang(tmp: Path, body: str) -> str:
    """Evaluate Erlang expressions (``erl -eval``) in ``tmp``; return what they print."""
    done = subprocess.run(
        [_erl(), "-noshell", "-eval", body + ", halt()."],
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_codec_agrees_with_erlang(tmp_path: Path) -> None:
    for i, (_, value) in enumerate(CASES):
        (tmp_path / f"py{i}.bin").write_bytes(etf.encode(value))
    checks = ", ".join(
        f'{{ok, P{i}}} = file:read_file("py{i}.bin"), '
        f'ok = file:write_file("erl{i}.bin", term_to_binary({source})), '
        f'io:format("~p~n", [binary_to_term(P{i}, [safe]) =:= ({source})])'
        for i, (source, _) in enumerate(CASES)
    )
    out = run_erlang(tmp_path, checks)
    assert out.split() == ["true"] * len(CASES), out
    for i, (_, value) in enumerate(CASES):
        assert etf.decode((tmp_path / f"erl{i}.bin").read_bytes()) == value, i


def test_metadata_as_hex_core_prints_it_parses(tmp_path: Path) -> None:
    long = "a long description " * 12
    meta = (
        f'[{{<<"name">>, <<"acme_core">>}}, {{<<"description">>, <<"{long}ünïcode"/utf8>>}}, '
        '{<<"requirements">>, [{<<"jason">>, [{<<"app">>, <<"jason">>}, '
        '{<<"optional">>, false}, {<<"requirement">>, <<"~> 1.4">>}, '
        '{<<"repository">>, <<"hexpm">>}]}]}, {<<"files">>, [<<"lib/a.ex">>, "old/string"]}, '
        '{<<"extra">>, #{<<"k">> => 1}}]'
    )
    # hex_core's encode_metadata: io_lib_pretty:print of each pair, then ".\n".
    out = run_erlang(
        tmp_path,
        f"Meta = {meta}, "
        'Text = [[io_lib_pretty:print(P, [{encoding, utf8}]), ".\\n"] || P <- Meta], '
        'file:write_file("metadata.config", unicode:characters_to_binary(Text))',
    )
    assert out == ""
    text = (tmp_path / "metadata.config").read_text("utf-8")
    parsed = dict(parse_terms(text))  # type: ignore[arg-type]
    assert parsed["name"] == "acme_core"
    assert parsed["description"] == long + "ünïcode"
    assert parsed["requirements"] == [
        (
            "jason",
            [
                ("app", "jason"),
                ("optional", False),
                ("requirement", "~> 1.4"),
                ("repository", "hexpm"),
            ],
        )
    ]
    assert parsed["files"] == ["lib/a.ex", "old/string"]
    assert parsed["extra"] == {"k": 1}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x83",
        b"\x84a\x01",
        b"\x83m\x00\x00\x00\x10abc",  # truncated binary
        b"\x83l\xff\xff\xff\xffj",  # a list claiming 4 billion elements
        b"\x83l\x00\x00\x00\x01a\x01a\x02",  # improper list
        b"\x83a\x01a\x02",  # trailing bytes
        b"\x83F" + b"\x00" * 8,  # a float: not in the subset
        b"\x83" + b"h\x01" * 100 + b"j",  # nested deeper than allowed
    ],
)
def test_decoder_refuses_what_it_should(data: bytes) -> None:
    with pytest.raises(EtfError):
        etf.decode(data)


@pytest.mark.parametrize(
    "text",
    [
        '{<<"a">>, 1}',
        "{a, fun() -> ok end}.",
        '{<<"\u2603">>}.',
        "{1.5}.",
        "#{a}.",
        "[" * 100 + "]" * 100 + ".",
    ],
)
def test_consult_refuses_what_it_should(text: str) -> None:
    with pytest.raises(ConsultError):
        parse_terms(text)
