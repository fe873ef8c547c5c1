"""One organization seen through one key, in the shape ``warm`` reads repositories in.

``hexproxy warm --org ORG`` fills the cache through the very policy the server
applies, with the key taken from the environment: what it stores has passed the
same checks, and what upstream refuses that key is reported, not stored.
"""

from __future__ import annotations

import asyncio

from ..cache.entries import Answer, Entry, StoredFile
from ..errors import UpstreamUnavailable
from ..registry import Package
from ..store.cachekey import CacheKey, package_key
from ..store.storage import FileStorage
from ..upstream.download import Download
from .credentials import Credential
from .policy import OrgRepos


class OrgSource:
    def __init__(self, repos: OrgRepos, org: str, credential: Credential) -> None:
        self.repos = repos
        self.org = org
        self.credential = credential
        self.storage: FileStorage = repos.storage
        self.offline: bool = repos.offline

    async def get_package(self, name: str) -> Answer[Package]:
        served = await self.repos.small(package_key(name, self.org), self.credential)
        entry = served.held
        assert isinstance(entry, Entry) and isinstance(entry.decoded, Package)
        return Answer(Entry(entry.key, entry.body, entry.meta, entry.decoded), served.status)

    async def load_stored_file(self, key: CacheKey) -> StoredFile | None:
        return await self.repos.stored_file(key)

    async def fetch_file(self, key: CacheKey) -> StoredFile:
        held = (await self.repos.file(key, self.credential)).held
        if isinstance(held, StoredFile):
            return held
        assert isinstance(held, Download) and held.task is not None
        await asyncio.shield(held.task)
        if held.error is not None:
            raise held.error
        stored = await self.repos.stored_file(key)
        if stored is None:
            raise UpstreamUnavailable(f"{key} was fetched but could not be stored")
        return stored

    def forget(self, key: CacheKey) -> None:
        self.repos.forget(key)
