"""One memory budget: everything held per object is counted, and the budget holds by
dropping the least recently used entry, one at a time."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from hexproxy.cache.entries import Entry, StoredFile
from hexproxy.cache.footprint import ENTRY_OVERHEAD, FILE_OVERHEAD, decoded_size
from hexproxy.cache.memory import Memory, budget_per_worker
from hexproxy.config import load_config
from hexproxy.errors import ConfigError
from hexproxy.registry import Dependency, Names, Package, Release, Versions, VersionsEntry
from hexproxy.store.cachekey import package_key, tarball_key
from hexproxy.store.storage import Meta


def entry(name: str, body: bytes = b"x" * 1000, decoded: object = None) -> Entry[object]:
    return Entry(package_key(name), body, Meta("0" * 64, len(body), 0.0, 0.0), decoded)


def stored(name: str) -> StoredFile:
    return StoredFile(tarball_key(name, "1.0.0"), Path("/nonexistent"), 10, "0" * 64, 0.0)


def test_the_budget_holds_and_the_least_recently_used_goes_first() -> None:
    cost = 1000 + ENTRY_OVERHEAD
    memory = Memory(budget=10 * cost)
    for i in range(10):
        memory.put(entry(f"p{i}"))
    assert len(memory) == 10 and memory.bytes == 10 * cost
    assert memory.get(package_key("p0")) is not None  # p0 is now the most recently used
    memory.put(entry("p10"))
    # One entry went, the one used longest ago: p1, not p0.
    assert len(memory) == 10 and memory.bytes <= memory.budget
    assert memory.get(package_key("p1")) is None
    assert memory.get(package_key("p0")) is not None
    for i in range(11, 100):
        memory.put(entry(f"p{i}"))
        assert memory.bytes <= memory.budget
        assert len(memory) == 10  # never emptied wholesale
    assert [memory.get(package_key(f"p{i}")) is not None for i in range(89, 100)] == [False] + [
        True
    ] * 10


def test_stored_file_records_and_hot_bodies_count() -> None:
    memory = Memory(budget=100_000)
    files = [stored(f"t{i}") for i in range(3)]
    for item in files:
        memory.put(item)
    assert memory.bytes == 3 * FILE_OVERHEAD
    assert memory.file(files[0].key) is files[0] and memory.get(files[0].key) is None
    files[1].memo.size = 60_000  # the fast path kept its body
    memory.recount(files[1])
    assert memory.bytes == 3 * FILE_OVERHEAD + 60_000
    files[2].memo.size = 60_000
    memory.recount(files[2])
    # Over budget: the least recently used go (files[1] was used before files[2])...
    assert memory.bytes <= memory.budget
    assert memory.file(files[1].key) is None and memory.file(files[2].key) is files[2]
    memory.pop(files[2].key)
    assert memory.bytes == sum(FILE_OVERHEAD for f in files if memory.file(f.key))
    # ...and a record that was replaced meanwhile is not counted twice.
    memory.recount(files[2])
    assert memory.file(files[2].key) is None


def test_decoded_registry_data_counts() -> None:
    package = Package("p", "hexpm", (Release("1.0.0", b"a" * 32, b"b" * 32),) * 20)
    memory = Memory(budget=10**9)
    memory.put(entry("p", decoded=package))
    assert memory.bytes == 1000 + ENTRY_OVERHEAD + decoded_size(package)
    assert decoded_size(package) > 5000


def measured(build: object) -> int:
    tracemalloc.start()
    try:
        value = build()  # type: ignore[operator]
        size = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert value is not None
    return size if decoded_size(value) else -1


def _package(releases: int, deps: int) -> Package:
    return Package(
        "some_package",
        "hexpm",
        tuple(
            Release(
                f"1.{i}.0",
                os.urandom(32),
                os.urandom(32),
                tuple(Dependency(f"dep_{j}", f"~> {j}.{i}") for j in range(deps)),
            )
            for i in range(releases)
        ),
    )


SHAPES = {
    "package, 1 release": lambda: _package(1, 0),
    "package, 15 releases, 3 deps each": lambda: _package(15, 3),
    "package, 200 releases, 1 dep each": lambda: _package(200, 1),
    "names": lambda: Names("hexpm", tuple(f"package_{i}" for i in range(2000))),
    "versions": lambda: Versions(
        "hexpm",
        tuple(
            VersionsEntry(f"package_{i}", tuple(f"1.{k}.0" for k in range(i % 12 + 1)))
            for i in range(1000)
        ),
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_decoded_estimates_are_close_to_what_python_allocates(shape: str) -> None:
    build = SHAPES[shape]
    real = measured(build)
    estimate = decoded_size(build())
    assert real / 1.5 <= estimate <= real * 1.5, (real, estimate)


def test_memory_size_is_shared_by_the_workers() -> None:
    config = load_config(
        None, {"HEXPROXY_CACHE_MEMORY_SIZE": "64MiB", "HEXPROXY_SERVER_WORKERS": "4"}
    )
    assert config.cache.memory_size == 64 * 1024**2
    assert budget_per_worker(config) == 16 * 1024**2
    assert load_config(None, {}).cache.memory_size == 64 * 1024**2


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"HEXPROXY_CACHE_MEMORY_SIZE": "lots"}, "[cache] memory_size"),
        ({"HEXPROXY_CACHE_MEMORY_SIZE": "512KiB"}, "must be at least 1MiB"),
        (
            {"HEXPROXY_CACHE_MEMORY_SIZE": "3MiB", "HEXPROXY_SERVER_WORKERS": "4"},
            "must be at least 4MiB (1MiB for each of the 4 workers",
        ),
    ],
)
def test_memory_size_is_validated(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, env)
    assert says in raised.value.message
    assert raised.value.message.startswith("[cache] memory_size")
    assert "\n" not in raised.value.message


def test_a_dropped_entry_takes_what_was_derived_from_it() -> None:
    """The fast path's table of repeated heads refers to entries' memos: whatever the
    memory drops (replaced, removed, or over the budget) must render nothing after."""
    cost = 1000 + ENTRY_OVERHEAD
    memory = Memory(budget=2 * cost + 100)
    first, second = entry("a"), entry("b")
    for held in (first, second):
        memory.put(held)
        held.memo.value, held.memo.size = "answer", 50
        memory.recount(held)
    replaced = entry("a")
    memory.put(replaced)  # a revalidated entry: the old one's answer goes
    assert first.memo.value is None and first.memo.size == 0
    memory.pop(package_key("b"))  # removed
    assert second.memo.value is None
    third = entry("c")
    third.memo.value = "answer"
    memory.put(third)
    memory.put(entry("d"))  # over the budget: the least recently used goes
    assert memory.get(package_key("a")) is None and replaced.memo.value is None
    assert third.memo.value == "answer"  # what is still held keeps its answer
