"""Configuration: defaults, then the TOML file, then ``HEXPROXY_<SECTION>_<KEY>``
environment variables, then command-line flags; validated once, then passed
around as a frozen value (never read from globals or the environment later).

Every key is a field below; ``config.example.toml`` documents each one and a
test keeps the two in step.

The file is the operator's own, so an unknown key in it is an error. The
environment is shared with whatever else runs there: an unknown ``HEXPROXY_*``
variable is a warning (naming the closest setting), and the variables Kubernetes
injects for a Service named ``hexproxy...`` are ignored without a word.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError
from .registry import HEXPM_PUBLIC_KEY_PEM, is_valid_name, is_valid_org, load_public_key
from .units import parse_duration, parse_size

MiB = 1024 * 1024

log = logging.getLogger("hexproxy.config")

ENV_PREFIX = "HEXPROXY_"
CONFIG_ENV = "HEXPROXY_CONFIG"  # the config file's path, read by the CLI
# What `hexproxy serve` runs its event loop on (web/server.py says why uvloop by default).
EVENT_LOOPS = ("uvloop", "asyncio")
# A floor that keeps a worker's share of cache.memory_size useful: below it, a few registry
# files would crowd out everything else.
MIN_MEMORY_PER_WORKER = 1024 * 1024


def default_cache_dir(env: Mapping[str, str]) -> str:
    """``$XDG_CACHE_HOME/hexproxy``, else ``~/.cache/hexproxy``."""
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".cache")
    return str(Path(base) / "hexproxy")


def default_hosted_dir(env: Mapping[str, str]) -> str:
    """``$XDG_DATA_HOME/hexproxy/hosted``, else ``~/.local/share/hexproxy/hosted``: data,
    not cache, so nothing that clears caches takes the company's packages with it."""
    home = Path(env.get("HOME", "~")).expanduser()
    base = env.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return str(Path(base) / "hexproxy" / "hosted")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:4000"
    workers: int = 1
    log_format: str = "text"
    access_log: bool = True
    fast_path: bool = True
    event_loop: str = "uvloop"

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
    api_url: str = "https://hex.pm/api"
    repo_name: str = "hexpm"
    public_key: str = ""
    installs_public_key: str = ""
    offline: bool = False
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    total_timeout: float = 300.0
    stale_timeout: float = 1.0
    inflight_wait: float = 5.0
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
    # What the server holds in memory per cached object (registry files, stored-file
    # records, hot small tarballs), for all workers together.
    memory_size: int = 64 * 1024 * 1024


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
class HostedRepoConfig:
    """One ``[[hosted.repos]]`` entry: a repository hexproxy publishes and signs itself."""

    name: str
    # PEM file of its RSA signing key; empty: generated in hosted.dir/NAME on first use.
    private_key: str = ""
    # "sha256:HEX" digests of the API keys that may read (if any are set, reads need one)
    # and that may publish (write implies read).
    read_keys: tuple[str, ...] = ()
    write_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HostedConfig:
    dir: str = ""
    max_tarball_size: int = 16 * MiB
    max_unpacked_size: int = 128 * MiB
    max_docs_size: int = 16 * MiB
    repos: tuple[HostedRepoConfig, ...] = ()

    def repo(self, name: str) -> HostedRepoConfig | None:
        return next((r for r in self.repos if r.name == name), None)


@dataclass(frozen=True, slots=True)
class OrgsConfig:
    """hex.pm organizations (``/repos/ORG/...``): how long upstream's word on a key holds."""

    auth_ttl: float = 300.0
    offline_grace: float = 86400.0
    # Organization -> hashes of the keys that may read it when the proxy is offline
    # (``hexproxy orgs hash-key``); never the keys themselves.
    keys: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    hosted: HostedConfig = field(default_factory=HostedConfig)
    orgs: OrgsConfig = field(default_factory=OrgsConfig)
    store: StoreConfig = field(default_factory=StoreConfig)

    @property
    def cache_dir(self) -> Path:
        return Path(self.cache.dir)


SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "upstream": UpstreamConfig,
    "cache": CacheConfig,
    "hosted": HostedConfig,
    "orgs": OrgsConfig,
    "store": StoreConfig,
}

# What a listed key hash looks like (see hexproxy.orgs.credentials.listed_hash).
KEY_HASH = re.compile(r"\Ahmac-sha256:[0-9a-f]{64}\Z")
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
_SIZE_KEYS = {
    "max_tarball_size",
    "max_registry_size",
    "max_size",
    "memory_size",
    "max_unpacked_size",
    "max_docs_size",
}


def _parse_key_lists(value: Any) -> dict[str, tuple[str, ...]]:
    """``{org = ["hmac-sha256:..."]}`` from TOML, or ``org=HASH,HASH;org2=HASH`` from the
    environment."""
    if isinstance(value, str):
        table: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in value.split(";"))):
            org, sep, hashes = part.partition("=")
            if not sep:
                raise ValueError(f"expected ORG=HASH[,HASH...], got {part!r}")
            table[org.strip()] = [h.strip() for h in hashes.split(",") if h.strip()]
        value = table
    if not isinstance(value, dict):
        raise ValueError(f"expected a table of organization = [key hashes], got {value!r}")
    parsed: dict[str, tuple[str, ...]] = {}
    for org, hashes in value.items():
        if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
            raise ValueError(f"{org}: expected a list of key hashes")
        parsed[org] = tuple(hashes)
    return parsed


def _parser_for(name: str, kind: Any) -> Callable[[Any], Any]:
    if name == "repos":
        return _parse_repos
    if name == "keys":
        return _parse_key_lists
    if name in _SIZE_KEYS:
        return parse_size
    if kind in ("bool", bool):
        return _parse_bool
    if kind in ("int", int):
        return _parse_int
    if kind in ("float", float):
        return parse_duration
    return _parse_str


# How API keys appear in the configuration: never in clear (hosted/keys.py).
_KEY_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_REPO_FIELDS = {f.name for f in dataclasses.fields(HostedRepoConfig)}


def _parse_repos(value: Any) -> tuple[HostedRepoConfig, ...]:
    """``[[hosted.repos]]`` tables; only a config file can give them."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ValueError("expected [[hosted.repos]] tables (set them in the config file)")
    repos = []
    for table in value:
        unknown = set(table) - _REPO_FIELDS
        if unknown:
            raise ValueError(f"unknown key {sorted(unknown)[0]!r} in a [[hosted.repos]] table")
        if not isinstance(table.get("name"), str):
            raise ValueError("every [[hosted.repos]] table needs a name")
        keys = {k: _parse_key_list(k, table.get(k, [])) for k in ("read_keys", "write_keys")}
        repos.append(
            HostedRepoConfig(table["name"], _parse_str(table.get("private_key", "")), **keys)
        )
    return tuple(repos)


def _parse_key_list(name: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f'{name}: expected a list of "sha256:..." strings')
    return tuple(v.lower() for v in value)


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


def env_names() -> dict[str, tuple[str, str]]:
    """Every setting's variable name (``HEXPROXY_CACHE_REGISTRY_TTL``) -> (section, key)."""
    return {
        f"{ENV_PREFIX}{section}_{f.name}".upper(): (section, f.name)
        for section, cls in SECTIONS.items()
        for f in dataclasses.fields(cls)
    }


# Kubernetes gives every pod these for each Service in its namespace, named after the
# Service: "hexproxy" yields HEXPROXY_SERVICE_HOST, HEXPROXY_SERVICE_PORT(_<PORT NAME>),
# HEXPROXY_PORT=tcp://10.96.0.12:4000 and HEXPROXY_PORT_4000_TCP(_PROTO|_PORT|_ADDR);
# "hexproxy-metrics" yields the same with HEXPROXY_METRICS_ in front. Only the plain
# *_PORT form could be a setting someone typed, so it is recognised by its URL value.
_SERVICE_LINK = re.compile(
    r"HEXPROXY(?:_\w+?)?_(?:SERVICE_HOST|SERVICE_PORT(?:_\w+)?"
    r"|PORT_\d+_(?:TCP|UDP|SCTP)(?:_PROTO|_PORT|_ADDR)?)"
)
_SERVICE_LINK_URL = re.compile(r"(?:tcp|udp|sctp)://\S+")


def is_service_link(name: str, value: str) -> bool:
    """Whether ``name=value`` looks like a variable Kubernetes injected for a Service."""
    if _SERVICE_LINK.fullmatch(name):
        return True
    return name.endswith("_PORT") and _SERVICE_LINK_URL.fullmatch(value) is not None


def unknown_variable(name: str, known: Iterable[str]) -> str:
    """The warning for a ``HEXPROXY_*`` variable that is no setting, with the closest one."""
    # Compare what follows the prefix: every name shares it, which would make anything
    # look close to everything.
    rest = name.upper().removeprefix(ENV_PREFIX)
    candidates = {n.removeprefix(ENV_PREFIX): n for n in known}
    close = difflib.get_close_matches(rest, list(candidates), n=1)
    hint = f" (did you mean {candidates[close[0]]}?)" if close else ""
    return f"{name} is not a hexproxy setting; ignored{hint}"


def _env_values(env: Mapping[str, str], warn: Callable[[str], None]) -> dict[tuple[str, str], Any]:
    known = env_names()
    values: dict[tuple[str, str], Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        setting = known.get(name.upper())
        if setting is not None:
            values[setting] = value
        elif not is_service_link(name, value):
            warn(unknown_variable(name, [*known, CONFIG_ENV]))
    return values


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[tuple[str, str], Any] | None = None,
    *,
    warn: Callable[[str], None] = log.warning,
) -> Config:
    """Build the one Config the process runs with; ConfigError names the bad key.

    ``warn`` receives one line for each ``HEXPROXY_*`` variable that is no setting.
    """
    env = os.environ if env is None else env
    layered: dict[tuple[str, str], Any] = {}
    if path is not None:
        layered.update(_file_values(path))
    layered.update(_env_values(env, warn))
    layered.update(overrides or {})
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for (section, key), value in layered.items():
        if section not in SECTIONS:
            raise ConfigError(f"unknown section [{section}]")
        sections[section][key] = _coerce(section, key, value)
    if not sections["cache"].get("dir"):
        sections["cache"]["dir"] = default_cache_dir(env)
    if not sections["hosted"].get("dir"):
        sections["hosted"]["dir"] = default_hosted_dir(env)
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
    _check(
        server.event_loop in EVENT_LOOPS,
        "[server] event_loop",
        f"expected uvloop or asyncio, got {server.event_loop!r}",
    )
    _check_url("[upstream] url", upstream.url)
    _check_url("[upstream] builds_url", upstream.builds_url)
    _check_url("[upstream] api_url", upstream.api_url)
    _check(
        is_valid_name(upstream.repo_name),
        "[upstream] repo_name",
        f"not a valid repository name: {upstream.repo_name!r}",
    )
    for key in (
        "connect_timeout",
        "read_timeout",
        "total_timeout",
        "stale_timeout",
        "inflight_wait",
    ):
        _check(getattr(upstream, key) > 0, f"[upstream] {key}", "must be greater than 0")
    _check(upstream.failure_threshold >= 1, "[upstream] failure_threshold", "must be at least 1")
    for key in ("max_tarball_size", "max_registry_size"):
        _check(getattr(upstream, key) > 0, f"[upstream] {key}", "must be greater than 0")
    _check(cache.registry_ttl >= 0, "[cache] registry_ttl", "must not be negative")
    _check(
        cache.memory_size >= MIN_MEMORY_PER_WORKER * server.workers,
        "[cache] memory_size",
        f"must be at least {server.workers}MiB (1MiB for each of the {server.workers} "
        "workers that share it)",
    )
    validate_hosted(config)
    _validate_orgs(config.orgs, upstream.repo_name)
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


def validate_hosted(config: Config) -> None:
    hosted = config.hosted
    for key in ("max_tarball_size", "max_unpacked_size", "max_docs_size"):
        _check(getattr(hosted, key) > 0, f"[hosted] {key}", "must be greater than 0")
    names = [r.name for r in hosted.repos]
    for repo in hosted.repos:
        where = f"[[hosted.repos]] {repo.name!r}"
        _check(_valid_repo_name(repo.name), where, "name must be lowercase letters, digits, _")
        _check(
            repo.name != config.upstream.repo_name,
            where,
            f"{repo.name!r} is the mirrored repository's name",
        )
        _check(names.count(repo.name) == 1, where, "is configured twice")
        for digest in (*repo.read_keys, *repo.write_keys):
            _check(
                _KEY_DIGEST.fullmatch(digest) is not None,
                where,
                'keys must be "sha256:" + 64 hex digits',
            )
    if hosted.repos:
        data, cache = Path(hosted.dir).resolve(), config.cache_dir.resolve()
        overlap = data == cache or cache in data.parents or data in cache.parents
        _check(not overlap, "[hosted] dir", "must not be inside the cache directory or hold it")


def _valid_repo_name(name: str) -> bool:
    return (
        bool(name)
        and len(name) <= 64
        and name[0].isascii()
        and name[0].islower()
        and all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in name)
    )


def _validate_orgs(orgs: OrgsConfig, repo_name: str) -> None:
    _check(orgs.auth_ttl >= 0, "[orgs] auth_ttl", "must not be negative")
    _check(orgs.offline_grace >= 0, "[orgs] offline_grace", "must not be negative")
    for org, hashes in orgs.keys.items():
        _check(
            is_valid_org(org) and org != repo_name,
            "[orgs] keys",
            f"not an organization name: {org!r}",
        )
        for value in hashes:
            _check(
                bool(KEY_HASH.match(value)),
                "[orgs] keys",
                f"{org}: expected hmac-sha256:<64 hex digits> (hexproxy orgs hash-key), "
                f"got {value[:20]!r}",
            )


def load_public_key_pem(config: Config) -> bytes:
    """The PEM the registry is verified with: the configured file, else hexpm's key."""
    return (
        read_key_file("[upstream] public_key", config.upstream.public_key) or HEXPM_PUBLIC_KEY_PEM
    )
