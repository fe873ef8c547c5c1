"""``hexproxy warm``: the right files, verified, cached once, then served without upstream."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from hexproxy.airgap.lockfiles import parse_mix_lock
from hexproxy.airgap.resolve import parse_spec
from hexproxy.airgap.warm import WarmInputs, warm
from hexproxy.cache.wiring import build_cache
from hexproxy.registry import verify_package
from hexproxy.store.cachekey import tarball_key
from hexproxy.store.storage import FileStorage
from hexproxy.web import create_app
from tests.support.keys import test_private_key
from tests.support.repo import DepSpec, PackageSpec, build_repo
from tests.support.user_agents import AS_HEX_2_5
from tests.support.warming import (
    PHOENIX,
    PHOENIX_KEY,
    Served,
    cli_args,
    make_config,
    phoenix_files,
    run_cli,
    serve,
    tree_files,
    tree_lock,
    tree_pins,
)


def versions_tree() -> list[PackageSpec]:
    """Several versions each, pre-releases, an optional dependency, and a bystander."""
    return [
        PackageSpec("app", "1.0.0", [DepSpec("lib", "~> 1.0")]),
        PackageSpec(
            "app", "1.1.0", [DepSpec("lib", "~> 1.1"), DepSpec("opt", "~> 0.2", optional=True)]
        ),
        PackageSpec("app", "2.0.0-rc.1", [DepSpec("lib", "~> 2.0")]),
        PackageSpec("lib", "1.0.0"),
        PackageSpec("lib", "1.1.0"),
        PackageSpec("lib", "1.2.0", [DepSpec("base", ">= 0.1.0")]),
        PackageSpec("lib", "2.0.0"),
        PackageSpec("opt", "0.1.0"),
        PackageSpec("opt", "0.2.0"),
        PackageSpec("opt", "0.3.0-beta"),
        PackageSpec("base", "0.1.0"),
        PackageSpec("base", "0.2.0"),
        PackageSpec("base", "0.3.0-dev"),
        PackageSpec("bystander", "1.0.0"),
    ]


@pytest.fixture
async def phoenix(aiohttp_server: Any) -> Served:
    return await serve(aiohttp_server, phoenix_files())


@pytest.fixture
async def tree(aiohttp_server: Any) -> Served:
    return await serve(aiohttp_server, build_repo(versions_tree(), test_private_key()))


@pytest.fixture
async def locked(aiohttp_server: Any) -> Served:
    """The 15-package tree of tests/support/repo.py; `tree_lock()` locks 12 of it."""
    return await serve(aiohttp_server, tree_files())


def cached_tarballs(cache_dir: Path) -> set[str]:
    return {p.name for p in (cache_dir / "tarballs").glob("*/*.tar")}


@pytest.mark.real_data
async def test_phoenix_lock_warms_all_tarballs_then_serves_without_upstream(
    phoenix: Served, tmp_path: Path, aiohttp_client: Any
) -> None:
    cache_dir = tmp_path / "cache"
    lock = PHOENIX / "mix.lock"
    args = cli_args(phoenix.url, cache_dir, PHOENIX_KEY)
    assert await run_cli("warm", *args, "--lock", lock) == 0

    expected = {p.name for p in (PHOENIX / "tarballs").iterdir()}
    assert len(expected) == 32
    assert cached_tarballs(cache_dir) == expected
    for path in (cache_dir / "tarballs").glob("*/*.tar"):
        fixture = (PHOENIX / "tarballs" / path.name).read_bytes()
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(fixture).digest()

    url = phoenix.url
    await phoenix.stop()
    client = await aiohttp_client(create_app(make_config(url, cache_dir, PHOENIX_KEY)))
    for package in parse_mix_lock(lock.read_text()).packages:
        registry = await client.get(f"/packages/{package.name}")
        assert registry.status == 200
        assert await registry.read() == (PHOENIX / "packages" / package.name).read_bytes()
        name = f"{package.name}-{package.version}.tar"
        tarball = await client.get(f"/tarballs/{name}")
        assert tarball.status == 200, name
        assert await tarball.read() == (PHOENIX / "tarballs" / name).read_bytes()


async def test_second_run_fetches_no_tarball(
    locked: Served, tmp_path: Path, public_key_file: Path
) -> None:
    args = cli_args(locked.url, tmp_path / "cache", public_key_file)
    lock = tree_lock(tmp_path)
    assert await run_cli("warm", *args, "--lock", lock) == 0
    assert locked.tarball_requests() == len(tree_pins())
    before = len(locked.repo.requests)
    assert await run_cli("warm", *args, "--lock", lock) == 0
    assert len(locked.repo.requests) == before  # registry files are still fresh too


async def test_registry_older_than_ttl_is_revalidated_not_refetched(
    locked: Served, tmp_path: Path, public_key_file: Path
) -> None:
    config = make_config(locked.url, tmp_path / "cache", public_key_file, cache__registry_ttl=60)
    inputs = WarmInputs(specs=[parse_spec("cedar")])  # and kapok, hazel, larch, maple, nutmeg
    first = await _warm(config, inputs)
    tarballs = locked.tarball_requests()
    second = await _warm(config, inputs, later=120)  # every registry file is now stale
    assert first.tarballs_fetched == tarballs > 1
    assert second.tarballs_fetched == 0 and locked.tarball_requests() == tarballs
    assert second.registry_fetched == second.packages == first.packages
    assert locked.repo.count("/packages/cedar") == 2
    assert second.bytes == 0  # each answered 304


async def _warm(config: Any, inputs: WarmInputs, later: float = 0) -> Any:
    cache = build_cache(config)
    cache.clock = lambda: time.time() + later
    await cache.upstream.start()
    try:
        return await warm(cache, inputs)
    finally:
        await cache.close()


@pytest.mark.parametrize(
    ("specs", "all_versions", "expected"),
    [
        # Newest stable, optional dependency included, pre-releases skipped.
        (["app"], False, {"app-1.1.0", "lib-1.2.0", "opt-0.2.0", "base-0.2.0"}),
        (["app@~> 1.0"], False, {"app-1.1.0", "lib-1.2.0", "opt-0.2.0", "base-0.2.0"}),
        (["app@1.0.0"], False, {"app-1.0.0", "lib-1.2.0", "base-0.2.0"}),
        (["lib@~> 1.0.0"], False, {"lib-1.0.0"}),
        # A pre-release only when asked for by name.
        (["app@2.0.0-rc.1"], False, {"app-2.0.0-rc.1", "lib-2.0.0"}),
        (
            ["lib@~> 1.0", "opt"],
            True,
            {"lib-1.0.0", "lib-1.1.0", "lib-1.2.0", "base-0.2.0"} | {"opt-0.1.0", "opt-0.2.0"},
        ),
    ],
)
async def test_specs_choose_the_right_versions(
    tree: Served, tmp_path: Path, specs: list[str], all_versions: bool, expected: set[str]
) -> None:
    cache_dir = tmp_path / "cache"
    flags = ["--all-versions"] if all_versions else []
    assert (
        await run_cli("warm", *cli_args(tree.url, cache_dir, _tree_key(tmp_path)), *specs, *flags)
        == 0
    )
    assert cached_tarballs(cache_dir) == {f"{name}.tar" for name in expected}
    assert tree.tarball_requests() == len(expected)
    assert tree.repo.count("/packages/bystander") == 0


def _tree_key(tmp_path: Path) -> Path:
    from hexproxy.registry import public_key_pem

    path = tmp_path / "test_key.pem"
    path.write_bytes(public_key_pem(test_private_key().public_key()))
    return path


def rebar_lock(entries: dict[str, str], outer: dict[str, bytes]) -> str:
    deps = ",\n ".join(f'{{<<"{n}">>,{{pkg,<<"{n}">>,<<"{v}">>}},0}}' for n, v in entries.items())
    ext = ",\n ".join(f'{{<<"{n}">>, <<"{h.hex().upper()}">>}}' for n, h in outer.items())
    return f'{{"1.2.0",\n[{deps}]}}.\n[\n{{pkg_hash_ext,[\n {ext}]}}\n].\n'


async def test_rebar_lock_warms_pinned_versions_and_checks_pkg_hash_ext(
    tree: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = tree.repo.files
    digest = {k: hashlib.sha256(files[f"tarballs/{k}.tar"]).digest() for k in ("lib-1.1.0",)}
    lock = tmp_path / "rebar.lock"
    lock.write_text(
        rebar_lock(
            {"lib": "1.1.0", "opt": "0.1.0"},
            {"lib": digest["lib-1.1.0"], "opt": b"\x01" * 32},  # opt's hash is wrong
        )
    )
    cache_dir = tmp_path / "cache"
    status = await run_cli(
        "warm", *cli_args(tree.url, cache_dir, _tree_key(tmp_path)), "--lock", lock
    )
    assert status == 1
    assert cached_tarballs(cache_dir) == {"lib-1.1.0.tar"}  # locks pin; no dependency walk
    err = capsys.readouterr().err
    assert "FAILED opt 0.1.0: the lock's outer checksum differs from the signed registry's" in err
    assert tree.repo.count("/tarballs/opt-0.1.0.tar") == 0


async def test_other_repositories_and_git_deps_are_reported_and_skipped(
    tree: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lib = verify_package(
        tree.repo.files["packages/lib"],
        test_private_key().public_key(),
        repository="hexpm",
        name="lib",
        max_uncompressed=1 << 20,
    ).releases[0]
    assert lib.outer_checksum is not None
    lock = tmp_path / "mix.lock"
    zeros = "0" * 64
    lock.write_text(
        "%{\n"
        f'  "lib": {{:hex, :lib, "1.0.0", "{lib.inner_checksum.hex()}", [:mix], [], "hexpm", '
        f'"{lib.outer_checksum.hex()}"}},\n'
        f'  "secret": {{:hex, :secret, "1.0.0", "{zeros}", [:mix], [], "hexpm:acme"}},\n'
        '  "thing": {:git, "https://example.invalid/thing.git", "abc", []},\n'
        "}\n"
    )
    status = await run_cli(
        "warm", *cli_args(tree.url, tmp_path / "c", _tree_key(tmp_path)), "--lock", lock
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "skipped secret 1.0.0: in repository 'hexpm:acme'" in out
    assert "skipped mix.lock thing: git dependency" in out
    assert tree.repo.count("/packages/secret") == 0
    assert tree.repo.count("/tarballs/lib-1.0.0.tar") == 1


async def test_failures_are_listed_and_nothing_bad_is_stored(
    tree: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree.repo.fail("flip", "/tarballs/lib-1.2.0.tar")
    cache_dir = tmp_path / "cache"
    status = await run_cli(
        "warm",
        *cli_args(tree.url, cache_dir, _tree_key(tmp_path)),
        "lib@~> 1.2",
        "nosuch",
        "--json",
    )
    assert status == 1
    err = capsys.readouterr()
    assert '"what": "lib 1.2.0"' in err.out and '"what": "/packages/nosuch"' in err.out
    assert FileStorage(cache_dir).stat(tarball_key("lib", "1.2.0")) is None
    assert "base-0.2.0.tar" in cached_tarballs(cache_dir)  # the rest carried on


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["warm"], "nothing to warm"),
        (["warm", "Bad!"], "is not a package name"),
        (["warm", "lib@~>"], "invalid requirement"),
        (["warm", "lib@1.2"], "only '~>' may omit the patch"),
        (["warm", "--lock", "/nonexistent/mix.lock"], "cannot read lock file"),
        (["warm", "lib", "--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from hexproxy.cli import main

    assert main([*argv, "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("hexproxy: error: ")


def test_unparseable_lock_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hexproxy.cli import main

    lock = tmp_path / "mix.lock"
    lock.write_text('%{"x": {:hex, :x,')
    assert main(["warm", "--lock", str(lock), "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mix.lock" in err


async def test_offline_miss_says_not_in_this_offline_cache(
    locked: Served, tmp_path: Path, aiohttp_client: Any, public_key_file: Path
) -> None:
    cache_dir = tmp_path / "cache"
    args = cli_args(locked.url, cache_dir, public_key_file)
    assert await run_cli("warm", *args, "ivy") == 0
    config = make_config(locked.url, cache_dir, public_key_file, upstream__offline=True)
    await locked.stop()
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/packages/ivy")).status == 200
    for path in ("/packages/elm", "/tarballs/elm-0.5.2.tar"):
        response = await client.get(path, headers=AS_HEX_2_5)
        assert response.status == 404
        assert "not in this offline cache" in response.headers["x-hex-message"]


def test_terminal_progress_is_one_rewritten_line() -> None:
    import io

    from hexproxy.airgap.warm import WarmReport
    from hexproxy.cli.warm import TtyProgress

    stream = io.StringIO()
    progress = TtyProgress(stream)
    report = WarmReport(packages=3, releases=2, tarballs_fetched=1, bytes=3 * 1024 * 1024)
    progress.update(report)
    progress.update(report)  # within 0.1 s: not redrawn
    progress.finish()
    text = stream.getvalue()
    assert "\n" not in text and text.count("\r\x1b[K") == 2
    assert "3 packages, 2 releases, 1 tarballs fetched" in text and "3.0 MiB" in text
