"""The S3 backend of the Storage interface: any S3-compatible object store.

AWS S3, MinIO, Ceph RGW, SeaweedFS, Garage: one object per CacheKey, at
``<prefix><key.path>`` (the cache directory's own layout), with the Meta fields
as user metadata (``x-amz-meta-*``). A PUT is atomic in S3 (an object appears
whole or not at all), so a writer that dies mid-upload leaves nothing behind.

Conditional writes keep ``Replace``'s promises without a lock: ``If-None-Match: *``
for immutable objects, ``If-Match: <etag>`` after reading the stored copy's
metadata for registry files (a 412 means another replica wrote meanwhile: read
again and decide again). A server that ignores those headers narrows this to a
race of milliseconds, which for immutable objects is harmless (both copies are
the same verified bytes).

Credentials come from the AWS chain (environment, shared config and credentials
files, web identity, instance role), never from hexproxy's own configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiobotocore.session
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from ..config import StoreConfig
from ..errors import ObjectMissing, StoreUnavailable
from .cachekey import CacheKey, key_for_path
from .objects import Blob, Listed, Replace
from .storage import Meta

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

# Bodies larger than this are refused: the store is not trusted more than upstream,
# and hexproxy never stores anything larger (max_registry_size's default is 64 MiB).
MAX_OBJECT = 256 * 1024 * 1024
_CONFLICT_RETRIES = 3
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_PRECONDITION_CODES = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (BotoCoreError, OSError, TimeoutError)


class S3Store:
    def __init__(self, config: StoreConfig, max_object: int = MAX_OBJECT) -> None:
        self.bucket = config.bucket
        self.prefix = config.prefix.strip("/") + "/" if config.prefix.strip("/") else ""
        self.config = config
        self.max_object = max_object
        self._client: S3Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self._opening = asyncio.Lock()

    @property
    def location(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"{where} at {self.config.endpoint_url}" if self.config.endpoint_url else where

    async def _s3(self) -> S3Client:
        async with self._opening:
            if self._client is None:
                created: S3Client = await self._stack.enter_async_context(self._create())
                self._client = created
                return created
            return self._client

    def _create(self) -> Any:
        timeout = self.config.timeout
        settings = AioConfig(
            connect_timeout=timeout,
            read_timeout=timeout,
            # No retries: a store that fails is treated as down at once (the proxy falls
            # back to its own disk and upstream, and a circuit breaker spares it a while);
            # a client waiting on a retry would wait for nothing.
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": self.config.addressing_style},
            # Checksums only where S3 requires them: several S3-compatible servers
            # reject the newer default trailers. Bodies are verified by sha256 anyway.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        return aiobotocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.config.endpoint_url or None,
            region_name=self.config.region or None,
            config=settings,
        )

    def _name(self, key: CacheKey) -> str:
        return self.prefix + key.path

    async def get(self, key: CacheKey) -> Blob:
        s3 = await self._s3()
        async with self._errors("get", key):
            response = await s3.get_object(Bucket=self.bucket, Key=self._name(key))
            async with response["Body"] as stream:
                if response["ContentLength"] > self.max_object:
                    raise StoreUnavailable(
                        f"{self.location}: {key} is {response['ContentLength']} bytes, "
                        f"over the {self.max_object}-byte limit"
                    )
                body = await stream.read()
        return Blob(key, body, _meta_for(body, response["Metadata"], response["LastModified"]))

    async def head(self, key: CacheKey) -> Meta:
        head = await self._head(key)
        return _meta_from(head["Metadata"], head["ContentLength"], head["LastModified"])

    async def _head(self, key: CacheKey) -> Any:
        s3 = await self._s3()
        async with self._errors("head", key):
            return await s3.head_object(Bucket=self.bucket, Key=self._name(key))

    async def exists(self, key: CacheKey) -> bool:
        try:
            await self._head(key)
        except ObjectMissing:
            return False
        return True

    async def put(
        self, key: CacheKey, body: bytes, meta: Meta, replace: Replace = Replace.ALWAYS
    ) -> bool:
        if replace is Replace.ALWAYS:
            await self._put(key, body, meta, {})
            return True
        for _ in range(_CONFLICT_RETRIES):
            try:
                held = await self._head(key)
            except ObjectMissing:
                condition = {"IfNoneMatch": "*"}
            else:
                stored = _meta_from(held["Metadata"], held["ContentLength"], held["LastModified"])
                if replace is Replace.IF_ABSENT or not meta.supersedes(stored):
                    return False
                condition = {"IfMatch": held["ETag"]}
            if await self._put(key, body, meta, condition):
                return True
            # Another writer got there between our read and our write: look again.
        return False

    async def _put(self, key: CacheKey, body: bytes, meta: Meta, condition: dict[str, str]) -> bool:
        """One PUT; False when its condition did not hold (412)."""
        s3 = await self._s3()
        try:
            async with self._errors("put", key):
                await s3.put_object(
                    Bucket=self.bucket,
                    Key=self._name(key),
                    Body=body,
                    Metadata=_metadata(meta),
                    ContentType="application/octet-stream",
                    **condition,  # type: ignore[arg-type]
                )
        except _Precondition:
            return False
        return True

    async def delete(self, key: CacheKey) -> None:
        await self._head(key)  # S3 deletes are idempotent; the contract says "missing"
        s3 = await self._s3()
        async with self._errors("delete", key):
            await s3.delete_object(Bucket=self.bucket, Key=self._name(key))

    async def list(self) -> AsyncIterator[Listed]:
        s3 = await self._s3()
        paginator = s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)
        async with self._errors("list", None):
            async for page in pages:
                for item in page.get("Contents", []):
                    key = key_for_path(item["Key"][len(self.prefix) :])
                    if key is not None:
                        yield Listed(key, item["Size"], item["LastModified"].timestamp())

    async def check(self) -> None:
        s3 = await self._s3()
        async with self._errors("check", None):
            await s3.head_bucket(Bucket=self.bucket)

    async def open(self) -> None:
        # Building the client loads botocore's S3 model (a large JSON file): a second or
        # more on a busy machine, which must not fall on the first request or probe.
        await self._s3()

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    @contextlib.asynccontextmanager
    async def _errors(self, op: str, key: CacheKey | None) -> AsyncIterator[None]:
        """Botocore's errors as the interface's two kinds: missing, or unavailable."""
        what = f"{op} {key}" if key is not None else op
        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _MISSING_CODES and key is not None:
                raise ObjectMissing(f"{key} is not in {self.location}") from None
            if code in _PRECONDITION_CODES:
                raise _Precondition(code) from None
            message = error.get("Message") or code
            raise StoreUnavailable(f"{self.location}: {what}: {code} {message}") from None
        except _NETWORK_ERRORS as exc:
            raise StoreUnavailable(
                f"{self.location}: {what}: {exc or type(exc).__name__}"
            ) from None


class _Precondition(Exception):
    """A conditional write lost (412): someone else wrote first."""


def _metadata(meta: Meta) -> dict[str, str]:
    values = {
        "sha256": meta.sha256,
        "stored-at": repr(meta.stored_at),
        "validated-at": repr(meta.validated_at),
        "upstream-etag": meta.upstream_etag or "",
        "upstream-last-modified": meta.upstream_last_modified or "",
    }
    # Header values must be printable ASCII; a validator that is not is dropped (the
    # object is then revalidated without it, which is always safe).
    return {k: v for k, v in values.items() if v and v.isascii() and v.isprintable()}


def _meta_from(values: dict[str, str], size: int, modified: Any) -> Meta:
    """Meta from user metadata; written by something else, it says only what S3 knows."""
    try:
        return Meta(
            sha256=values["sha256"],
            size=size,
            stored_at=float(values["stored-at"]),
            validated_at=float(values["validated-at"]),
            upstream_etag=values.get("upstream-etag") or None,
            upstream_last_modified=values.get("upstream-last-modified") or None,
        )
    except (KeyError, ValueError):
        return Meta("", size, modified.timestamp(), 0.0)


def _meta_for(body: bytes, values: dict[str, str], modified: Any) -> Meta:
    """The body's Meta, trusting the recorded validators only if they describe this body."""
    meta = _meta_from(values, len(body), modified)
    digest = hashlib.sha256(body).hexdigest()
    if meta.sha256 != digest:
        return Meta(digest, len(body), modified.timestamp(), 0.0)
    return meta
