"""Configuration precedence, validation errors, and the example file kept in step."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from hexproxy.cli import main
from hexproxy.config import SECTIONS, Config, load_config
from hexproxy.errors import ConfigError
from hexproxy.registry import HEXPM_PUBLIC_KEY_PEM
from tests.support.fixtures import FIXTURES, REPO_ROOT


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hexproxy.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    config = load_config(None, {"HOME": "/home/ci"})
    assert config.server.listen == "127.0.0.1:4000"
    assert config.upstream.url == "https://repo.hex.pm"
    assert config.upstream.repo_name == "hexpm"
    assert config.cache.dir == "/home/ci/.cache/hexproxy"
    assert config.cache.registry_ttl == 300
    assert config.cache.negative_ttl == 60


def test_xdg_cache_home() -> None:
    config = load_config(None, {"HOME": "/h", "XDG_CACHE_HOME": "/xdg"})
    assert config.cache.dir == "/xdg/hexproxy"


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[server]\nlisten = "127.0.0.1:5000"\n[cache]\nregistry_ttl = 10\n'
        '[upstream]\nurl = "http://file.invalid"\n',
    )
    env = {"HEXPROXY_CACHE_REGISTRY_TTL": "20", "HEXPROXY_UPSTREAM_URL": "http://env.invalid"}
    config = load_config(path, env, {("upstream", "url"): "http://flag.invalid"})
    assert config.server.listen == "127.0.0.1:5000"  # file only
    assert config.cache.registry_ttl == 20  # env over file
    assert config.upstream.url == "http://flag.invalid"  # flag over env


def test_units(tmp_path: Path) -> None:
    path = write(tmp_path, '[cache]\nmax_size = "2GiB"\nregistry_ttl = "5m"\n')
    config = load_config(path, {})
    assert config.cache.max_size == 2 * 1024**3
    assert config.cache.registry_ttl == 300


BAD = [
    ('[server]\nlisten = "nope"\n', "[server] listen"),
    ('[server]\nlisten = "1.2.3.4:99999"\n', "[server] listen"),
    ("[server]\nworkers = 0\n", "[server] workers"),
    ('[server]\nworkers = "two"\n', "[server] workers"),
    ('[server]\nlog_format = "xml"\n', "[server] log_format"),
    ("[server]\nbogus = 1\n", "[server] bogus: unknown key"),
    ("[bogus]\nx = 1\n", "unknown section [bogus]"),
    ('[upstream]\nurl = "ftp://x"\n', "[upstream] url"),
    ('[upstream]\nurl = "http://x/?q=1"\n', "[upstream] url"),
    ('[upstream]\nrepo_name = "Not Valid"\n', "[upstream] repo_name"),
    ("[upstream]\nconnect_timeout = 0\n", "[upstream] connect_timeout"),
    ('[upstream]\nread_timeout = "soon"\n', "[upstream] read_timeout"),
    ('[upstream]\noffline = "maybe"\n', "[upstream] offline"),
    ('[upstream]\npublic_key = "/nonexistent.pem"\n', "[upstream] public_key"),
    ('[cache]\nmax_size = "lots"\n', "[cache] max_size"),
    ("[cache\n", "invalid TOML"),
]


@pytest.mark.parametrize(("text", "named"), BAD)
def test_bad_values_name_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text), {})
    assert named in raised.value.message
    assert "\n" not in raised.value.message


def test_bad_env_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[upstream\] failure_threshold"):
        load_config(None, {"HEXPROXY_UPSTREAM_FAILURE_THRESHOLD": "many"})


def test_public_key_that_is_not_a_key(tmp_path: Path) -> None:
    garbage = tmp_path / "key.pem"
    garbage.write_text("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
    with pytest.raises(ConfigError, match=r"\[upstream\] public_key"):
        load_config(None, {}, {("upstream", "public_key"): str(garbage)})


@pytest.mark.parametrize(
    "pem",
    [FIXTURES / "phoenix-tree" / "public_key", FIXTURES / "hexpm-signed" / "hexpm_public_key.pem"],
)
def test_both_pem_forms_load(pem: Path) -> None:
    config = load_config(None, {}, {("upstream", "public_key"): str(pem)})
    assert config.upstream.public_key == str(pem)


def test_cli_config_error_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["serve", "--listen", "nowhere", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "[server] listen" in err


def test_cli_bad_flag_is_exit_2() -> None:
    with pytest.raises(SystemExit) as raised:
        main(["serve", "--no-such-flag"])
    assert raised.value.code == 2


def test_example_config_documents_every_key_with_its_default() -> None:
    example = tomllib.loads((REPO_ROOT / "config.example.toml").read_text())
    defaults = Config()
    assert set(example) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        assert set(example[section]) == names, section
    parsed = load_config(REPO_ROOT / "config.example.toml", {"HOME": "/h"})
    for section in SECTIONS:
        got = dataclasses.replace(getattr(parsed, section))
        want = getattr(defaults, section)
        if section in ("cache", "hosted"):  # directories default from $HOME
            got = dataclasses.replace(got, dir="")
        assert got == want, section


def test_builtin_key_is_hexpm() -> None:
    assert (FIXTURES / "hexpm-signed" / "hexpm_public_key.pem").read_bytes() == HEXPM_PUBLIC_KEY_PEM


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({("store", "kind"): "gcs"}, "[store] kind: expected fs or s3, got 'gcs'"),
        ({("store", "kind"): "s3"}, '[store] bucket: required when kind = "s3"'),
        ({("store", "kind"): "s3", ("store", "bucket"): "No_Such"}, "[store] bucket: not a valid"),
        (
            {("store", "kind"): "s3", ("store", "bucket"): "b-1", ("store", "prefix"): "/abs"},
            "[store] prefix: expected a relative key prefix",
        ),
        (
            {("store", "kind"): "s3", ("store", "bucket"): "b-1", ("store", "endpoint_url"): "x"},
            "[store] endpoint_url: expected an http:// or https:// URL",
        ),
        ({("store", "timeout"): "0"}, "[store] timeout: must be greater than 0"),
    ],
)
def test_store_settings_are_checked(values: dict[tuple[str, str], str], problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(None, {"HOME": "/h"}, values)
    assert raised.value.message.startswith(problem)


def test_store_settings_come_from_the_environment() -> None:
    env = {
        "HOME": "/h",
        "HEXPROXY_STORE_KIND": "s3",
        "HEXPROXY_STORE_BUCKET": "hex-cache",
        "HEXPROXY_STORE_ENDPOINT_URL": "http://minio:9000",
        "HEXPROXY_STORE_PREFIX": "ci/",
    }
    store = load_config(None, env).store
    assert (store.kind, store.bucket, store.endpoint_url, store.prefix) == (
        "s3",
        "hex-cache",
        "http://minio:9000",
        "ci/",
    )
