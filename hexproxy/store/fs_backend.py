"""The filesystem backend of the Storage interface: the cache directory, as it always was.

``FileStorage`` stays the synchronous core (the server's local tier, which it
stats and sends with sendfile on the hot path); this adapter runs its calls in
a thread so it can stand wherever a ``Storage`` is expected.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import replace as with_fields

from ..errors import ObjectMissing, StoreUnavailable
from .cachekey import CacheKey
from .locks import held
from .objects import Blob, Listed, Replace
from .storage import FileStorage, Meta


class FsStore:
    def __init__(self, files: FileStorage) -> None:
        self.files = files

    @property
    def location(self) -> str:
        return str(self.files.root)

    async def get(self, key: CacheKey) -> Blob:
        return await asyncio.to_thread(self._get, key)

    def _get(self, key: CacheKey) -> Blob:
        # Body and sidecar are two files: a put landing between the two reads shows
        # as a sidecar that does not describe the body, so read both once more.
        body, digest = b"", ""
        for _ in range(2):
            read = self.files.read(key)
            if read is None:
                raise ObjectMissing(f"{key} is not stored")
            body, digest = read, hashlib.sha256(read).hexdigest()
            meta = self.files.read_meta(key)
            if meta is not None and meta.sha256 == digest:
                return Blob(key, body, with_fields(meta, size=len(body)))
        # No sidecar that fits (a crash between the renames): the body is whole, but
        # when upstream last confirmed it is unknown.
        st = self.files.stat(key)
        stored = st.st_mtime if st is not None else 0.0
        return Blob(key, body, Meta(digest, len(body), stored, 0.0))

    async def head(self, key: CacheKey) -> Meta:
        return await asyncio.to_thread(self._head, key)

    def _head(self, key: CacheKey) -> Meta:
        """The sidecar as recorded (``cache verify`` compares it with the body), if it
        belongs to a body of this size; else what reading the body shows."""
        st = self.files.stat(key)
        if st is None:
            raise ObjectMissing(f"{key} is not stored")
        meta = self.files.read_meta(key)
        if meta is not None and meta.size == st.st_size:
            return meta
        return self._get(key).meta

    async def exists(self, key: CacheKey) -> bool:
        return await asyncio.to_thread(self.files.stat, key) is not None

    async def put(
        self, key: CacheKey, body: bytes, meta: Meta, replace: Replace = Replace.ALWAYS
    ) -> bool:
        return await asyncio.to_thread(self._put, key, body, meta, replace)

    def _put(self, key: CacheKey, body: bytes, meta: Meta, replace: Replace) -> bool:
        try:
            if replace is Replace.ALWAYS:
                self.files.put(key, body, meta)
                return True
            # Check and write under one lock, so two processes cannot both decide to write.
            with held(self.files.lock_path("put_" + key.path.replace("/", "_"))):
                if not self._may_replace(key, meta, replace):
                    return False
                self.files.put(key, body, meta)
                return True
        except OSError as exc:
            raise StoreUnavailable(f"cannot store {key}: {exc.strerror or exc}") from None

    def _may_replace(self, key: CacheKey, meta: Meta, replace: Replace) -> bool:
        try:
            held_meta = self._get(key).meta
        except ObjectMissing:
            return True
        return replace is Replace.IF_NEWER and meta.supersedes(held_meta)

    async def delete(self, key: CacheKey) -> None:
        if not await asyncio.to_thread(self.files.delete, key):
            raise ObjectMissing(f"{key} is not stored")

    async def list(self) -> AsyncIterator[Listed]:
        entries = await asyncio.to_thread(lambda: list(self.files.entries()))
        for key, st, meta in entries:
            yield Listed(key, st.st_size, st.st_mtime, meta)

    async def check(self) -> None:
        if not await asyncio.to_thread(self.files.root.is_dir):
            raise StoreUnavailable(f"no cache directory at {self.files.root}")

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None
