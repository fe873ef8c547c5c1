"""``hexproxy export`` and ``import``: carry a warmed cache across a gap, trusting no byte.

The cache is warmed from a mix.lock of the built 15-package tree (tests/support/repo.py):
12 locked releases, signed with the test key. No real data is needed here.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from hexproxy.airgap.bundle import MANIFEST, key_from_path
from hexproxy.store.cachekey import package_key, tarball_key
from hexproxy.store.storage import FileStorage
from hexproxy.web import create_app
from tests.fakes.hex_repo import corrupt_signature, flip_byte
from tests.support.keys import test_private_key
from tests.support.repo import PackageSpec, build_repo
from tests.support.warming import (
    Served,
    cli_args,
    make_config,
    run_cli,
    serve,
    tree_files,
    tree_lock,
    tree_pins,
)

LOCKED = len(tree_pins())  # releases in the lock: one tarball and one /packages file each


@pytest.fixture
async def tree(aiohttp_server: Any) -> Served:
    return await serve(aiohttp_server, tree_files())


@pytest.fixture
def lock(tmp_path: Path) -> Path:
    return tree_lock(tmp_path)


@pytest.fixture
def key(public_key_file: Path) -> Path:
    return public_key_file


@pytest.fixture
async def warmed(tree: Served, tmp_path: Path, lock: Path, key: Path) -> Path:
    """A cache holding the locked tree, and a bundle of it at tmp_path/tree.tar."""
    cache_dir = tmp_path / "warm-cache"
    args = cli_args(tree.url, cache_dir, key)
    assert await run_cli("warm", *args, "--lock", lock) == 0
    assert await run_cli("export", *args, tmp_path / "tree.tar") == 0
    return cache_dir


def offline_args(cache_dir: Path, key: Path) -> list[str]:
    # An upstream nobody listens on: import and export must never need one.
    return [*cli_args("http://127.0.0.1:9", cache_dir, key), "--offline"]


def read_bundle(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def write_bundle(path: Path, files: dict[str, bytes], *, fix_manifest: bool = True) -> Path:
    """Write ``files`` as a bundle; with ``fix_manifest`` the digests describe the new bytes,
    as an attacker who rewrote the manifest too would make them."""
    manifest = json.loads(files[MANIFEST])
    if fix_manifest:
        for entry in manifest["files"]:
            body = files[entry["path"]]
            entry["sha256"], entry["size"] = hashlib.sha256(body).hexdigest(), len(body)
    files = {**files, MANIFEST: json.dumps(manifest).encode()}
    with tarfile.open(path, "w") as tar:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


async def answers(client: Any, paths: list[str]) -> dict[str, tuple[int, bytes, str]]:
    found = {}
    for path in paths:
        response = await client.get(path)
        found[path] = (response.status, await response.read(), response.headers.get("ETag", ""))
    return found


def served_paths() -> list[str]:
    pins = tree_pins()
    paths = [f"/packages/{name}" for name in pins]
    return sorted(paths + [f"/tarballs/{name}-{version}.tar" for name, version in pins.items()])


async def test_export_wipe_import_serves_byte_identical_offline(
    warmed: Path, tmp_path: Path, aiohttp_client: Any, tree: Served, key: Path
) -> None:
    config = make_config(tree.url, warmed, key, upstream__offline=True)
    before = await answers(await aiohttp_client(create_app(config)), served_paths())
    assert {status for status, _, _ in before.values()} == {200}

    shutil.rmtree(warmed)
    await tree.stop()
    assert await run_cli("import", *offline_args(warmed, key), tmp_path / "tree.tar") == 0

    after = await answers(await aiohttp_client(create_app(config)), served_paths())
    assert after == before
    assert len(list((warmed / "tarballs").glob("*/*.tar"))) == LOCKED


async def test_bundle_layout_and_manifest(warmed: Path, tmp_path: Path) -> None:
    files = read_bundle(tmp_path / "tree.tar")
    manifest = json.loads(files.pop(MANIFEST))
    assert manifest["format"] == "hexproxy-bundle" and manifest["version"] == 1
    listed = {entry["path"]: entry for entry in manifest["files"]}
    assert set(listed) == set(files)
    assert len([p for p in files if p.startswith("tarballs/")]) == LOCKED
    for path, body in files.items():
        assert listed[path]["sha256"] == hashlib.sha256(body).hexdigest()
        assert body == (warmed / path).read_bytes()
        assert key_from_path(path) is not None


async def test_second_import_skips_everything(
    warmed: Path, tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli("import", *offline_args(warmed, key), tmp_path / "tree.tar") == 0
    assert "0 added" in capsys.readouterr().out


async def test_tampered_tarball_is_refused_and_the_rest_added(
    warmed: Path, tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = read_bundle(tmp_path / "tree.tar")
    bad = "tarballs/kapok/kapok-1.2.0.tar"
    files[bad] = flip_byte(files[bad])
    bundle = write_bundle(tmp_path / "bad.tar", files)
    target = tmp_path / "fresh"
    capsys.readouterr()
    assert await run_cli("import", *offline_args(target, key), bundle) == 1
    captured = capsys.readouterr()
    assert f"REFUSED {bad}: sha256" in captured.err
    assert "is not the signed outer checksum of kapok 1.2.0" in captured.err
    assert captured.err.count("REFUSED") == 1
    # Every package file and every tarball but the bad one.
    assert f"{2 * LOCKED - 1} added" in captured.out
    storage = FileStorage(target)
    assert storage.stat(tarball_key("kapok", "1.2.0")) is None
    assert storage.stat(package_key("kapok")) is not None


async def test_damaged_member_without_manifest_fix_is_refused(
    warmed: Path, tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = read_bundle(tmp_path / "tree.tar")
    bad = "tarballs/elm/elm-0.5.2.tar"
    files[bad] = flip_byte(files[bad])
    bundle = write_bundle(tmp_path / "bad.tar", files, fix_manifest=False)
    assert await run_cli("import", *offline_args(tmp_path / "fresh", key), bundle) == 1
    assert f"REFUSED {bad}: sha256 differs from the manifest's" in capsys.readouterr().err


async def test_tampered_registry_file_is_refused_with_its_tarballs(
    warmed: Path, tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = read_bundle(tmp_path / "tree.tar")
    files["registry/packages/kapok"] = corrupt_signature(files["registry/packages/kapok"])
    bundle = write_bundle(tmp_path / "bad.tar", files)
    target = tmp_path / "fresh"
    assert await run_cli("import", *offline_args(target, key), bundle) == 1
    err = capsys.readouterr().err
    assert "REFUSED registry/packages/kapok: " in err and "signature" in err
    assert "REFUSED tarballs/kapok/kapok-1.2.0.tar: no verified /packages/kapok" in err
    storage = FileStorage(target)
    assert storage.stat(package_key("kapok")) is None
    assert storage.stat(tarball_key("kapok", "1.2.0")) is None
    assert storage.stat(package_key("elm")) is not None


@pytest.mark.parametrize(
    "name",
    [
        "../evil",
        "/etc/evil",
        "registry/packages/../../evil",
        "tarballs/plug/../../evil.tar",
        "registry/packages/Bad",
        "tarballs/kapok/elm-0.5.2.tar",
        "tmp/x",
    ],
)
async def test_members_outside_the_cache_grammar_are_refused(
    warmed: Path, tmp_path: Path, key: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = read_bundle(tmp_path / "tree.tar")
    files[name] = b"evil"
    manifest = json.loads(files[MANIFEST])
    manifest["files"].append({"path": name, "kind": "package", "sha256": "0", "size": 4})
    files[MANIFEST] = json.dumps(manifest).encode()
    target = tmp_path / "a" / "b" / "fresh"
    assert (
        await run_cli(
            "import",
            *offline_args(target, key),
            write_bundle(tmp_path / "x.tar", files, fix_manifest=False),
        )
        == 1
    )
    err = capsys.readouterr().err
    assert f"REFUSED {name}: not a cache path" in err
    assert not _contains_evil(tmp_path, target)


def _contains_evil(root: Path, target: Path) -> bool:
    stored = b"".join(p.read_bytes() for p in target.rglob("*") if p.is_file())
    return bool(list(root.rglob("evil*"))) or b"evil" in stored


async def test_symlink_member_is_refused(
    warmed: Path, tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "tree.tar"
    bundle = tmp_path / "link.tar"
    shutil.copy(source, bundle)
    with tarfile.open(bundle, "a") as tar:
        link = tarfile.TarInfo("registry/packages/evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    assert await run_cli("import", *offline_args(tmp_path / "fresh", key), bundle) == 1
    assert "REFUSED registry/packages/evil: not a regular file" in capsys.readouterr().err
    assert not (tmp_path / "fresh" / "registry" / "packages" / "evil").exists()


async def test_older_registry_file_never_replaces_a_newer_one(
    tmp_path: Path, aiohttp_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "key.pem"
    from hexproxy.registry import public_key_pem

    key.write_bytes(public_key_pem(test_private_key().public_key()))
    old = build_repo([PackageSpec("lib", "1.0.0")], test_private_key())
    new = build_repo([PackageSpec("lib", "1.0.0"), PackageSpec("lib", "1.1.0")], test_private_key())
    bundles = {}
    for label, files in (("old", old), ("new", new)):
        served = await serve(aiohttp_server, files)
        cache_dir = tmp_path / label
        args = cli_args(served.url, cache_dir, key)
        assert await run_cli("warm", *args, "lib") == 0
        assert await run_cli("export", *args, tmp_path / f"{label}.tar") == 0
        bundles[label] = tmp_path / f"{label}.tar"

    # The newer cache keeps its copy of /packages/lib; the older one is upgraded.
    target = tmp_path / "new"
    assert (
        await run_cli("import", *cli_args("http://127.0.0.1:9", target, key), bundles["old"]) == 0
    )
    assert "skipped registry/packages/lib: the cache's copy is newer" in capsys.readouterr().out
    assert (target / "registry/packages/lib").read_bytes() == new["packages/lib"]
    assert (target / "tarballs/lib/lib-1.0.0.tar").exists()

    target = tmp_path / "old"
    assert (
        await run_cli("import", *cli_args("http://127.0.0.1:9", target, key), bundles["new"]) == 0
    )
    assert (target / "registry/packages/lib").read_bytes() == new["packages/lib"]
    assert (target / "tarballs/lib/lib-1.1.0.tar").exists()


async def test_selective_export_takes_only_what_the_specs_need(
    warmed: Path, tmp_path: Path, key: Path
) -> None:
    bundle = tmp_path / "elm.tar"
    # elm 0.5.2 needs ivy ~> 1.0; the cache holds twelve releases.
    assert await run_cli("export", *offline_args(warmed, key), bundle, "elm@~> 0.5.0") == 0
    assert set(read_bundle(bundle)) == {
        MANIFEST,
        "registry/packages/elm",
        "tarballs/elm/elm-0.5.2.tar",
        "registry/packages/ivy",
        "tarballs/ivy/ivy-1.0.1.tar",
    }


async def test_export_of_what_is_not_cached_fails_and_writes_nothing(
    tmp_path: Path, lock: Path, key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "out.tar"
    empty = offline_args(tmp_path / "empty", key)
    assert await run_cli("export", *empty, bundle, "--lock", lock) == 1
    err = capsys.readouterr().err
    assert "not in this offline cache" in err and "run hexproxy warm first" in err
    assert not bundle.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read bundle"),
        (b"this is not a tar file", "is not a tar bundle"),
        ("no-manifest", "has no usable manifest.json"),
        ("bad-manifest", "manifest.json is malformed"),
    ],
)
def test_bad_bundle_is_one_line_and_exit_2(
    tmp_path: Path, key: Path, content: Any, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from hexproxy.cli import main

    bundle = tmp_path / "in.tar"
    if isinstance(content, bytes):
        bundle.write_bytes(content)
    elif content is not None:
        with tarfile.open(bundle, "w") as tar:
            body = b"{not json" if content == "bad-manifest" else b"x"
            info = tarfile.TarInfo(MANIFEST if content == "bad-manifest" else "x")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    assert main(["import", *offline_args(tmp_path / "c", key), str(bundle)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
