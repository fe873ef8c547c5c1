"""Configuration: defaults, then the TOML file, then ``HEXPROXY_<SECTION>_<KEY>``
environment variables, then command-line flags; validated once, then passed
around as a frozen value (never read from globals or the environment later).

Every key is a field below; ``config.example.toml`` documents each one and a
test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .registry import HEXPM_PUBLIC_KEY_PEM, is_valid_name, load_public_key
from .units import parse_duration, parse_size

MiB = 1024 * 1024


def default_cache_dir(env: Mapping[str, str]) -> str:
    """``$XDG_CACHE_HOME/hexproxy``, else ``~/.cache/hexproxy``."""
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return str(Path(base) / "hexproxy")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:4000"
    workers: int = 1
    log_format: str = "text"
    access_log: bool = True

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    url: str = "https://repo.hex.pm"
    builds_url: str = "https://builds.hex.pm"
    repo_name: str = "hexpm"
    public_key: str = ""
    installs_public_key: str = ""
    offline: bool = False
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    total_timeout: float = 300.0
    stale_timeout: float = 1.0
    failure_threshold: int = 3
    retry_after: float = 30.0
    max_tarball_size: int = 16 * MiB
    max_registry_size: int = 64 * MiB


@dataclass(frozen=True, slots=True)
class CacheConfig:
    dir: str = ""
    registry_ttl: float = 300.0
    negative_ttl: float = 60.0
    max_size: int = 0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where verified objects are shared: "fs" (the cache directory alone) or "s3".

    Credentials are never configured here: the S3 client reads the usual AWS chain
    (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, a web identity
    token, the instance role)."""

    kind: str = "fs"
    bucket: str = ""
    prefix: str = ""
    endpoint_url: str = ""
    region: str = ""
    addressing_style: str = "auto"
    timeout: float = 2.0


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    store: StoreConfig = field(default_factory=StoreConfig)

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache.dir)


SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "upstream": UpstreamConfig,
    "cache": CacheConfig,
    "store": StoreConfig,
}

# S3's bucket naming rules (the common subset every S3-compatible server accepts).
_BUCKET = re.compile(r"\A[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")


def split_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:4000``) into its parts; ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
        return True
    if isinstance(value, str) and value.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _parse_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a whole number, got {value!r}")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


def _parse_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


# Keys whose values are sizes or durations get the unit-aware parsers.
_SIZE_KEYS = {"max_tarball_size", "max_registry_size", "max_size"}


def _parser_for(name: str, kind: Any) -> Callable[[Any], Any]:
    if name in _SIZE_KEYS:
        return parse_size
    if kind in ("bool", bool):
        return _parse_bool
    if kind in ("int", int):
        return _parse_int
    if kind in ("float", float):
        return parse_duration
    return _parse_str


def _coerce(section: str, key: str, value: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
    if key not in fields:
        raise ConfigError(f"[{section}] {key}: unknown key")
    try:
        return _parser_for(key, fields[key].type)(value)
    except ValueError as exc:
        raise ConfigError(f"[{section}] {key}: {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: invalid TOML: {exc}") from None


def _file_values(path: Path) -> dict[tuple[str, str], Any]:
    values: dict[tuple[str, str], Any] = {}
    for section, table in _read_toml(path).items():
        if section not in SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"config file {path}: unknown section [{section}]")
        for key, value in table.items():
            values[(section, key)] = value
    return values


def _env_values(env: Mapping[str, str]) -> dict[tuple[str, str], Any]:
    values: dict[tuple[str, str], Any] = {}
    for name, value in env.items():
        if not name.startswith("HEXPROXY_"):
            continue
        if name == "HEXPROXY_CONFIG":  # the config file's path, read by the CLI
            continue
        rest = name.removeprefix("HEXPROXY_").lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS:
            raise ConfigError(f"{name}: unknown section {section!r}")
        values[(section, key)] = value
    return values


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, str], Any] | None = None,
) -> Config:
    """Build the one Config the process runs with; ConfigError names the bad key."""
    env = os.environ if env is None else env
    layered: dict[tuple[str, str], Any] = {}
    if path is not None:
        layered.update(_file_values(path))
    layered.update(_env_values(env))
    layered.update(overrides or {})
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for (section, key), value in layered.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}]")
        sections[section][key] = _coerce(section, key, value)
    if not sections["cache"].get("dir"):
        sections["cache"]["dir"] = default_cache_dir(env)
    config = Config(**{name: SECTIONS[name](**vals) for name, vals in sections.items()})
    validate(config)
    return config


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {problem}")


def _check_url(key: str, url: str) -> None:
    parts = urlsplit(url)
    _check(
        parts.scheme in ("http", "https") and bool(parts.hostname),
        key,
        f"expected an http:// or https:// URL, got {url!r}",
    )
    _check(not parts.query and not parts.fragment, key, "must not have a query or fragment")


def validate(config: Config) -> None:
    """Reject values that would only fail later, at request time."""
    server, upstream, cache = config.server, config.upstream, config.cache
    try:
        split_listen(server.listen)
    except ValueError as exc:
        raise ConfigError(f"[server] listen: {exc}") from None
    _check(1 <= server.workers <= 64, "[server] workers", "must be between 1 and 64")
    _check(
        server.log_format in ("text", "json"),
        "[server] log_format",
        f"expected text or json, got {server.log_format!r}",
    )
    _check_url("[upstream] url", upstream.url)
    _check_url("[upstream] builds_url", upstream.builds_url)
    _check(
        is_valid_name(upstream.repo_name),
        "[upstream] repo_name",
        f"not a valid repository name: {upstream.repo_name!r}",
    )
    for key in ("connect_timeout", "read_timeout", "total_timeout", "stale_timeout"):
        _check(getattr(upstream, key) > 0, f"[upstream] {key}", "must be greater than 0")
    _check(upstream.failure_threshold >= 1, "[upstream] failure_threshold", "must be at least 1")
    for key in ("max_tarball_size", "max_registry_size"):
        _check(getattr(upstream, key) > 0, f"[upstream] {key}", "must be greater than 0")
    _check(cache.registry_ttl >= 0, "[cache] registry_ttl", "must not be negative")
    read_key_file("[upstream] public_key", upstream.public_key)
    read_key_file("[upstream] installs_public_key", upstream.installs_public_key)
    validate_store(config.store)


def validate_store(store: StoreConfig) -> None:
    _check(store.kind in ("fs", "s3"), "[store] kind", f"expected fs or s3, got {store.kind!r}")
    _check(store.timeout > 0, "[store] timeout", "must be greater than 0")
    _check(
        store.addressing_style in ("auto", "path", "virtual"),
        "[store] addressing_style",
        f"expected auto, path or virtual, got {store.addressing_style!r}",
    )
    if store.kind != "s3":
        return
    _check(bool(store.bucket), "[store] bucket", 'required when kind = "s3"')
    _check(
        bool(_BUCKET.match(store.bucket)) and ".." not in store.bucket,
        "[store] bucket",
        f"not a valid bucket name: {store.bucket!r}",
    )
    if store.endpoint_url:
        _check_url("[store] endpoint_url", store.endpoint_url)
    parts = store.prefix.split("/")
    _check(
        not store.prefix.startswith("/")
        and ".." not in parts
        and all(p.isprintable() for p in parts),
        "[store] prefix",
        f"expected a relative key prefix like hexproxy/, got {store.prefix!r}",
    )


def read_key_file(setting: str, path: str) -> bytes | None:
    """The PEM in the file a key setting names, checked to load; None when it names none."""
    if not path:
        return None
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    try:
        load_public_key(pem)
    except ValueError as exc:
        raise ConfigError(f"{setting}: {path}: {exc}") from None
    return pem


def load_public_key_pem(config: Config) -> bytes:
    """The PEM the registry is verified with: the configured file, else hexpm's key."""
    return (
        read_key_file("[upstream] public_key", config.upstream.public_key) or HEXPM_PUBLIC_KEY_PEM
    )
