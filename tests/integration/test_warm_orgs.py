"""``hexproxy warm --org ORG`` (the key from the environment) and ``hexproxy orgs hash-key``,
then an offline proxy serving what was warmed to the listed key only."""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any

import pytest

from hexproxy.orgs import listed_hash
from hexproxy.registry import Package, verify_package
from hexproxy.store.cachekey import package_key, tarball_key
from hexproxy.store.storage import FileStorage
from hexproxy.web import create_app
from tests.conftest import Upstream
from tests.support.keys import test_private_key
from tests.support.orgs import ACME_KEY, GLOBEX_KEY, add_orgs, org_files
from tests.support.warming import cli_args, make_config, run_cli

FILES = org_files()


@pytest.fixture
def orgs_upstream(upstream: Upstream) -> Upstream:
    add_orgs(upstream.repo)
    return upstream


def acme_package(name: str) -> Package:
    return verify_package(
        FILES[f"repos/acme/packages/{name}"],
        test_private_key().public_key(),
        repository="acme",
        name=name,
        max_uncompressed=1 << 20,
    )


async def test_warm_org_fetches_org_packages_and_their_public_dependencies(
    orgs_upstream: Upstream,
    tmp_path: Path,
    public_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HEX_REPOS_KEY", ACME_KEY)
    cache_dir = tmp_path / "cache"
    args = cli_args(orgs_upstream.url, cache_dir, public_key_file)
    assert await run_cli("warm", *args, "--org", "acme", "secret", "vault") == 0
    storage = FileStorage(cache_dir)
    for key in (
        package_key("secret", "acme"),
        tarball_key("secret", "1.1.0", "acme"),
        tarball_key("vault", "0.2.0", "acme"),
        package_key("alpha"),  # secret's public dependency, from hexpm
        tarball_key("alpha", "1.1.0"),
        tarball_key("beta", "2.1.0"),  # and alpha's
    ):
        assert storage.stat(key) is not None, key
    assert storage.read(package_key("secret", "acme")) == FILES["repos/acme/packages/secret"]
    # The org files went upstream with the key, the public ones without it.
    for seen in orgs_upstream.repo.requests:
        assert seen.headers.get("Authorization") == (
            ACME_KEY if seen.path.startswith("/repos/") else None
        ), seen.path
    assert ACME_KEY not in capsys.readouterr().out


async def test_warm_org_with_a_key_upstream_refuses_stores_nothing(
    orgs_upstream: Upstream,
    tmp_path: Path,
    public_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("ACME_READ_KEY", GLOBEX_KEY)
    cache_dir = tmp_path / "cache"
    args = cli_args(orgs_upstream.url, cache_dir, public_key_file)
    status = await run_cli("warm", *args, "--org", "acme", "--key-env", "ACME_READ_KEY", "secret")
    assert status == 1
    out = capsys.readouterr()
    assert "FAILED /repos/acme/packages/secret: upstream answered 403" in out.err
    assert not (cache_dir / "orgs").exists()
    assert GLOBEX_KEY not in out.out + out.err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--org", "acme", "secret"], {}, "set HEX_REPOS_KEY to a key that may read acme"),
        (["--org", "acme", "--key-env", "NOPE", "secret"], {}, "set NOPE"),
        (["--org", "Not-Org", "secret"], {"HEX_REPOS_KEY": ACME_KEY}, "not an organization"),
        (["--org", "hexpm", "secret"], {"HEX_REPOS_KEY": ACME_KEY}, "not an organization"),
    ],
)
async def test_warm_org_usage_errors(
    tmp_path: Path,
    public_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    monkeypatch.delenv("HEX_REPOS_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = cli_args("http://127.0.0.1:9", tmp_path / "cache", public_key_file)
    assert await run_cli("warm", *args, *argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


async def test_warm_org_takes_mix_lock_entries_of_the_organization(
    orgs_upstream: Upstream,
    tmp_path: Path,
    public_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = acme_package("secret").release("1.0.0")
    assert release is not None and release.outer_checksum is not None
    lock = tmp_path / "mix.lock"
    lock.write_text(
        "%{\n"
        f'  "secret": {{:hex, :secret, "1.0.0", "{release.inner_checksum.hex()}", [:mix], '
        f'[], "hexpm:acme", "{release.outer_checksum.hex()}"}},\n'
        "}\n"
    )
    monkeypatch.setenv("HEX_REPOS_KEY", ACME_KEY)
    cache_dir = tmp_path / "cache"
    args = cli_args(orgs_upstream.url, cache_dir, public_key_file)
    assert await run_cli("warm", *args, "--org", "acme", "--lock", lock) == 0
    assert FileStorage(cache_dir).stat(tarball_key("secret", "1.0.0", "acme")) is not None


async def test_hash_key_reads_stdin_or_a_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(ACME_KEY + "\n"))
    assert await run_cli("orgs", "hash-key", "--org", "acme") == 0
    assert capsys.readouterr().out == listed_hash("acme", ACME_KEY) + "\n"
    monkeypatch.setenv("THE_KEY", ACME_KEY)
    assert await run_cli("orgs", "hash-key", "--org", "globex", "--key-env", "THE_KEY") == 0
    assert capsys.readouterr().out == listed_hash("globex", ACME_KEY) + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert await run_cli("orgs", "hash-key", "--org", "acme") == 2
    assert await run_cli("orgs", "hash-key", "--org", "Bad Org", "--key-env", "THE_KEY") == 2


async def test_warmed_org_cache_serves_offline_to_the_listed_key_only(
    orgs_upstream: Upstream,
    tmp_path: Path,
    public_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    aiohttp_client: Any,
) -> None:
    monkeypatch.setenv("HEX_REPOS_KEY", ACME_KEY)
    cache_dir = tmp_path / "cache"
    args = cli_args(orgs_upstream.url, cache_dir, public_key_file)
    assert await run_cli("warm", *args, "--org", "acme", "secret") == 0
    url = orgs_upstream.url
    await orgs_upstream.stop()
    config = make_config(
        url,
        cache_dir,
        public_key_file,
        upstream__offline=True,
        orgs__keys={"acme": [listed_hash("acme", ACME_KEY)]},
    )
    proxy = await aiohttp_client(create_app(config))
    path = "/repos/acme/tarballs/secret-1.1.0.tar"
    ok = await proxy.get(path, headers={"Authorization": ACME_KEY})
    assert ok.status == 200
    assert await ok.read() == FILES[path.lstrip("/")]
    assert (await proxy.get(path, headers={"Authorization": GLOBEX_KEY})).status == 403
    assert (await proxy.get(path)).status == 401
    assert (await proxy.get("/packages/alpha")).status == 200  # the public side came along


async def test_cache_commands_leave_organization_files_alone(
    orgs_upstream: Upstream,
    tmp_path: Path,
    public_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HEX_REPOS_KEY", ACME_KEY)
    cache_dir = tmp_path / "cache"
    args = cli_args(orgs_upstream.url, cache_dir, public_key_file)
    assert await run_cli("warm", *args, "--org", "acme", "secret") == 0
    org_files_before = sorted(p for p in (cache_dir / "orgs").rglob("*") if p.is_file())
    assert org_files_before
    common = ["--cache-dir", str(cache_dir), "--public-key", str(public_key_file)]
    for command in (["ls"], ["stats"], ["verify", "--purge"], ["prune", "--max-size", "0"]):
        assert await run_cli("cache", *command, *common) == 0, command
    out = capsys.readouterr().out
    assert "secret" not in out  # not listed: `hexproxy cache` knows public packages only
    assert sorted(p for p in (cache_dir / "orgs").rglob("*") if p.is_file()) == org_files_before
    assert not list((cache_dir / "tarballs").rglob("*.tar"))  # the public ones were pruned
