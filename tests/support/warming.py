"""Helpers for the warm and bundle tests: a fake upstream serving a given tree, configs
pointing at it, a mix.lock for a built tree, and in-process runs of the ``hexproxy`` CLI.

The built tree (`tree_files()`, the repository drawn in tests/support/repo.py) and its
lock (`tree_lock()`) stand in for the real Phoenix tree wherever a test needs a lock and
a dependency graph but not real files; `PHOENIX` is for the tests marked real_data.

The CLI runs ``asyncio.run`` itself, so tests call it in a worker thread
(``run_cli``) while the fake upstream keeps answering on the test's own loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from hexproxy import cli
from hexproxy.config import Config, load_config
from hexproxy.registry import verify_package
from tests.fakes.hex_repo import FakeHexRepo
from tests.support.fixtures import FIXTURES
from tests.support.keys import test_private_key
from tests.support.repo import build_repo, erlang_tree, expected_lock

PHOENIX = FIXTURES / "phoenix-tree"
PHOENIX_KEY = PHOENIX / "public_key"


def phoenix_files() -> dict[str, bytes]:
    """Every file of the phoenix tree, keyed by its path under the repository URL."""
    files = {name: (PHOENIX / name).read_bytes() for name in ("names", "versions")}
    for folder in ("packages", "tarballs"):
        for path in sorted((PHOENIX / folder).iterdir()):
            files[f"{folder}/{path.name}"] = path.read_bytes()
    return files


@functools.cache
def tree_files() -> dict[str, bytes]:
    """The 15-package tree of tests/support/repo.py, signed with the test key."""
    return build_repo(erlang_tree(), test_private_key())


def tree_pins() -> dict[str, str]:
    """Name -> version a mix project on the tree locks (Hex leaves optional deps out)."""
    return expected_lock(with_optional=False)


def mix_lock(files: Mapping[str, bytes], pins: Mapping[str, str]) -> str:
    """A mix.lock pinning ``pins``, with the checksums the signed registry in ``files``
    gives each release, in the shape mix writes."""
    lines = []
    for name, version in sorted(pins.items()):
        package = verify_package(
            files[f"packages/{name}"],
            test_private_key().public_key(),
            repository="hexpm",
            name=name,
            max_uncompressed=1 << 20,
        )
        release = package.release(version)
        assert release is not None and release.outer_checksum is not None, (name, version)
        lines.append(
            f'  "{name}": {{:hex, :{name}, "{version}", "{release.inner_checksum.hex()}", '
            f'[:rebar3], [], "hexpm", "{release.outer_checksum.hex()}"}},'
        )
    return "%{\n" + "\n".join(lines) + "\n}\n"


def tree_lock(directory: Path) -> Path:
    """``directory/mix.lock`` for `tree_pins()`."""
    path = directory / "mix.lock"
    path.write_text(mix_lock(tree_files(), tree_pins()))
    return path


@dataclass
class Served:
    repo: FakeHexRepo
    server: TestServer

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def tarball_requests(self) -> int:
        return sum(1 for seen in self.repo.requests if seen.path.startswith("/tarballs/"))

    async def stop(self) -> None:
        await self.server.close()


async def serve(aiohttp_server: Any, files: dict[str, bytes]) -> Served:
    repo = FakeHexRepo(dict(files))
    return Served(repo, await aiohttp_server(repo.app()))


def make_config(url: str, cache_dir: Path, key_file: Path, **overrides: Any) -> Config:
    """A config for ``url``; overrides are ``section__key=value`` as in conftest."""
    values: dict[tuple[str, str], Any] = {
        ("cache", "dir"): str(cache_dir),
        ("upstream", "url"): url,
        ("upstream", "public_key"): str(key_file),
        ("upstream", "connect_timeout"): 1.0,
        ("upstream", "read_timeout"): 5.0,
    }
    for name, value in overrides.items():
        section, _, key = name.partition("__")
        values[(section, key)] = value
    return load_config(None, {}, values)


def cli_args(url: str, cache_dir: Path, key_file: Path) -> list[str]:
    """The common flags, pointing the CLI at a fake upstream and a cache."""
    return ["--upstream", url, "--cache-dir", str(cache_dir), "--public-key", str(key_file)]


async def run_cli(*argv: str | Path) -> int:
    main: Callable[[list[str]], int] = cli.main
    return await asyncio.to_thread(main, [str(a) for a in argv])
