"""Drive the hex_core that ships inside rebar3 (its ``r3_hex_*`` modules) from tests.

rebar3_hex, the publish plugin, cannot be installed offline, but rebar3's escript
carries the same library it is built on: ``r3_hex_tarball:create/2`` builds a package
the way real clients do, and ``r3_hex_api_release:publish/2``, ``retire/4``,
``delete/3`` and ``r3_hex_api_user:me/1`` speak the Hex HTTP API (term-format bodies,
``Expect: 100-continue``). A small escript loads those modules out of rebar3's archive
and prints each result with ``~p``, which ``hexproxy.hosted.consult`` reads back.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hexproxy.hosted.consult import parse_terms
from tests.support.command import run_command

_DRIVER = r"""#!/usr/bin/env escript
%%! -noshell
main([Rebar3, Cmd | Args]) ->
    {ok, Sections} = escript:extract(Rebar3, []),
    {archive, Zip} = lists:keyfind(archive, 1, Sections),
    {ok, Files} = zip:extract(Zip, [memory]),
    [load(N, B) || {N, B} <- Files, lists:prefix("rebar/ebin/r3_hex", N)],
    {ok, _} = application:ensure_all_started(inets),
    io:format("~p.~n", [run(Cmd, Args)]).

load(Name, Beam) ->
    Mod = list_to_atom(filename:basename(Name, ".beam")),
    {module, Mod} = code:load_binary(Mod, Name, Beam).

config(Url, Key) ->
    maps:merge(r3_hex_core:default_config(),
               #{api_url => list_to_binary(Url), api_key => list_to_binary(Key)}).

run("tarball", [SpecFile, Out]) ->
    {ok, [#{metadata := Meta, files := Files}]} = file:consult(SpecFile),
    {ok, #{tarball := Tarball}} = r3_hex_tarball:create(Meta, Files),
    ok = file:write_file(Out, Tarball),
    ok;
run("publish", [Url, Key, File]) ->
    {ok, Tarball} = file:read_file(File),
    answer(r3_hex_api_release:publish(config(Url, Key), Tarball));
run("retire", [Url, Key, Name, Vsn, Reason, Message]) ->
    Params = #{<<"reason">> => list_to_binary(Reason), <<"message">> => list_to_binary(Message)},
    answer(r3_hex_api_release:retire(config(Url, Key), list_to_binary(Name),
                                     list_to_binary(Vsn), Params));
run("delete", [Url, Key, Name, Vsn]) ->
    answer(r3_hex_api_release:delete(config(Url, Key), list_to_binary(Name), list_to_binary(Vsn)));
run("me", [Url, Key]) ->
    answer(r3_hex_api_user:me(config(Url, Key))).

answer({ok, {Status, _Headers, Body}}) -> {Status, Body};
answer(Other) -> {error, Other}.
"""


@dataclass
class HexCoreResult:
    status: int | None
    body: Any
    output: str


def rebar3_path() -> str:
    found = shutil.which("rebar3")
    assert found is not None, "require_rebar3() first"
    return found


class HexCore:
    """Runs the driver escript in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.driver = workdir / "hexcore_driver.escript"
        self.driver.write_text(_DRIVER)

    async def _run(self, *args: str) -> Any:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(self.workdir)}
        done = await run_command(
            "escript",
            (str(self.driver), rebar3_path(), *args),
            cwd=self.workdir,
            env=env,
            limit=120,
        )
        assert done.ok, done
        return parse_terms(done.stdout)[-1]

    async def tarball(
        self, name: str, version: str, requirements: dict[str, str], out: Path
    ) -> None:
        """A package built by hex_core itself (no repository in its requirements, as
        rebar3_hex writes them), with one module and one header per requirement."""
        reqs = ", ".join(
            f'<<"{dep}">> => #{{<<"app">> => <<"{dep}">>, <<"optional">> => false, '
            f'<<"requirement">> => <<"{req}">>}}'
            for dep, req in requirements.items()
        )
        includes = "".join(f'-include_lib(\\"{d}/include/{d}.hrl\\").\\n' for d in requirements)
        apps = ", ".join(["kernel", "stdlib", *requirements])
        files = [
            (f"include/{name}.hrl", f'-define({name.upper()}_VSN, <<\\"{version}\\">>).\\n'),
            (f"src/{name}.erl", f"-module({name}).\\n{includes}-export([v/0]).\\nv() -> ok.\\n"),
            (
                f"src/{name}.app.src",
                f'{{application, {name}, [{{vsn, \\"{version}\\"}}, {{applications, [{apps}]}}, '
                f'{{description, \\"{name}\\"}}]}}.\\n',
            ),
            (
                "rebar.config",
                "{deps, ["
                + ", ".join(f'{{{d}, \\"{r}\\"}}' for d, r in requirements.items())
                + "]}.\\n",
            ),
        ]
        file_terms = ", ".join(f'{{"{path}", <<"{body}">>}}' for path, body in files)
        spec = (
            f'#{{metadata => #{{<<"name">> => <<"{name}">>, <<"version">> => <<"{version}">>, '
            f'<<"app">> => <<"{name}">>, <<"description">> => <<"{name} (hex_core built)">>, '
            f'<<"licenses">> => [<<"Apache-2.0">>], <<"build_tools">> => [<<"rebar3">>], '
            f'<<"files">> => [{", ".join(f"<<{chr(34)}{p}{chr(34)}>>" for p, _ in files)}], '
            f'<<"requirements">> => #{{{reqs}}}}}, files => [{file_terms}]}}.\n'
        )
        spec_file = self.workdir / f"{name}-{version}.spec"
        spec_file.write_text(spec)
        await self._run("tarball", str(spec_file), str(out))

    async def publish(self, api_url: str, key: str, tarball: Path) -> HexCoreResult:
        return _result(await self._run("publish", api_url, key, str(tarball)))

    async def retire(
        self, api_url: str, key: str, name: str, version: str, reason: str, message: str
    ) -> HexCoreResult:
        return _result(await self._run("retire", api_url, key, name, version, reason, message))

    async def delete(self, api_url: str, key: str, name: str, version: str) -> HexCoreResult:
        return _result(await self._run("delete", api_url, key, name, version))

    async def me(self, api_url: str, key: str) -> HexCoreResult:
        return _result(await self._run("me", api_url, key))


def _result(term: Any) -> HexCoreResult:
    if isinstance(term, tuple) and len(term) == 2 and isinstance(term[0], int):
        return HexCoreResult(term[0], term[1], repr(term))
    return HexCoreResult(None, term, repr(term))
