"""``hexproxy cache ...`` on a cache filled through the real proxy."""

from __future__ import annotations

import itertools
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from hexproxy import cli
from hexproxy.web.ops import EVICTOR
from tests.conftest import ProxyFactory, Upstream
from tests.fakes.hex_repo import corrupt_signature, flip_byte

TARBALLS = ["alpha-1.0.0", "alpha-1.1.0", "beta-2.0.0", "beta-2.1.0", "gamma-0.1.0"]


def tarball_path(cache: Path, release: str) -> Path:
    return cache / "tarballs" / release.split("-")[0] / f"{release}.tar"


@pytest.fixture
async def filled(make_proxy: ProxyFactory, tmp_path: Path) -> TestClient[Any, Any]:
    """A proxy whose cache holds names, versions, 3 package files and 5 tarballs."""
    proxy = await make_proxy()
    for path in ["/names", "/versions"] + [f"/tarballs/{t}.tar" for t in TARBALLS]:
        response = await proxy.get(path)
        await response.read()
        assert response.status == 200, path
    return proxy


class Cli:
    def __init__(self, cache: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.base = ["--cache-dir", str(cache), "--public-key", str(key)]
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str]:
        self.capsys.readouterr()
        # The CLI runs its own event loop (asyncio.run): give it a thread of its own, as
        # if it were the separate process an operator starts.
        with ThreadPoolExecutor(1) as thread:
            code = thread.submit(cli.main, ["cache", *argv, *self.base]).result()
        return code, self.capsys.readouterr().out

    def json(self, *argv: str, expect: int = 0) -> Any:
        code, out = self(*argv, "--json")
        assert code == expect, out
        return json.loads(out)


@pytest.fixture
def run(tmp_path: Path, public_key_file: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path / "cache", public_key_file, capsys)


# ----- ls and stats -----


async def test_ls_lists_packages_versions_and_freshness(filled: Any, run: Cli) -> None:
    data = run.json("ls")
    by_name = {p["name"]: p for p in data["packages"]}
    assert sorted(by_name) == ["alpha", "beta", "gamma"]
    assert [r["version"] for r in by_name["alpha"]["releases"]] == ["1.0.0", "1.1.0"]
    assert by_name["alpha"]["registry"]["fresh"] is True
    assert all(r["size"] > 0 and r["last_access"] for r in by_name["beta"]["releases"])

    assert [p["name"] for p in run.json("ls", "g*")["packages"]] == ["gamma"]
    code, out = run("ls", "a*")
    assert code == 0
    assert out.splitlines()[0].split() == [
        "PACKAGE",
        "VERSION",
        "SIZE",
        "LAST",
        "ACCESS",
        "REGISTRY",
    ]
    assert "alpha" in out and "1.1.0" in out and "fresh, checked" in out
    assert "beta" not in out
    assert re.search(r"\n1 packages, 2 tarballs, [\d.]+ KiB\n$", out), out


async def test_stats_counts_each_kind(filled: Any, run: Cli, tmp_path: Path) -> None:
    data = run.json("stats")
    kinds = {k: v["entries"] for k, v in data["kinds"].items()}
    assert kinds == {"names": 1, "versions": 1, "package": 3, "tarball": 5}
    assert data["entries"] == 10
    tarball_bytes = sum(tarball_path(tmp_path / "cache", t).stat().st_size for t in TARBALLS)
    assert data["kinds"]["tarball"]["bytes"] == tarball_bytes
    assert data["evictable_bytes"] == tarball_bytes
    assert data["oldest"]["path"] == "registry/names"
    assert data["max_size"] == 0
    code, out = run("stats")
    assert code == 0
    assert "Entries          10 files" in out
    assert "Limit            none (max_size = 0)" in out


def test_a_missing_cache_dir_is_one_line_and_exit_2(
    tmp_path: Path, public_key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["cache", "stats", "--cache-dir", str(tmp_path / "nope")])
    assert code == 2
    assert capsys.readouterr().err.startswith("hexproxy: error: no cache directory at ")


# ----- verify -----


async def test_verify_finds_purges_and_the_proxy_refetches(
    filled: TestClient[Any, Any], run: Cli, upstream: Upstream, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    assert run.json("verify") == {
        "checked": {"names": 1, "versions": 1, "package": 3, "tarball": 5},
        "bad": [],
        "orphans": [],
        "ok": True,
    }
    # One tarball with a changed byte (same size, so only a re-hash can tell), and one
    # registry file with a signature that no longer verifies.
    bad_tarball = tarball_path(cache, "beta-2.0.0")
    bad_tarball.write_bytes(flip_byte(bad_tarball.read_bytes()))
    gamma = cache / "registry" / "packages" / "gamma"
    gamma.write_bytes(corrupt_signature(gamma.read_bytes()))

    report = run.json("verify", expect=1)
    assert report["ok"] is False
    assert {(b["path"], b["removed"]) for b in report["bad"]} == {
        ("tarballs/beta/beta-2.0.0.tar", False),
        ("registry/packages/gamma", False),
    }
    reasons = {b["path"]: b["reason"] for b in report["bad"]}
    assert "does not match the signed outer checksum" in reasons["tarballs/beta/beta-2.0.0.tar"]
    assert "signature" in reasons["registry/packages/gamma"]
    assert [o["path"] for o in report["orphans"]] == ["tarballs/gamma/gamma-0.1.0.tar"]

    code, out = run("verify")
    assert code == 1
    assert "BAD     tarballs/beta/beta-2.0.0.tar: sha256" in out
    assert "2 bad entries; `--purge` removes them." in out

    purged = run.json("verify", "--purge")
    assert purged["ok"] is True
    assert all(b["removed"] for b in purged["bad"]) and len(purged["bad"]) == 2
    assert not bad_tarball.exists() and not gamma.exists()

    # The running proxy notices the vanished tarball and fetches a good copy.
    response = await filled.get("/tarballs/beta-2.0.0.tar")
    assert await response.read() == upstream.repo.files["tarballs/beta-2.0.0.tar"]
    assert upstream.repo.count("/tarballs/beta-2.0.0.tar") == 2
    after = run.json("verify")
    assert after["bad"] == [] and after["ok"] is True


# ----- rm -----


async def test_rm_release_then_package(
    filled: TestClient[Any, Any], run: Cli, upstream: Upstream, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    data = run.json("rm", "alpha@1.0.0")
    assert [r["path"] for r in data["removed"]] == ["tarballs/alpha/alpha-1.0.0.tar"]
    assert not tarball_path(cache, "alpha-1.0.0").exists()
    assert tarball_path(cache, "alpha-1.1.0").exists()

    response = await filled.get("/tarballs/alpha-1.0.0.tar")
    await response.read()
    assert response.headers["X-Cache"] == "MISS"
    assert upstream.repo.count("/tarballs/alpha-1.0.0.tar") == 2

    code, out = run("rm", "beta")
    assert code == 0
    assert "removed registry/packages/beta" in out
    assert "Removed 3 files" in out
    assert not any((cache / "tarballs" / "beta").glob("*.tar"))


def test_rm_reports_nothing_and_rejects_bad_names(
    tmp_path: Path, run: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "cache").mkdir()
    assert run("rm", "nosuch") == (1, "Nothing cached for nosuch.\n")
    assert run.json("rm", "nosuch", expect=1) == {"removed": [], "bytes": 0}
    run.capsys.readouterr()
    code = cli.main(["cache", "rm", "Bad-Name!", *run.base])
    assert code == 2
    assert "invalid package name" in capsys.readouterr().err
    assert run("rm", "alpha@not.a.version")[0] == 2


# ----- prune -----


async def test_prune_max_size_removes_least_recently_used_first(
    filled: TestClient[Any, Any], run: Cli, tmp_path: Path
) -> None:
    # Touch the tarballs through the proxy in a known order, then let it record that.
    order = ["gamma-0.1.0", "alpha-1.1.0", "beta-2.1.0", "alpha-1.0.0", "beta-2.0.0"]
    evictor = filled.server.app[EVICTOR]
    # Each hit a second after the one before (and after every store): an exact order.
    evictor.access.clock = itertools.count(time.time() + 1).__next__
    for release in order:
        response = await filled.get(f"/tarballs/{release}.tar")
        await response.read()
        assert response.headers["X-Cache"] == "HIT"
    await evictor.flush()

    cache = tmp_path / "cache"
    before = run.json("stats")["bytes"]
    sizes = {r: tarball_path(cache, r).stat().st_size for r in order}
    limit = before - sizes[order[0]] - sizes[order[1]] // 2  # needs the two oldest gone

    dry = run.json("prune", "--max-size", str(limit), "--dry-run")
    assert dry["dry_run"] is True and tarball_path(cache, order[0]).exists()
    data = run.json("prune", "--max-size", str(limit))
    removed = [r["path"].rsplit("/", 1)[1].removesuffix(".tar") for r in data["removed"]]
    assert removed == order[:2]
    assert data["total_after"] <= limit
    assert all(tarball_path(cache, r).exists() for r in order[2:])
    assert (cache / "registry" / "packages" / "gamma").exists()  # registry files stay


async def test_prune_older_than(filled: Any, run: Cli, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    old = time.time() - 40 * 86400
    for release in ("alpha-1.0.0", "gamma-0.1.0"):
        os.utime(tarball_path(cache, release), (old, old))
    # Times set by hand reach the index only through its build (the server records its
    # own hits there): this is a cache from a hexproxy without one.
    for leftover in cache.glob("index.sqlite3*"):
        leftover.unlink()
    code, out = run("prune", "--older-than", "30d")
    assert code == 0
    assert "removed tarballs/alpha/alpha-1.0.0.tar" in out
    assert "Removed 2 files" in out
    assert not tarball_path(cache, "gamma-0.1.0").exists()
    assert tarball_path(cache, "alpha-1.1.0").exists()
    assert run.json("prune", "--older-than", "30d")["removed"] == []


def test_prune_needs_a_valid_limit(tmp_path: Path, run: Cli) -> None:
    (tmp_path / "cache").mkdir()
    with pytest.raises(SystemExit) as exc:
        run("prune", "--max-size", "12 parsecs")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run("prune")
    assert exc.value.code == 2
