"""Drive the real mix (with the Hex archive) against a Hex repository on 127.0.0.1.

`MixProject` lays out a throw-away Mix project depending on some Hex packages, with a
fresh ``HEX_HOME`` per project (Hex's package cache and ``hex.config``) that trusts the
test signing key for the ``hexpm`` repo (``mix hex.repo set hexpm --public-key``), and
runs mix commands with ``HEX_MIRROR`` pointing at the given URL.

The Hex archive lives under ``MIX_HOME`` (``~/.mix/archives``), so ``MIX_HOME`` is the
developer's own, while ``HOME`` and ``HEX_HOME`` are private to the test. Packages built
with rebar3 are compiled by the rebar3 found on PATH (``MIX_REBAR3``), so mix never asks
to install one.

`require_mix()` skips the test when mix or the Hex archive is missing: mix is optional,
unlike rebar3 (see tests/support/rebar3.py).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hexproxy.airgap.lockfiles import parse_mix_lock
from tests.support.command import CommandResult, run_command

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["MixProject", "MixResult", "require_mix"]

PROJECT_APP = "hexproxy_e2e"


def _mix_home() -> str:
    return os.environ.get("MIX_HOME") or str(Path.home() / ".mix")


@functools.cache
def _mix_problem() -> str | None:
    """Why mix with Hex cannot run here, or None when it can."""
    exe = shutil.which("mix")
    if exe is None:
        return "mix is not installed (no `mix` on PATH)"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(Path.home()), "MIX_HOME": _mix_home()}
    try:
        done = subprocess.run(
            [exe, "hex.info"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={**env, "LANG": "C.UTF-8", "HEX_OFFLINE": "1"},
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`mix hex.info` did not run: {exc}"
    if done.returncode != 0:
        first = (done.stdout + done.stderr).strip().splitlines()[:1]
        return f"the Hex archive is not installed (`mix hex.info` failed: {first}); `mix local.hex`"
    return None


def require_mix() -> None:
    """Skip the test unless mix and its Hex archive are installed."""
    problem = _mix_problem()
    if problem is not None:
        pytest.skip(f"mix client tests need Elixir with Hex: {problem}")


MixResult = CommandResult  # the name the tests use


class MixProject:
    """A Mix project under ``root / "project"`` using the Hex mirror at ``mirror_url``."""

    def __init__(
        self,
        root: Path,
        *,
        mirror_url: str,
        public_key_file: Path,
        deps: Sequence[tuple[str, str]],
        timeout: float = 300.0,
    ) -> None:
        self.root = root
        self.project_dir = root / "project"
        self.home = root / "home"
        self.hex_home = root / "hex_home"
        self.mirror_url = mirror_url.rstrip("/")  # Hex wants no trailing slash
        self.public_key_file = public_key_file
        self.deps = list(deps)
        self.timeout = timeout
        self._write()

    def _write(self) -> None:
        for directory in (self.project_dir / "lib", self.project_dir / "src", self.home):
            directory.mkdir(parents=True, exist_ok=True)
        self.hex_home.mkdir(parents=True, exist_ok=True)
        deps = ",\n      ".join(f'{{:{name}, "{req}"}}' for name, req in self.deps)
        (self.project_dir / "mix.exs").write_text(
            "defmodule HexproxyE2e.MixProject do\n"
            "  use Mix.Project\n\n"
            "  def project do\n"
            f'    [app: :{PROJECT_APP}, version: "0.1.0", deps: deps()]\n'
            "  end\n\n"
            "  def application, do: [extra_applications: [:logger]]\n\n"
            "  defp deps do\n"
            f"    [\n      {deps}\n    ]\n"
            "  end\n"
            "end\n"
        )
        (self.project_dir / "lib" / "hexproxy_e2e.ex").write_text(
            "defmodule HexproxyE2e do\n  def hello, do: :world\nend\n"
        )
        # An Erlang module including each root's header: the compile fails if a root
        # was not fetched (the packages of tests/support/repo.py ship include/NAME.hrl).
        includes = "".join(f'-include_lib("{n}/include/{n}.hrl").\n' for n, _ in self.deps)
        pairs = ", ".join(f"{{{n}, ?{n.upper()}_VSN}}" for n, _ in self.deps)
        (self.project_dir / "src" / "hexproxy_e2e_roots.erl").write_text(
            f"-module(hexproxy_e2e_roots).\n{includes}-export([roots/0]).\n\n"
            f"roots() -> [{pairs}].\n"
        )

    def env(self) -> dict[str, str]:
        """The complete environment mix runs with (no proxy variables, nothing inherited)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "MIX_HOME": _mix_home(),
            "MIX_ENV": "dev",
            "HEX_HOME": str(self.hex_home),
            "HEX_MIRROR": self.mirror_url,
        }
        rebar3 = shutil.which("rebar3")
        if rebar3 is not None:
            env["MIX_REBAR3"] = rebar3
        return env

    async def run(self, *args: str) -> MixResult:
        return await run_command(
            "mix", args, cwd=self.project_dir, env=self.env(), limit=self.timeout
        )

    async def trust_key(self) -> MixResult:
        """Make this HEX_HOME's hexpm repo verify with the test key (kept in hex.config)."""
        return await self.run("hex.repo", "set", "hexpm", "--public-key", str(self.public_key_file))

    async def deps_get(self) -> MixResult:
        return await self.run("deps.get")

    async def compile(self) -> MixResult:
        return await self.run("compile")

    def lock(self) -> dict[str, str]:
        """Hex package name -> version from the project's mix.lock."""
        parsed = parse_mix_lock((self.project_dir / "mix.lock").read_text())
        return {p.name: p.version for p in parsed.packages}
