"""The entry index: kept right by every change, built when missing, and the reason no
background round (nor ``cache stats``) walks the cache any more."""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

from hexproxy.cli import cache as cache_cli
from hexproxy.store import inventory
from hexproxy.store.cachekey import CacheKey, docs_key, package_key, tarball_key
from hexproxy.store.eviction import Evictor, write_access_times
from hexproxy.store.fs_backend import FsStore
from hexproxy.store.storage import FileStorage, Meta
from hexproxy.web.ops import EVICTOR
from tests.conftest import ProxyFactory
from tests.integration.test_cache_cli import Cli, filled, run  # noqa: F401 (fixtures)
from tests.support.waiting import wait_until


def put(files: FileStorage, key: CacheKey, size: int, when: float | None = None) -> None:
    when = time.time() if when is None else when
    files.put(key, b"x" * size, Meta("", size, when, when))


def fill(
    files: FileStorage, packages: int = 4, releases: int = 3, *, docs: bool = True
) -> list[CacheKey]:
    files.prepare()
    keys = []
    for p in range(packages):
        name = f"pkg{p}"
        put(files, package_key(name), 100 + p)
        keys.append(package_key(name))
        for r in range(releases):
            key = tarball_key(name, f"1.{r}.0")
            put(files, key, 1000 * (r + 1) + p)
            keys.append(key)
    if docs:
        put(files, docs_key("pkg0", "1.0.0"), 500)
    return keys


def forget_index(files: FileStorage) -> None:
    """As if the cache had been kept by a hexproxy without the index."""
    files.index.close()
    for leftover in files.root.glob("index.sqlite3*"):
        leftover.unlink()


def assert_index_matches_files(files: FileStorage) -> None:
    files = FileStorage(files.root)  # a connection of its own, as another process has
    try:
        _assert_index_matches(files)
    finally:
        files.index.close()


def _assert_index_matches(files: FileStorage) -> None:
    walked = inventory.stats(inventory.scan(files))
    indexed = inventory.indexed_stats(files.index)
    assert (indexed.entries, indexed.bytes, indexed.evictable_bytes) == (
        walked.entries,
        walked.bytes,
        walked.evictable_bytes,
    )
    assert indexed.by_kind == walked.by_kind
    assert indexed.oldest is not None and walked.oldest is not None
    assert indexed.oldest.stored_at == walked.oldest.stored_at
    assert indexed.newest is not None and walked.newest is not None
    assert indexed.newest.stored_at == walked.newest.stored_at
    rows = {r.key: r.size for r in inventory.FileStorage(files.root).walk_rows()}
    lru = {r.key: r.size for r in files.index.least_recently_used()}
    assert lru == {k: s for k, s in rows.items() if inventory.Item(k, s, 0, 0, 0).evictable}


def evictor_for(files: FileStorage, max_size: int) -> Evictor:
    return Evictor(files, max_size, can_refetch=lambda: True, forget=lambda _: None)


def count_walks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times anything walks a cache directory (``FileStorage.iter_keys``)."""
    calls = [0]
    walk = FileStorage.iter_keys

    def counted(self: FileStorage) -> Iterator[CacheKey]:
        calls[0] += 1
        return walk(self)

    monkeypatch.setattr(FileStorage, "iter_keys", counted)
    return calls


# ----- kept right -----


def test_stores_revalidations_accesses_and_removals_keep_the_index_right(
    tmp_path: Path,
) -> None:
    files = FileStorage(tmp_path)
    keys = fill(files)
    assert_index_matches_files(files)

    # A streamed store (temp file, then commit), as the shared download does.
    streamed = tarball_key("pkg9", "0.1.0")
    temp = files.new_temp(streamed)
    temp.write_bytes(b"y" * 777)
    files.commit(temp, streamed, Meta("", 777, time.time(), time.time()))
    # A registry file revalidated: a new validated_at, the same body.
    meta = files.read_meta(package_key("pkg1"))
    assert meta is not None
    files.write_meta(package_key("pkg1"), meta.revalidated(meta.validated_at + 60))
    # A tarball replaced by another size (a store over a store), and one removed.
    put(files, keys[1], 4321)
    assert files.delete(keys[2])
    assert_index_matches_files(files)
    rows = {r.key: r for r in files.index.by_name("pkg1")}
    assert rows[package_key("pkg1")].validated_at == meta.validated_at + 60

    later = time.time() + 1000
    write_access_times(files, {f"/tarballs/{keys[3].name}-{keys[3].version}.tar": later})
    touched = next(r for r in files.index.least_recently_used() if r.key == keys[3])
    assert touched.last_access == later
    assert files.path(keys[3]).stat().st_mtime == later  # kept for a rebuild


def test_least_recently_used_follows_access_times(tmp_path: Path) -> None:
    files = FileStorage(tmp_path)
    keys = [k for k in fill(files, 2, 3, docs=False) if k.kind.value == "tarball"]
    order = [keys[4], keys[0], keys[5], keys[2], keys[1], keys[3]]
    base = time.time() + 100
    write_access_times(files, {k.upstream_path: base + i for i, k in enumerate(order)})
    assert [r.key for r in files.index.least_recently_used()] == order
    # Over the limit by one byte: the least recently used tarball goes, and only it.
    plan = inventory.plan_indexed(files, inventory.indexed_stats(files.index).bytes - 1)
    assert [i.key for i in plan.remove] == [order[0]]
    # Not used since the fourth access: the first three.
    plan = inventory.plan_indexed_older_than(files, base + 3)
    assert [i.key for i in plan.remove] == order[:3]


async def test_cli_rm_and_prune_keep_the_index_right(filled: Any, run: Cli, tmp_path: Path) -> None:  # noqa: F811
    files = FileStorage(tmp_path / "cache")
    assert run("rm", "alpha@1.0.0")[0] == 0
    assert_index_matches_files(files)
    assert run("rm", "beta")[0] == 0
    assert_index_matches_files(files)
    assert run("prune", "--max-size", "1")[0] == 0
    assert_index_matches_files(files)
    assert inventory.indexed_stats(files.index).by_kind.keys() == {"names", "versions", "package"}


async def test_stats_from_the_index_agree_with_a_full_scan(
    filled: Any,  # noqa: F811
    run: Cli,  # noqa: F811
    tmp_path: Path,
) -> None:
    indexed = run.json("stats")
    forget_index(FileStorage(tmp_path / "cache"))
    store = FsStore(FileStorage(tmp_path / "cache"))
    walked = inventory.stats(await inventory.scan_store(store, registry_meta=False))
    assert indexed["entries"] == walked.entries and indexed["bytes"] == walked.bytes
    assert indexed["evictable_bytes"] == walked.evictable_bytes
    assert indexed["kinds"] == {
        k: {"entries": v.entries, "bytes": v.bytes} for k, v in walked.by_kind.items()
    }
    assert run.json("stats") == indexed  # the CLI built the index anew: the same answer


# ----- ls --json streams -----


async def test_ls_json_is_the_same_document_as_before(
    filled: Any,  # noqa: F811
    run: Cli,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Stopped first: its last access times are flushed (into the index and the files'
    # mtimes) now, not between the two reads below, which would then differ.
    await filled.close()
    code, out = run("ls", "--json")
    assert code == 0
    listings = inventory.list_packages(inventory.scan(FileStorage(tmp_path / "cache")))
    ttl = 300.0  # the default registry_ttl: every registry file here is seconds old
    # What ls --json printed before it streamed: one json.dumps of the whole document,
    # from a full scan.
    whole = {"packages": [cache_cli._listing_json(p, time.time(), ttl) for p in listings]}
    assert len(whole["packages"]) == 3
    assert out == json.dumps(whole, indent=2, sort_keys=True) + "\n"


def test_ls_json_writes_each_package_before_reading_the_next() -> None:
    out = io.StringIO()
    written_before: list[int] = []

    def packages() -> Iterator[dict[str, Any]]:
        for n in range(3):
            written_before.append(out.getvalue().count('"name"'))
            yield {"name": f"p{n}", "releases": []}

    with redirect_stdout(out):
        cache_cli._stream_packages(packages())
    assert written_before == [0, 1, 2]
    document = {"packages": [{"name": f"p{n}", "releases": []} for n in range(3)]}
    assert out.getvalue() == json.dumps(document, indent=2, sort_keys=True) + "\n"
    empty = io.StringIO()
    with redirect_stdout(empty):
        cache_cli._stream_packages(iter([]))
    assert empty.getvalue() == json.dumps({"packages": []}, indent=2) + "\n"


# ----- built when missing; no walks after -----


async def test_a_cache_without_index_gets_one_in_the_background_and_eviction_works(
    make_proxy: ProxyFactory, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    files = FileStorage(cache)
    fill(files, packages=3, releases=4)
    forget_index(files)
    total = inventory.total_size(inventory.scan(files))
    proxy = await make_proxy(cache__max_size=total // 2)
    evictor = proxy.server.app[EVICTOR]
    await wait_until(lambda: evictor.evicted >= 1, "the built index to drive an eviction")
    assert evictor.index_builds == 1
    assert inventory.total_size(inventory.scan(files)) <= total // 2
    assert_index_matches_files(files)


async def test_no_round_walks_the_cache_once_the_index_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = FileStorage(tmp_path)
    fill(files)
    forget_index(files)
    walks = count_walks(monkeypatch)
    unlimited = evictor_for(FileStorage(tmp_path), max_size=0)
    for _ in range(5):
        assert await unlimited.run_once() == []
    assert walks[0] == 1 and unlimited.index_builds == 1  # the one build, then nothing
    assert unlimited.usage is not None and unlimited.usage.entries == 4 * 4 + 1
    await unlimited.stop()

    # A restart on the indexed cache, with a limit it is under: no walk at all.
    limited = evictor_for(FileStorage(tmp_path), max_size=10**9)
    for n in range(5):
        limited.access.accessed(f"/tarballs/pkg{n % 4}-1.0.0.tar")
        assert await limited.run_once() == []
    assert walks[0] == 1 and limited.index_builds == 0
    await limited.stop()


# ----- one evictor -----

HOLDER = """
import asyncio, sys
from pathlib import Path
from asyncio.subprocess import PIPE
from hexproxy.store.eviction import Evictor
from hexproxy.store.storage import FileStorage
evictor = Evictor(FileStorage(Path(sys.argv[1])), 1, can_refetch=lambda: True,
                  forget=lambda _: None)
print(len(asyncio.run(evictor.run_once())), evictor.is_evictor, flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
"""


async def test_only_one_of_two_processes_evicts(tmp_path: Path) -> None:
    files = FileStorage(tmp_path)
    fill(files)
    before = inventory.indexed_stats(files.index).entries
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, str(tmp_path), stdin=PIPE, stdout=PIPE
    )
    try:
        assert other.stdout is not None
        line = (await asyncio.wait_for(other.stdout.readline(), 30)).decode()
        evicted_there = int(line.split()[0])
        assert line.split()[1] == "True" and evicted_there > 0
        mine = evictor_for(FileStorage(tmp_path), max_size=1)
        assert await mine.run_once() == [] and not mine.is_evictor
        left = inventory.indexed_stats(files.index).entries
        assert left == before - evicted_there  # only the other process removed anything
        put(files, tarball_key("late", "1.0.0"), 5000)
        assert await mine.run_once() == []  # still not ours while the other holds the lock
    finally:
        assert other.stdin is not None
        other.stdin.close()
        await asyncio.wait_for(other.wait(), 30)
    removed = await mine.run_once()  # the lock is free: this process takes over
    assert mine.is_evictor and [i.key for i in removed] == [tarball_key("late", "1.0.0")]
    await mine.stop()


async def test_cache_commands_on_an_indexed_cache_do_not_walk_it(
    filled: Any,  # noqa: F811
    run: Cli,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert run("stats")[0] == 0  # the index exists from here on
    walks = count_walks(monkeypatch)
    listings = [0]
    entries = FileStorage.entries

    def counted_entries(self: FileStorage) -> Any:
        listings[0] += 1
        return entries(self)

    monkeypatch.setattr(FileStorage, "entries", counted_entries)
    for argv in (("stats",), ("ls", "--json"), ("prune", "--max-size", "1", "--dry-run")):
        assert run(*argv)[0] == 0
    assert run("rm", "gamma")[0] == 0
    assert (walks[0], listings[0]) == (0, 0)
    # verify reads every object, but finds them in one walk of names, not a listing
    # that stats and reads the sidecar of each first.
    assert run("verify")[0] == 0
    assert (walks[0], listings[0]) == (1, 0)


async def test_a_file_removed_by_hand_leaves_the_index_when_eviction_reaches_it(
    tmp_path: Path,
) -> None:
    files = FileStorage(tmp_path)
    keys = [k for k in fill(files, 2, 3, docs=False) if k.kind.value == "tarball"]
    files.build_index()
    files.path(keys[0]).unlink()  # the least recently used, gone behind the index's back
    assert inventory.indexed_stats(files.index).entries == 8  # still counted
    evictor = evictor_for(files, max_size=inventory.indexed_stats(files.index).bytes - 1)
    removed = await evictor.run_once()
    assert evictor.index_builds == 0
    assert keys[0] not in [r.key for r in files.index.least_recently_used()]
    # The gone file freed nothing and is not reported; the next least recently used went.
    assert [i.key for i in removed][:1] == [keys[1]]
    assert_index_matches_files(files)
    await evictor.stop()
