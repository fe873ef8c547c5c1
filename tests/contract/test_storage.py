"""The storage contract, run against every backend: the filesystem and a real S3 server.

Whatever a backend is, the cache relies on the same things from it: whole objects
or nothing, metadata that comes back as it went in, one kind of "not there", and
conditional writes that keep the first tarball and the newest registry file.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from hexproxy.config import StoreConfig
from hexproxy.errors import ObjectMissing, StoreUnavailable
from hexproxy.store.cachekey import NAMES, docs_key, package_key, tarball_key
from hexproxy.store.fs_backend import FsStore
from hexproxy.store.objects import Replace, Storage
from hexproxy.store.s3 import S3Store
from hexproxy.store.storage import FileStorage, Meta

TWO = package_key("two")
TWO_OTHER = package_key("two_other")
TARBALL = tarball_key("two", "1.0.0")


def meta_for(body: bytes, at: float = 1000.0, **fields: str) -> Meta:
    return Meta(
        sha256=hashlib.sha256(body).hexdigest(),
        size=len(body),
        stored_at=at,
        validated_at=at + 5,
        upstream_etag=fields.get("etag"),
        upstream_last_modified=fields.get("last_modified"),
    )


@pytest.fixture(params=["fs", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    backend: Storage
    if request.param == "fs":
        files = FileStorage(tmp_path / "cache")
        files.prepare()
        backend = FsStore(files)
    else:
        backend = S3Store(request.getfixturevalue("s3_store_config"))
    try:
        yield backend
    finally:
        await backend.close()


async def keys_listed(store: Storage) -> dict[str, int]:
    return {str(item.key): item.size async for item in store.list()}


async def test_missing_objects_are_one_kind(store: Storage) -> None:
    with pytest.raises(ObjectMissing):
        await store.get(TWO)
    with pytest.raises(ObjectMissing):
        await store.head(TWO)
    with pytest.raises(ObjectMissing):
        await store.delete(TWO)
    assert await store.exists(TWO) is False
    assert await keys_listed(store) == {}


async def test_put_get_round_trips_body_and_metadata(store: Storage) -> None:
    body = b"\x00registry\xff" * 100
    meta = meta_for(body, etag='"abc-123"', last_modified="Tue, 01 Oct 2024 10:00:00 GMT")
    assert await store.put(TWO, body, meta) is True
    blob = await store.get(TWO)
    assert blob.body == body
    assert blob.meta == meta
    assert await store.head(TWO) == meta
    assert await store.exists(TWO) is True


async def test_metadata_without_validators_round_trips(store: Storage) -> None:
    body = b"tarball bytes"
    meta = meta_for(body, at=1234.5678)
    await store.put(TARBALL, body, meta)
    assert (await store.get(TARBALL)).meta == meta


async def test_list_names_every_object_once_and_keeps_prefixes_apart(store: Storage) -> None:
    await store.put(TWO, b"two", meta_for(b"two"))
    await store.put(TWO_OTHER, b"two-other!", meta_for(b"two-other!"))
    await store.put(NAMES, b"names", meta_for(b"names"))
    await store.put(TARBALL, b"t" * 300, meta_for(b"t" * 300))
    await store.put(docs_key("two", "1.0.0"), b"d", meta_for(b"d"))
    assert await keys_listed(store) == {
        "/packages/two": 3,
        "/packages/two_other": 10,
        "/names": 5,
        "/tarballs/two-1.0.0.tar": 300,
        "/docs/two-1.0.0.tar.gz": 1,
    }
    await store.delete(TWO)
    assert await store.exists(TWO_OTHER)
    assert "/packages/two" not in await keys_listed(store)


async def test_delete_removes_the_object(store: Storage) -> None:
    await store.put(TARBALL, b"x", meta_for(b"x"))
    await store.delete(TARBALL)
    with pytest.raises(ObjectMissing):
        await store.get(TARBALL)
    with pytest.raises(ObjectMissing):
        await store.delete(TARBALL)


async def test_put_always_replaces(store: Storage) -> None:
    await store.put(TWO, b"first", meta_for(b"first", at=2000))
    assert await store.put(TWO, b"second", meta_for(b"second", at=1000)) is True
    assert (await store.get(TWO)).body == b"second"


async def test_if_absent_keeps_the_first_copy(store: Storage) -> None:
    assert await store.put(TARBALL, b"first", meta_for(b"first"), Replace.IF_ABSENT) is True
    assert await store.put(TARBALL, b"other", meta_for(b"other"), Replace.IF_ABSENT) is False
    assert (await store.get(TARBALL)).body == b"first"


async def test_if_newer_never_lets_an_older_copy_win(store: Storage) -> None:
    old, new = b"old registry file", b"new registry file"
    assert await store.put(TWO, new, meta_for(new, at=2000), Replace.IF_NEWER) is True
    assert await store.put(TWO, old, meta_for(old, at=1000), Replace.IF_NEWER) is False
    assert (await store.get(TWO)).body == new
    newer = b"newer registry file"
    assert await store.put(TWO, newer, meta_for(newer, at=3000), Replace.IF_NEWER) is True
    assert (await store.get(TWO)).body == newer


async def test_if_newer_prefers_upstreams_last_modified_to_fetch_times(store: Storage) -> None:
    # Replica clocks disagree; upstream's Last-Modified is one clock and wins.
    old, new = b"old", b"new"
    await store.put(TWO, new, meta_for(new, at=1000, last_modified="Wed, 02 Oct 2024 10:00:00 GMT"))
    late_old = meta_for(old, at=9000, last_modified="Tue, 01 Oct 2024 10:00:00 GMT")
    assert await store.put(TWO, old, late_old, Replace.IF_NEWER) is False
    assert (await store.get(TWO)).body == new


async def test_racing_if_absent_writers_store_exactly_one_copy(store: Storage) -> None:
    bodies = [f"copy {i}".encode() * 1000 for i in range(6)]
    won = await asyncio.gather(
        *(store.put(TARBALL, b, meta_for(b), Replace.IF_ABSENT) for b in bodies)
    )
    assert won.count(True) == 1
    stored = await store.get(TARBALL)
    assert stored.body == bodies[won.index(True)]
    assert stored.meta.sha256 == hashlib.sha256(stored.body).hexdigest()


async def test_a_reader_never_sees_a_partial_object(store: Storage) -> None:
    # Two large bodies written over each other while readers read: every read is one
    # of them, whole, with the metadata that describes it.
    bodies = [bytes([i]) * (3 * 1024 * 1024 + 17) for i in (1, 2)]
    await store.put(TARBALL, bodies[0], meta_for(bodies[0]))
    done = asyncio.Event()

    async def write() -> None:
        for i in range(6):
            body = bodies[i % 2]
            await store.put(TARBALL, body, meta_for(body, at=1000 + i))
        done.set()

    async def read() -> int:
        reads = 0
        while not done.is_set() or reads == 0:
            blob = await store.get(TARBALL)
            assert blob.body in bodies, f"partial or mixed body of {len(blob.body)} bytes"
            assert blob.meta.sha256 == hashlib.sha256(blob.body).hexdigest()
            assert blob.meta.size == len(blob.body)
            reads += 1
        return reads

    results = await asyncio.gather(write(), read(), read())
    assert all(n >= 1 for n in results[1:])


async def test_check_passes_on_a_working_store(store: Storage) -> None:
    await store.check()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_s3_store_is_unavailable_not_missing(
    s3_store_config: StoreConfig,
) -> None:
    down = replace(s3_store_config, endpoint_url=f"http://127.0.0.1:{_closed_port()}", timeout=1.0)
    store = S3Store(down)
    try:
        with pytest.raises(StoreUnavailable):
            await store.get(TWO)
        with pytest.raises(StoreUnavailable):
            await store.put(TWO, b"x", meta_for(b"x"))
        with pytest.raises(StoreUnavailable):
            await store.check()
        with pytest.raises(StoreUnavailable):
            [item async for item in store.list()]
    finally:
        await store.close()


async def test_wrong_credentials_are_unavailable_not_missing(
    s3_store_config: StoreConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    store = S3Store(s3_store_config)
    try:
        with pytest.raises(StoreUnavailable):
            await store.get(TWO)
        with pytest.raises(StoreUnavailable):
            await store.put(TWO, b"x", meta_for(b"x"))
    finally:
        await store.close()


async def test_objects_outside_the_layout_are_not_listed(
    tmp_path: Path, s3_store_config: StoreConfig, s3_server: object
) -> None:
    store = S3Store(s3_store_config)
    client = s3_server.client()  # type: ignore[attr-defined]
    client.put_object(
        Bucket=s3_store_config.bucket, Key=s3_store_config.prefix + "notes/readme.txt", Body=b"x"
    )
    client.put_object(Bucket=s3_store_config.bucket, Key="elsewhere/registry/names", Body=b"x")
    try:
        await store.put(NAMES, b"n", meta_for(b"n"))
        assert await keys_listed(store) == {"/names": 1}
    finally:
        await store.close()
