"""One organization seen through one key, in the shape ``warm`` reads repositories in.

``hexproxy warm --org ORG`` fills the cache through the very policy the server
applies, with the key taken from the environment: what it stores has passed the
same checks, and what upstream refuses that key is reported, not stored.
"""

from __future__ import annotations

import asyncio

from ..cachekey import CacheKey
from ..download import Download
from ..entries import Entry, Small, StoredFile
from ..errors import UpstreamUnavailable
from ..storage import FileStorage
from .credentials import Credential
from .policy import OrgRepos


class OrgSource:
    def __init__(self, repos: OrgRepos, credential: Credential) -> None:
        self.repos = repos
        self.credential = credential
        self.storage: FileStorage = repos.storage
        self.offline: bool = repos.offline

    async def get_small(self, key: CacheKey) -> Small:
        served = await self.repos.small(key, self.credential)
        assert isinstance(served.held, Entry)
        return Small(served.held, served.status)

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
