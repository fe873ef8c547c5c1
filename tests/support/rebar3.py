"""Drive the real rebar3 against a Hex repository on 127.0.0.1, fully isolated.

`Rebar3Project` lays out a throw-away project that depends on some Hex packages, plus a
private HOME, rebar3 cache and global config (trusting the test signing key for the
`hexpm` repo), and runs rebar3 commands with `HEX_CDN` pointing at the given URL. The
process runs through asyncio, so an aiohttp server in the same event loop keeps serving.

`require_rebar3()` skips a test when rebar3 is not installed, except under `CI=true`
where a missing client is a broken CI image and must fail (see .ci/install-erlang.sh).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest

from hexproxy.airgap.lockfiles import parse_rebar_lock
from tests.support.command import CommandResult, run_command

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

__all__ = ["PROJECT_APP", "Rebar3Project", "Rebar3Result", "require_rebar3"]

# The application name of the generated top-level project.
PROJECT_APP = "hexproxy_e2e"

_INSTALL_HINT = "run .ci/install-erlang.sh (as root) to install Erlang and rebar3"


@functools.cache
def _rebar3_version() -> str | None:
    """`rebar3 version` output, or None when rebar3 is absent or cannot start."""
    exe = shutil.which("rebar3")
    if exe is None:
        return None
    try:
        done = subprocess.run(
            [exe, "version"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def require_rebar3() -> str:
    """Return the rebar3 version line; skip the test without rebar3 (fail under CI=true)."""
    version = _rebar3_version()
    if version is not None:
        return version
    reason = f"rebar3 is not installed or does not start; {_INSTALL_HINT}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


Rebar3Result = CommandResult  # the name the tests use


class Rebar3Project:
    """A rebar3 project under ``root`` using the Hex repository at ``cdn_url``.

    ``root`` gets four directories: ``project`` (rebar.config, one app that includes a
    header of every root dependency, so `compile` proves they were fetched), ``home``,
    ``cache`` (REBAR_CACHE_DIR) and ``global`` (REBAR_GLOBAL_CONFIG_DIR).
    """

    def __init__(
        self,
        root: Path,
        *,
        cdn_url: str,
        public_key_pem: bytes,
        deps: Sequence[tuple[str, str]],
        timeout: float = 180.0,
        debug: bool = False,
        extra_env: Mapping[str, str] | None = None,
        org_keys: Mapping[str, str | None] | None = None,
    ) -> None:
        self.root = root
        self.project_dir = root / "project"
        self.home = root / "home"
        self.cache_dir = root / "cache"
        self.global_config_dir = root / "global"
        self.cdn_url = cdn_url.rstrip("/")
        self.public_key_pem = public_key_pem
        self.deps = list(deps)
        self.timeout = timeout
        self.debug = debug
        self.extra_env = dict(extra_env or {})
        # hex.pm organizations to use, each as a `hexpm:ORG` repo with this repo_key (None:
        # the repo without a key).
        self.org_keys = dict(org_keys or {})
        self._write()

    # -- layout --------------------------------------------------------------

    def _write(self) -> None:
        for directory in (self.project_dir / "src", self.home, self.cache_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.write_rebar_config(self.deps)
        src = self.project_dir / "src"
        (src / f"{PROJECT_APP}.app.src").write_text(self._app_src())
        (src / f"{PROJECT_APP}.erl").write_text(self._module())
        global_config = self.global_config_dir / ".config" / "rebar3" / "rebar.config"
        global_config.parent.mkdir(parents=True, exist_ok=True)
        global_config.write_text(self._global_config())

    def write_rebar_config(self, deps: Sequence[tuple[str, str]]) -> None:
        """(Re)write the project's rebar.config, e.g. to change requirements between runs."""
        self.deps = list(deps)
        entries = ", ".join(f'{{{name}, "{req}"}}' for name, req in self.deps)
        (self.project_dir / "rebar.config").write_text(
            f"{{erl_opts, [debug_info]}}.\n{{deps, [{entries}]}}.\n"
        )

    def _app_src(self) -> str:
        apps = ", ".join(["kernel", "stdlib", *(name for name, _ in self.deps)])
        return (
            f"{{application, {PROJECT_APP},\n"
            f' [{{description, "hexproxy end-to-end project"}},\n'
            f'  {{vsn, "0.1.0"}},\n'
            f"  {{applications, [{apps}]}}]}}.\n"
        )

    def _module(self) -> str:
        # Including each root's header fails the compile when a root is missing; the
        # generated packages of tests/support/repo.py all ship include/NAME.hrl.
        includes = "".join(f'-include_lib("{n}/include/{n}.hrl").\n' for n, _ in self.deps)
        pairs = ", ".join(f"{{{n}, ?{n.upper()}_VSN}}" for n, _ in self.deps)
        return f"-module({PROJECT_APP}).\n{includes}-export([roots/0]).\n\nroots() -> [{pairs}].\n"

    def _global_config(self) -> str:
        # rebar3 merges a user repo named "hexpm" into its default hexpm entry
        # (rebar_hex_repos:repos/1, user keys win), so this only swaps the public key.
        # HEX_CDN then replaces that repo's URL. The PEM's newlines are fine inside an
        # Erlang binary string.
        # An organization repo `hexpm:ORG` takes its URL (HEX_CDN + /repos/ORG) and public
        # key from the hexpm entry (rebar_hex_repos); it is listed before hexpm, so rebar3
        # asks it first for every package and moves on to hexpm after its 404.
        pem = self.public_key_pem.decode("ascii").strip()
        orgs = "".join(
            f'#{{name => <<"hexpm:{org}">>'
            + (f', repo_key => <<"{key}">>' if key is not None else "")
            + "},\n                 "
            for org, key in self.org_keys.items()
        )
        return (
            f"{{hex, [{{repos, [{orgs}"
            '#{name => <<"hexpm">>,\n'
            f'                  repo_public_key => <<"{pem}\n">>}}]}}]}}.\n'
        )

    # -- running ---------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """The complete environment rebar3 runs with (nothing else is inherited)."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "HEX_CDN": self.cdn_url,
            "REBAR_CACHE_DIR": str(self.cache_dir),
            "REBAR_GLOBAL_CONFIG_DIR": str(self.global_config_dir),
            "REBAR_COLOR": "none",
            # Never any proxy: the repository is on loopback, and rebar3's httpc has no
            # no_proxy support. Not inheriting the environment already drops them.
        }
        if self.debug:
            env["DEBUG"] = "1"
        env.update(self.extra_env)
        return env

    async def run(self, *args: str, time_limit: float | None = None) -> Rebar3Result:
        """Run ``rebar3 ARGS`` in the project; kill it after ``time_limit`` seconds."""
        limit = self.timeout if time_limit is None else time_limit
        return await run_command("rebar3", args, cwd=self.project_dir, env=self.env(), limit=limit)

    async def get_deps(self) -> Rebar3Result:
        return await self.run("get-deps")

    async def compile(self) -> Rebar3Result:
        return await self.run("compile")

    async def update(self) -> Rebar3Result:
        return await self.run("update")

    async def upgrade_all(self) -> Rebar3Result:
        return await self.run("upgrade", "--all")

    # -- results ---------------------------------------------------------------

    @property
    def lock_path(self) -> Path:
        return self.project_dir / "rebar.lock"

    def lock(self) -> dict[str, str]:
        """Hex package name -> version from the project's rebar.lock."""
        parsed = parse_rebar_lock(self.lock_path.read_text())
        return {p.name: p.version for p in parsed.packages}

    def lock_checksums(self) -> dict[str, bytes | None]:
        """Hex package name -> outer checksum (pkg_hash_ext) recorded in rebar.lock."""
        parsed = parse_rebar_lock(self.lock_path.read_text())
        return {p.name: p.outer_checksum for p in parsed.packages}

    def clean_build(self) -> None:
        """Forget fetched sources (``_build``) but keep rebar3's cache and the lock."""
        shutil.rmtree(self.project_dir / "_build", ignore_errors=True)
