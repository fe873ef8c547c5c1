"""``hexproxy cache ls|stats|verify|rm|prune`` on the bucket replicas share (a real SeaweedFS)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hexproxy import cli
from hexproxy.config import StoreConfig
from hexproxy.errors import ObjectMissing
from hexproxy.store.cachekey import package_key, tarball_key
from hexproxy.store.s3 import S3Store
from hexproxy.store.storage import Meta
from hexproxy.web.state import CACHE
from tests.conftest import ProxyFactory, Upstream
from tests.fakes.hex_repo import flip_byte

TARBALLS = ["alpha-1.0.0", "alpha-1.1.0", "beta-2.0.0"]


@pytest.fixture
async def bucket(
    make_proxy: ProxyFactory,
    tmp_path: Path,
    s3_store_config: StoreConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> StoreConfig:
    """A bucket prefix filled by a proxy, and HEXPROXY_STORE_* pointing commands at it."""
    store = s3_store_config
    values = {
        "KIND": "s3",
        "BUCKET": store.bucket,
        "PREFIX": store.prefix,
        "ENDPOINT_URL": store.endpoint_url,
        "REGION": store.region,
    }
    proxy = await make_proxy(**{f"store__{k.lower()}": v for k, v in values.items()})
    for path in ["/names", *(f"/tarballs/{t}.tar" for t in TARBALLS)]:
        response = await proxy.get(path)
        assert response.status == 200, path
        await response.read()
    shared = proxy.app[CACHE].shared
    assert shared is not None
    await shared.drain()
    for name, value in values.items():
        monkeypatch.setenv(f"HEXPROXY_STORE_{name}", value)
    return store


def run(
    tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str], *argv: str
) -> tuple[int, str]:
    capsys.readouterr()
    args = ["cache", *argv, "--cache-dir", str(tmp_path / "elsewhere"), "--public-key", str(key)]
    with ThreadPoolExecutor(1) as thread:  # the CLI runs its own event loop
        code = thread.submit(cli.main, args).result()
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture
def cache_cmd(tmp_path: Path, public_key_file: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    def call(*argv: str, expect: int = 0) -> Any:
        code, out = run(tmp_path, public_key_file, capsys, *argv, "--json")
        assert code == expect, out
        return json.loads(out)

    return call


async def test_stats_and_ls_read_the_bucket(bucket: StoreConfig, cache_cmd: Any) -> None:
    stats = cache_cmd("stats")
    assert stats["dir"].startswith(f"s3://{bucket.bucket}/{bucket.prefix}")
    assert stats["kinds"]["tarball"]["entries"] == 3
    assert stats["kinds"]["package"]["entries"] == 2
    assert stats["kinds"]["names"]["entries"] == 1
    listing = {p["name"]: p for p in cache_cmd("ls")["packages"]}
    assert sorted(listing) == ["alpha", "beta"]
    assert [r["version"] for r in listing["alpha"]["releases"]] == ["1.0.0", "1.1.0"]
    assert listing["alpha"]["registry"]["fresh"] is True


async def test_verify_finds_and_purges_a_tampered_tarball(
    bucket: StoreConfig, cache_cmd: Any, upstream: Upstream
) -> None:
    report = cache_cmd("verify")
    assert report["ok"] is True
    assert report["checked"] == {"names": 1, "package": 2, "tarball": 3}
    store = S3Store(bucket)
    key = tarball_key("beta", "2.0.0")
    try:
        bad = flip_byte(upstream.repo.files["tarballs/beta-2.0.0.tar"])
        await store.put(key, bad, Meta("0" * 64, len(bad), 1.0, 1.0))
        report = cache_cmd("verify", expect=1)
        assert [f["path"] for f in report["bad"]] == ["tarballs/beta/beta-2.0.0.tar"]
        report = cache_cmd("verify", "--purge")
        assert [f["removed"] for f in report["bad"]] == [True]
        assert not await store.exists(key)
        assert await store.exists(tarball_key("alpha", "1.0.0"))
    finally:
        await store.close()


async def test_rm_removes_from_the_bucket(bucket: StoreConfig, cache_cmd: Any) -> None:
    removed = cache_cmd("rm", "alpha@1.0.0")
    assert [r["path"] for r in removed["removed"]] == ["tarballs/alpha/alpha-1.0.0.tar"]
    removed = cache_cmd("rm", "alpha")
    assert sorted(r["path"] for r in removed["removed"]) == [
        "registry/packages/alpha",
        "tarballs/alpha/alpha-1.1.0.tar",
    ]
    cache_cmd("rm", "alpha", expect=1)
    store = S3Store(bucket)
    try:
        with pytest.raises(ObjectMissing):
            await store.head(package_key("alpha"))
        assert await store.exists(package_key("beta"))
    finally:
        await store.close()


async def test_prune_removes_tarballs_and_keeps_registry_files(
    bucket: StoreConfig, cache_cmd: Any
) -> None:
    plan = cache_cmd("prune", "--older-than", "0s", "--dry-run")
    assert len(plan["removed"]) == 3
    done = cache_cmd("prune", "--older-than", "0s")
    assert sorted(r["path"].rsplit("/", 1)[1] for r in done["removed"]) == [
        f"{t}.tar" for t in TARBALLS
    ]
    stats = cache_cmd("stats")
    assert "tarball" not in stats["kinds"]
    assert stats["kinds"]["package"]["entries"] == 2


async def test_an_unreachable_bucket_is_one_line_and_exit_2(
    tmp_path: Path,
    public_key_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    s3_env: dict[str, str],
) -> None:
    monkeypatch.setenv("HEXPROXY_STORE_KIND", "s3")
    monkeypatch.setenv("HEXPROXY_STORE_BUCKET", "hexproxy-test")
    monkeypatch.setenv("HEXPROXY_STORE_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HEXPROXY_STORE_TIMEOUT", "1")
    code, out = run(tmp_path, public_key_file, capsys, "stats")
    assert code == 2
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hexproxy: error: s3://hexproxy-test/"), out
