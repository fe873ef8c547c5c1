"""``hexproxy hosted ...`` on a data directory, as a pipeline would run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hexproxy.cli import main
from hexproxy.config import Config, load_config
from hexproxy.hosted import Hosted
from hexproxy.hosted.keys import digest_of
from hexproxy.registry import fingerprint, load_public_key
from tests.support.hosted import package_tarball


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "hexproxy.toml"
    path.write_text(
        f'[cache]\ndir = "{tmp_path / "cache"}"\n'
        f'[hosted]\ndir = "{tmp_path / "hosted"}"\n'
        f'[[hosted.repos]]\nname = "acme"\nwrite_keys = ["{digest_of("k")}"]\n'
    )
    return path


def run(capsys: pytest.CaptureFixture[str], config: Path, *args: str) -> tuple[int, str, str]:
    code = main(["hosted", *args[:1], "--config", str(config), *args[1:]])
    out, err = capsys.readouterr()
    return code, out, err


def test_publish_replace_ls_retire_revert(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "acme_core-1.0.0.tar"
    tar.write_bytes(package_tarball("acme_core", "1.0.0"))
    code, out, _ = run(capsys, config_file, "publish", "--repo", "acme", str(tar))
    assert code == 0 and out.startswith("published acme_core 1.0.0 in acme")
    code, _, err = run(capsys, config_file, "publish", "--repo", "acme", str(tar))
    assert code == 2 and err.count("\n") == 1 and "--replace" in err
    code, out, _ = run(capsys, config_file, "publish", "--repo", "acme", str(tar), "--replace")
    assert code == 0 and out.startswith("replaced")
    code, out, _ = run(capsys, config_file, "ls", "--json")
    assert json.loads(out) == {"repositories": {"acme": {"acme_core": ["1.0.0"]}}}
    code, out, _ = run(
        capsys,
        config_file,
        "retire",
        "--repo",
        "acme",
        "acme_core@1.0.0",
        "invalid",
        "--message",
        "oops",
    )
    assert code == 0
    hosted = Hosted.open(_load(config_file))
    retired = hosted.repo("acme").release("acme_core", "1.0.0").retired
    assert retired is not None and retired.message == "oops"
    code, out, _ = run(capsys, config_file, "revert", "--repo", "acme", "acme_core@1.0.0")
    assert code == 0
    assert hosted.repo("acme").package("acme_core") is None


def _load(path: Path) -> Config:
    return load_config(path, {"HOME": str(path.parent)})


@pytest.mark.parametrize(
    "args",
    [
        ("publish", "--repo", "acme", "/nonexistent.tar"),
        ("publish", "--repo", "nope", "/nonexistent.tar"),
        ("revert", "--repo", "acme", "acme_core"),
        ("revert", "--repo", "acme", "Bad-Name@1.0.0"),
        ("revert", "--repo", "acme", "acme_core@1.0.0"),
        ("retire", "--repo", "acme", "acme_core@1.0.0", "other", "--message", "x"),
        ("key", "nope"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    config_file: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    code, _, err = run(capsys, config_file, *args)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("hexproxy: error: ")


def test_invalid_tarball_is_refused_like_the_api(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"garbage" * 100)
    code, _, err = run(capsys, config_file, "publish", "--repo", "acme", str(bad))
    assert code == 2 and "not a valid package tarball" in err


def test_key_prints_pem_fingerprint_and_the_mix_command(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, config_file, "key", "acme", "--url", "http://proxy:4000/")
    assert code == 0
    pem = out[: out.index("-----END PUBLIC KEY-----") + len("-----END PUBLIC KEY-----\n")]
    expected = fingerprint(load_public_key(pem.encode()))
    assert f"\n{expected}\n" in out
    assert (
        f"mix hex.repo add acme http://proxy:4000/internal/acme --fetch-public-key {expected}"
        in out
    )
    key_file = Path(_hosted_dir(config_file)) / "acme" / "private_key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600


def _hosted_dir(config_file: Path) -> str:
    return str(config_file.parent / "hosted")


def test_verify_finds_a_damaged_tarball(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "p.tar"
    tar.write_bytes(package_tarball("acme_core", "1.0.0"))
    assert run(capsys, config_file, "publish", "--repo", "acme", str(tar))[0] == 0
    code, out, _ = run(capsys, config_file, "verify")
    assert code == 0 and "0 problems" in out
    blob = next((tmp_path / "hosted" / "acme" / "blobs").glob("*.tar"))
    blob.write_bytes(blob.read_bytes()[:-10] + b"x" * 10)
    code, out, _ = run(capsys, config_file, "verify")
    assert code == 1
    assert "BAD  acme/tarballs/acme_core-1.0.0.tar: sha256" in out


def test_verify_purge_removes_only_orphans(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "p.tar"
    tar.write_bytes(package_tarball("acme_core", "1.0.0"))
    assert run(capsys, config_file, "publish", "--repo", "acme", str(tar))[0] == 0
    blobs = tmp_path / "hosted" / "acme" / "blobs"
    orphan = blobs / ("0" * 64 + ".tar")  # what a crash before the registry swap leaves
    orphan.write_bytes(b"left behind")
    code, out, _ = run(capsys, config_file, "verify")
    assert code == 0 and f"ORPHAN  acme/blobs/{orphan.name}" in out
    assert orphan.exists()
    code, out, _ = run(capsys, config_file, "verify", "--purge")
    assert code == 0 and f"REMOVED  acme/blobs/{orphan.name}" in out
    assert not orphan.exists()
    assert len(list(blobs.glob("*.tar"))) == 1
    assert run(capsys, config_file, "verify")[1].count("0 problems") == 1


def test_cache_commands_never_touch_hosted_packages(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "p.tar"
    tar.write_bytes(package_tarball("acme_core", "1.0.0"))
    assert run(capsys, config_file, "publish", "--repo", "acme", str(tar))[0] == 0
    (tmp_path / "cache").mkdir(exist_ok=True)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "hosted").rglob("*"))
    assert main(["cache", "rm", "--config", str(config_file), "acme_core"]) == 1
    assert main(["cache", "prune", "--config", str(config_file), "--max-size", "0"]) == 0
    capsys.readouterr()
    after = sorted(p.relative_to(tmp_path) for p in (tmp_path / "hosted").rglob("*"))
    assert after == before
