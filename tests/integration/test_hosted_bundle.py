"""``hexproxy export`` / ``import`` carry hosted repositories across an air gap."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from hexproxy.cli import main
from hexproxy.config import load_config
from hexproxy.hosted import Hosted
from hexproxy.hosted.keys import digest_of
from tests.support.hosted import package_tarball, private_key_pem
from tests.support.keys import other_private_key


def side(root: Path, key_pem: bytes) -> Path:
    """A config file for one side of the gap, signing acme with ``key_pem``."""
    root.mkdir(parents=True)
    (root / "acme.pem").write_bytes(key_pem)
    path = root / "hexproxy.toml"
    path.write_text(
        f'[cache]\ndir = "{root / "cache"}"\n[hosted]\ndir = "{root / "hosted"}"\n'
        f'[[hosted.repos]]\nname = "acme"\nprivate_key = "{root / "acme.pem"}"\n'
        f'write_keys = ["{digest_of("k")}"]\n'
    )
    (root / "cache").mkdir()
    return path


def hosted(config: Path) -> Hosted:
    return Hosted.open(load_config(config, {"HOME": str(config.parent)}))


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    config = side(tmp_path / "outside", private_key_pem())
    repo = hosted(config)
    repo.publish("acme", package_tarball("acme_core", "1.0.0"), replace=False)
    repo.publish("acme", package_tarball("acme_core", "1.1.0"), replace=False)
    repo.publish("acme", package_tarball("acme_app", "0.1.0"), replace=False)
    repo.repo("acme").retire("acme_core", "1.0.0", "deprecated", "use 1.1")
    return config


def export(config: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--config", str(config), str(bundle)]) == 0
    capsys.readouterr()


def test_export_import_carries_the_signed_files_byte_for_byte(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.tar"
    export(outside, bundle, capsys)
    inside = side(tmp_path / "inside", private_key_pem())
    assert main(["import", "--config", str(inside), str(bundle)]) == 0
    assert "refused" in capsys.readouterr().out
    a, b = hosted(outside).repo("acme"), hosted(inside).repo("acme")
    assert b.snapshot() == a.snapshot()
    for name, version in [("acme_core", "1.0.0"), ("acme_core", "1.1.0"), ("acme_app", "0.1.0")]:
        blob_a, blob_b = a.tarball(name, version), b.tarball(name, version)
        assert blob_a is not None and blob_b is not None
        assert blob_b.path.read_bytes() == blob_a.path.read_bytes()
    assert b.verify() == []
    # A second import changes nothing.
    assert main(["import", "--config", str(inside), str(bundle)]) == 0
    assert "0 added" in capsys.readouterr().out


def test_import_verifies_with_this_sides_key(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.tar"
    export(outside, bundle, capsys)
    other = other_private_key().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    inside = side(tmp_path / "inside", other)
    assert main(["import", "--config", str(inside), str(bundle)]) == 1
    err = capsys.readouterr().err
    assert "REFUSED hosted/acme/names: registry signature does not verify" in err
    assert hosted(inside).repo("acme").versions().packages == ()


def test_a_swapped_tarball_is_refused_even_with_a_matching_manifest(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.tar"
    export(outside, bundle, capsys)
    forged = tmp_path / "forged.tar"
    evil = package_tarball("acme_core", "1.1.0", note="evil")
    _rewrite(bundle, forged, "hosted/acme/tarballs/acme_core-1.1.0.tar", evil)
    inside = side(tmp_path / "inside", private_key_pem())
    assert main(["import", "--config", str(inside), str(forged)]) == 1
    assert "is missing or not the signed one" in capsys.readouterr().err
    assert hosted(inside).repo("acme").package("acme_core") is None


def test_a_bundle_never_takes_a_release_away(
    tmp_path: Path, outside: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle.tar"
    export(outside, bundle, capsys)
    inside = side(tmp_path / "inside", private_key_pem())
    hosted(inside).publish("acme", package_tarball("acme_only_inside", "1.0.0"), replace=False)
    assert main(["import", "--config", str(inside), str(bundle)]) == 1
    assert "which the bundle lacks" in capsys.readouterr().err
    assert hosted(inside).repo("acme").package("acme_only_inside") is not None


def _rewrite(source: Path, dest: Path, path: str, data: bytes) -> None:
    """Copy a bundle with one member's bytes replaced and the manifest made to match."""
    with tarfile.open(source) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    members[path] = data
    manifest = json.loads(members["manifest.json"])
    for entry in manifest["files"]:
        if entry["path"] == path:
            entry["sha256"], entry["size"] = hashlib.sha256(data).hexdigest(), len(data)
    members["manifest.json"] = json.dumps(manifest).encode()
    with tarfile.open(dest, "w") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
