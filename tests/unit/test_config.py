"""Configuration precedence, validation errors, and the example file kept in step."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hexproxy.cli import main
from hexproxy.config import SECTIONS, Config, load_config, load_public_key_pem
from hexproxy.errors import ConfigError
from hexproxy.registry import HEXPM_PUBLIC_KEY_PEM
from tests.support.environment import KUBERNETES_LINKS
from tests.support.fixtures import FIXTURES, REPO_ROOT
from tests.support.keys import test_private_key


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
    ('[server]\nevent_loop = "trio"\n', "[server] event_loop: expected uvloop or asyncio"),
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
    ("form", "header"),
    [
        (PublicFormat.PKCS1, b"-----BEGIN RSA PUBLIC KEY-----"),  # what mix hex.registry writes
        (PublicFormat.SubjectPublicKeyInfo, b"-----BEGIN PUBLIC KEY-----"),
    ],
)
def test_both_pem_forms_load(tmp_path: Path, form: PublicFormat, header: bytes) -> None:
    pem = test_private_key().public_key().public_bytes(Encoding.PEM, form)
    assert pem.startswith(header)
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    config = load_config(None, {}, {("upstream", "public_key"): str(path)})
    assert config.upstream.public_key == str(path)
    assert load_public_key_pem(config) == pem


def test_cli_config_error_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = main(["serve", "--listen", "nowhere", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "[server] listen" in err


def test_event_loop_from_the_file_the_environment_and_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_config(None, {}).server.event_loop == "uvloop"
    path = write(tmp_path, '[server]\nevent_loop = "asyncio"\n')
    assert load_config(path, {}).server.event_loop == "asyncio"
    env = {"HEXPROXY_SERVER_EVENT_LOOP": "uvloop"}
    assert load_config(path, env).server.event_loop == "uvloop"
    code = main(["serve", "--event-loop", "trio", "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err == "hexproxy: error: [server] event_loop: expected uvloop or asyncio, got 'trio'\n"


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


@pytest.mark.real_data
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


# --- the environment it runs in -------------------------------------------------------------


def load_env(env: dict[str, str]) -> tuple[Config, list[str]]:
    warnings: list[str] = []
    return load_config(None, {"HOME": "/h", **env}, warn=warnings.append), warnings


def test_kubernetes_service_links_are_ignored_silently() -> None:
    config, warnings = load_env({**KUBERNETES_LINKS, "HEXPROXY_UPSTREAM_URL": "http://e.invalid"})
    assert warnings == []
    assert config.upstream.url == "http://e.invalid"  # settings beside them still apply
    assert config.server == Config().server


@pytest.mark.parametrize(
    ("name", "closest"),
    [
        ("HEXPROXY_UPSTREM_URL", "HEXPROXY_UPSTREAM_URL"),
        ("HEXPROXY_CACHE_TTL", "HEXPROXY_CACHE_REGISTRY_TTL"),
        ("HEXPROXY_LISTEN", "HEXPROXY_SERVER_LISTEN"),
        ("HEXPROXY_CONFG", "HEXPROXY_CONFIG"),
        ("HEXPROXY_PORT", None),  # not a Service link: its value is no tcp:// URL
        ("HEXPROXY_BANANA", None),
    ],
)
def test_unknown_variable_is_one_warning_naming_the_closest_setting(
    name: str, closest: str | None
) -> None:
    config, warnings = load_env({name: "4000"})
    hint = f" (did you mean {closest}?)" if closest else ""
    assert warnings == [f"{name} is not a hexproxy setting; ignored{hint}"]
    assert dataclasses.replace(config.cache, dir="") == Config().cache  # nothing changed


def test_variable_names_match_whatever_their_case() -> None:
    config, warnings = load_env({"HEXPROXY_cache_registry_ttl": "5m"})
    assert (config.cache.registry_ttl, warnings) == (300, [])


def test_cli_prints_the_warning_and_carries_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {**KUBERNETES_LINKS, "HEXPROXY_UPSTREM_URL": "http://x"}.items():
        monkeypatch.setenv(name, value)
    assert main(["cache", "stats", "--cache-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err == (
        "hexproxy: warning: HEXPROXY_UPSTREM_URL is not a hexproxy setting; ignored "
        "(did you mean HEXPROXY_UPSTREAM_URL?)\n"
    )


def test_cli_bad_value_of_a_known_variable_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in KUBERNETES_LINKS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HEXPROXY_UPSTREAM_READ_TIMEOUT", "soon")
    assert main(["cache", "stats", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("hexproxy: error: [upstream] read_timeout: ")
