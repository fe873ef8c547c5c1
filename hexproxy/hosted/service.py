"""The hosted repositories a configuration names, and the operations the API and the
CLI share: the same validation, the same locking, the same answers.

``Hosted.open(config)`` opens (and on first use creates) every ``[[hosted.repos]]``
repository; ``publish``, ``publish_docs`` and the access checks are what both the HTTP
API and ``hexproxy hosted`` call, so neither can skip a check the other makes.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, HostedConfig, HostedRepoConfig
from .errors import Forbidden, TooBig, Unauthorized, UnknownRepository, ValidationFailed
from .keys import load_or_create_signing_key, matches
from .package import UploadedPackage, check_package
from .repository import HostedRepository

__all__ = ["Hosted", "PublishResult"]


@dataclass(frozen=True, slots=True)
class PublishResult:
    package: UploadedPackage
    created: bool


class Hosted:
    """Every configured hosted repository, by name."""

    def __init__(self, config: HostedConfig, repos: dict[str, HostedRepository]) -> None:
        self.config = config
        self.repos = repos

    @classmethod
    def open(cls, config: Config) -> Hosted:
        repos = {}
        for repo_config in config.hosted.repos:
            root = Path(config.hosted.dir) / repo_config.name
            root.mkdir(parents=True, exist_ok=True)
            key = load_or_create_signing_key(root, repo_config.private_key)
            repo = HostedRepository(repo_config.name, root, key, config.upstream.repo_name)
            repo.prepare()
            repos[repo_config.name] = repo
        return cls(config.hosted, repos)

    def repo(self, name: str) -> HostedRepository:
        found = self.repos.get(name)
        if found is None:
            raise UnknownRepository(f"no hosted repository named {name[:64]!r}")
        return found

    # ----- access -----

    def _settings(self, name: str) -> HostedRepoConfig:
        found = self.config.repo(name)
        if found is None:
            raise UnknownRepository(f"no hosted repository named {name[:64]!r}")
        return found

    def read_protected(self, name: str) -> bool:
        return bool(self._settings(name).read_keys)

    def check_read(self, name: str, key: str | None) -> None:
        """Reads are open unless the repository lists read_keys; write keys read too."""
        settings = self._settings(name)
        if not settings.read_keys:
            return
        if not key or not matches(key, (*settings.read_keys, *settings.write_keys)):
            raise Unauthorized("this repository needs a key (missing or not accepted)")

    def check_write(self, name: str, key: str | None) -> None:
        settings = self._settings(name)
        if not key or not self.known(key):
            raise Unauthorized("invalid API key")
        if not matches(key, settings.write_keys):
            raise Forbidden(f"key not authorized to publish to {name}")

    def known(self, key: str) -> bool:
        digests = [d for r in self.config.repos for d in (*r.read_keys, *r.write_keys)]
        return matches(key, digests)

    # ----- operations -----

    def check_package(
        self, data: bytes, *, name: str | None = None, version: str | None = None
    ) -> UploadedPackage:
        return check_package(
            data,
            max_size=self.config.max_tarball_size,
            max_unpacked_size=self.config.max_unpacked_size,
            expected_name=name,
            expected_version=version,
        )

    def publish(
        self, repo: str, data: bytes, *, replace: bool, name: str | None = None
    ) -> PublishResult:
        """Validate and publish a tarball (blocking: run it in a thread from async code)."""
        target = self.repo(repo)
        upload = self.check_package(data, name=name)
        created = target.publish(upload, data, replace=replace)
        return PublishResult(upload, created)

    def publish_docs(self, repo: str, name: str, version: str, data: bytes) -> None:
        check_docs(data, self.config.max_docs_size, self.config.max_unpacked_size)
        self.repo(repo).put_docs(name, version, data)


def check_docs(data: bytes, max_size: int, max_unpacked: int) -> None:
    """A docs upload is a gzipped tar within the limits (hexpm: 16 MiB / 128 MiB)."""
    if len(data) > max_size:
        raise TooBig("docs tarball is too big", {"tar": "too big"})
    try:
        raw = gzip.GzipFile(fileobj=io.BytesIO(data)).read(max_unpacked + 1)
    except (OSError, EOFError, zlib.error):
        raise ValidationFailed.field("tar", "docs are not a gzipped tar") from None
    if len(raw) > max_unpacked:
        raise TooBig("docs unpack beyond the size limit", {"tar": "too big"})
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar:
                if member.name.startswith("/") or ".." in member.name.split("/"):
                    raise ValidationFailed.field("tar", f"unsafe path {member.name[:80]!r}")
    except tarfile.TarError:
        raise ValidationFailed.field("tar", "docs are not a gzipped tar") from None
