"""warm, export and import with a shared bucket, and an offline replica that reads it."""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

import pytest

from hexproxy.config import StoreConfig
from hexproxy.store.cachekey import package_key, tarball_key
from hexproxy.store.s3 import S3Store
from tests.conftest import ProxyFactory, Upstream
from tests.support.warming import run_cli


@pytest.fixture
def store_env(s3_store_config: StoreConfig, monkeypatch: pytest.MonkeyPatch) -> StoreConfig:
    """HEXPROXY_STORE_* for the CLI, as an operator's shell or a pod would set them."""
    store = s3_store_config
    for name, value in {
        "KIND": "s3",
        "BUCKET": store.bucket,
        "PREFIX": store.prefix,
        "ENDPOINT_URL": store.endpoint_url,
        "REGION": store.region,
    }.items():
        monkeypatch.setenv(f"HEXPROXY_STORE_{name}", value)
    return store


def args(url: str, cache_dir: Path, key: Path, *more: str) -> list[str]:
    return ["--upstream", url, "--cache-dir", str(cache_dir), "--public-key", str(key), *more]


async def keys_in(store_config: StoreConfig) -> set[str]:
    store = S3Store(store_config)
    try:
        return {str(item.key) async for item in store.list()}
    finally:
        await store.close()


async def test_warm_fills_the_bucket_and_an_offline_replica_serves_it(
    store_env: StoreConfig,
    upstream: Upstream,
    tmp_path: Path,
    public_key_file: Path,
    make_proxy: ProxyFactory,
) -> None:
    code = await run_cli("warm", *args(upstream.url, tmp_path / "warm", public_key_file), "alpha")
    assert code == 0
    held = await keys_in(store_env)
    assert {"/packages/alpha", "/tarballs/alpha-1.1.0.tar"} <= held

    offline = await make_proxy(
        cache__dir=str(tmp_path / "offline"),
        upstream__offline=True,
        store__kind="s3",
        store__bucket=store_env.bucket,
        store__prefix=store_env.prefix,
        store__endpoint_url=store_env.endpoint_url,
        store__region=store_env.region,
    )
    await upstream.stop()
    response = await offline.get("/tarballs/alpha-1.1.0.tar")
    assert response.status == 200
    assert await response.read() == upstream.repo.files["tarballs/alpha-1.1.0.tar"]
    missing = await offline.get("/tarballs/gamma-0.1.0.tar")
    assert missing.status == 404
    assert missing.headers["X-Hexproxy-Error"] == "not_cached"


async def test_import_shares_and_export_takes_the_whole_bucket(
    store_env: StoreConfig,
    upstream: Upstream,
    tmp_path: Path,
    public_key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bundle made the ordinary way, from a replica of its own (no shared store).
    monkeypatch.setenv("HEXPROXY_STORE_KIND", "fs")
    local = args(upstream.url, tmp_path / "made", public_key_file)
    assert await run_cli("warm", *local, "beta", "gamma") == 0
    assert await run_cli("export", *local, str(tmp_path / "made.tar")) == 0
    monkeypatch.setenv("HEXPROXY_STORE_KIND", "s3")
    await upstream.stop()

    offline = args("http://127.0.0.1:9", tmp_path / "importer", public_key_file, "--offline")
    assert await run_cli("import", *offline, str(tmp_path / "made.tar")) == 0
    held = await keys_in(store_env)
    assert {"/packages/beta", "/packages/gamma", "/tarballs/gamma-0.1.0.tar"} <= held

    # A fresh replica exports everything the bucket holds, verified, without upstream.
    fresh = args("http://127.0.0.1:9", tmp_path / "exporter", public_key_file, "--offline")
    assert await run_cli("export", *fresh, str(tmp_path / "bucket.tar")) == 0
    with tarfile.open(tmp_path / "made.tar") as made, tarfile.open(tmp_path / "bucket.tar") as out:
        assert sorted(made.getnames()) == sorted(out.getnames())
        for name in made.getnames():
            if name != "manifest.json":
                assert _read(made, name) == _read(out, name), name


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    member = tar.extractfile(name)
    assert member is not None
    return member.read()


async def test_export_refuses_a_bucket_with_a_bad_object(
    store_env: StoreConfig,
    upstream: Upstream,
    tmp_path: Path,
    public_key_file: Path,
    make_proxy: Any,
) -> None:
    code = await run_cli("warm", *args(upstream.url, tmp_path / "warm", public_key_file), "beta")
    assert code == 0
    store = S3Store(store_env)
    try:
        blob = await store.get(tarball_key("beta", "2.1.0"))
        await store.put(blob.key, blob.body[:-1] + b"!", blob.meta)
        assert await store.exists(package_key("beta"))
    finally:
        await store.close()
    fresh = args("http://127.0.0.1:9", tmp_path / "exporter", public_key_file, "--offline")
    assert await run_cli("export", *fresh, str(tmp_path / "bucket.tar")) == 1
    assert not (tmp_path / "bucket.tar").exists()
