"""Object store on S3 (MinIO, SeaweedFS, AWS) through the minio SDK.

The SDK is synchronous: every call runs in a worker thread (asyncio.to_thread).

Outages: connection errors, timeouts and 5xx answers are retried with exponential backoff
and jitter for `retry_budget_s`; meanwhile health() says degraded with the last error, and
when the budget is spent the call raises StorageUnavailable. The SDK's own retries are off
(our loop owns the timing) and each request gives up after `request_timeout_s` of silence,
so a hung server (SIGSTOPped, blackholed) is noticed instead of waiting the SDK's 5 minutes.

Evidence: a bucket this store creates gets versioning when `versioning` is set, and Object
Lock in governance mode with a default retention of `object_lock_days` when that is set
(which implies versioning): an overwrite or a delete then leaves the earlier version, and
no version can be removed before its retention ends without the bypass-governance right
(which the recorder's access key should not have). Object Lock can only be turned on when
a bucket is created; for a bucket that exists already, a missing setting is logged, not
faked. MinIO, AWS S3 and SeaweedFS (the tests' server) support both.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import io
import logging
import random
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, TypeVar

import urllib3
from minio import Minio
from minio.commonconfig import ENABLED, GOVERNANCE
from minio.error import InvalidResponseError, S3Error, ServerError
from minio.helpers import DictType, check_bucket_name
from minio.objectlockconfig import DAYS, ObjectLockConfig
from minio.versioningconfig import VersioningConfig

from storage.objects import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PutData,
    StorageError,
    StorageUnavailable,
    clip_range,
    validate_key,
    validate_prefix,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

PART_SIZE = 16 << 20  # multipart above this; 3 parts in flight = 48 MiB of RAM at most
SHA_META = "sha256"  # sent as x-amz-meta-sha256
MAX_PRESIGN_S = 7 * 24 * 3600  # the S3 limit for SigV4 presigned URLs
_NOT_FOUND = {"NoSuchKey", "NoSuchObject"}
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}
_NETWORK_ERRORS = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


class _Retryable(Exception):
    """Internal: the wrapped failure may go away if we try again."""


def _classify(exc: BaseException, key: str | None) -> BaseException:
    """Map an SDK/network failure to what callers see; _Retryable means try again."""
    if isinstance(exc, _NETWORK_ERRORS):
        return _Retryable(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, ServerError | InvalidResponseError):
        # A 5xx without an S3 XML body (often a proxy in front of S3) is transient;
        # InvalidResponseError keeps its status in a private field.
        status = exc.status_code if isinstance(exc, ServerError) else getattr(exc, "_code", 0)
        if status >= 500:
            return _Retryable(str(exc))
        return StorageUnavailable(f"S3 gave an unexpected answer: {exc}")
    if isinstance(exc, S3Error):
        if exc.code in _NOT_FOUND:
            return ObjectNotFound(key or "")
        if exc.code in _TRANSIENT_CODES or exc.response.status >= 500:
            return _Retryable(f"{exc.code}: {exc.message}")
        return StorageUnavailable(_s3_error_text(exc))
    return exc


def _s3_error_text(exc: S3Error) -> str:
    hints = {
        "AccessDenied": "check the S3 access key, secret key and their rights on the bucket",
        "InvalidAccessKeyId": "the S3 access key is unknown to the server",
        "SignatureDoesNotMatch": "the S3 secret key is wrong (or the clock is off)",
        "NoSuchBucket": "the bucket was deleted; it is recreated on the next call",
    }
    hint = hints.get(exc.code or "", "see the S3 server's logs")
    return f"S3 refused the request ({exc.code}: {exc.message}); {hint}"


def _parse_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """Accept "host:port" or "http(s)://host:port" (the SDK wants the former)."""
    if "://" not in endpoint:
        return endpoint.rstrip("/"), secure
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.netloc or url.path not in ("", "/"):
        raise ValueError(f"S3 endpoint {endpoint!r} must look like http(s)://host:port")
    return url.netloc, url.scheme == "https"


class _Upload:
    """A put's body, re-readable from the start for each retry, with its size and SHA-256.

    The SHA-256 must be known before the first byte is sent, because S3 takes user metadata
    in the request headers. So bytes are hashed as they are, a file is read once to hash it,
    and an async iterable is spooled (memory up to one part, then a temp file) while hashed.
    """

    def __init__(self, size: int, sha256: str, opener: Callable[[], BinaryIO]) -> None:
        self.size, self.sha256, self._opener = size, sha256, opener
        self._spool: IO[bytes] | None = None

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> _Upload:
        body = bytes(data)
        return cls(len(body), hashlib.sha256(body).hexdigest(), lambda: io.BytesIO(body))

    @classmethod
    def from_file(cls, path: Path) -> _Upload:
        sha, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK_SIZE):
                    sha.update(chunk)
                    size += len(chunk)
        except OSError as exc:  # the caller's file: not an S3 outage
            raise ValueError(f"cannot read {path} to store it: {exc}") from exc
        return cls(size, sha.hexdigest(), lambda: open(path, "rb"))

    @classmethod
    async def from_stream(cls, data: AsyncIterable[bytes], spool_dir: Path | None) -> _Upload:
        spool_path = None if spool_dir is None else str(spool_dir)
        spool = tempfile.SpooledTemporaryFile(max_size=PART_SIZE, dir=spool_path)  # noqa: SIM115
        sha = hashlib.sha256()

        def absorb(chunk: bytes) -> None:  # hashing 1 MiB takes ms: not on the event loop
            spool.write(chunk)
            sha.update(chunk)

        try:
            async for chunk in data:
                await asyncio.to_thread(absorb, chunk)
        except BaseException:
            spool.close()
            raise
        upload = cls(spool.tell(), sha.hexdigest(), lambda: _rewound(spool))
        upload._spool = spool
        return upload

    def open(self) -> BinaryIO:
        return self._opener()

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()


def _rewound(spool: IO[bytes]) -> BinaryIO:
    spool.seek(0)
    return _NoClose(spool)  # type: ignore[return-value]


class _NoClose(io.RawIOBase):
    """Lets each attempt `with`-close its reader while the spool lives on for a retry."""

    def __init__(self, inner: IO[bytes]) -> None:
        self._inner = inner

    def read(self, size: int = -1) -> bytes:
        return self._inner.read(size)

    def readable(self) -> bool:
        return True


class _RangeReader:
    """Reads [pos, end) of one object in chunks (sync; each call in a thread). After a
    network failure it reopens at the byte where it stopped, pinned to the same version
    with If-Match, so a retried stream resumes instead of starting over."""

    def __init__(self, client: Minio, bucket: str, key: str, start: int, end: int | None) -> None:
        self.client, self.bucket, self.key = client, bucket, key
        self.pos, self.end = start, end
        self.etag: str | None = None
        self.resp: urllib3.BaseHTTPResponse | None = None

    def read_chunk(self) -> bytes:
        if self.end is not None and self.pos >= self.end:
            return b""
        try:
            if self.resp is None and not self._open():
                return b""
            assert self.resp is not None
            want = CHUNK_SIZE if self.end is None else min(CHUNK_SIZE, self.end - self.pos)
            chunk = self.resp.read(want)
        except BaseException:
            self.close()
            raise
        self.pos += len(chunk)
        return chunk

    def _open(self) -> bool:
        """Open at self.pos; False if that is at or past the end of the object."""
        length = 0 if self.end is None else self.end - self.pos
        headers: DictType | None = {"If-Match": self.etag} if self.etag else None
        try:
            self.resp = self.client.get_object(
                self.bucket, self.key, offset=self.pos, length=length, request_headers=headers
            )
        except S3Error as exc:
            if exc.code == "InvalidRange":
                return False
            if exc.code == "PreconditionFailed":
                raise StorageError(f"object {self.key!r} was replaced while being read") from exc
            raise
        self.etag = self.resp.headers.get("ETag")
        return True

    def close(self) -> None:
        if self.resp is not None:
            self.resp.close()
            self.resp.release_conn()
            self.resp = None


class S3ObjectStore(ObjectStore):
    backend = "s3"

    def __init__(
        self,
        endpoint: str,
        *,
        access_key: str,
        secret_key: str,
        bucket: str,
        region: str = "us-east-1",
        secure: bool = False,
        retry_budget_s: float = 30.0,
        request_timeout_s: float = 10.0,
        part_size: int = PART_SIZE,
        spool_dir: Path | None = None,
        versioning: bool = False,
        object_lock_days: int | None = None,
    ) -> None:
        check_bucket_name(bucket)  # ValueError now, rather than on the first upload
        self.versioning, self.object_lock_days = versioning, object_lock_days
        host, secure = _parse_endpoint(endpoint, secure)
        self.endpoint, self.bucket = host, bucket
        self._budget_s, self._part_size, self._spool_dir = retry_budget_s, part_size, spool_dir
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=min(5.0, request_timeout_s), read=request_timeout_s),
            retries=False,
            maxsize=16,
        )
        self._client = Minio(
            host, access_key, secret_key, secure=secure, region=region, http_client=self._http
        )
        self._bucket_ready = False
        self._bucket_lock = asyncio.Lock()

    # --- retries and health -------------------------------------------------------------

    async def _retry(self, fn: Callable[..., T], *args: Any, key: str | None = None) -> T:
        deadline = time.monotonic() + self._budget_s
        delay = 0.1
        while True:
            try:
                result = await asyncio.to_thread(fn, *args)
            except (S3Error, ServerError, InvalidResponseError, *_NETWORK_ERRORS) as exc:
                mapped = _classify(exc, key)
                if not isinstance(mapped, _Retryable):
                    self._note(exc, mapped)
                    raise mapped from exc
                self._set_degraded(str(mapped))
                delay = min(delay * 2, 5.0)
                pause = delay * random.uniform(0.5, 1.0)  # jitter: many nodes don't retry in step
                if time.monotonic() + pause > deadline:
                    raise StorageUnavailable(
                        f"S3 at {self.endpoint} unreachable for {self._budget_s:.0f} s "
                        f"(last error: {mapped}); objects are not being stored or read"
                    ) from exc
                await asyncio.sleep(pause)
            else:
                self._set_ok()
                return result

    def _note(self, exc: BaseException, mapped: BaseException) -> None:
        """An answer from S3: not-found means it is up; a refusal (bad keys) is degraded."""
        if isinstance(exc, S3Error) and exc.code == "NoSuchBucket":
            self._bucket_ready = False  # deleted behind our back: recreate on the next call
        if isinstance(mapped, StorageUnavailable):
            self._set_degraded(str(mapped))
        else:
            self._set_ok()

    @property
    def label(self) -> str:
        return f"S3 {self.endpoint}"

    async def health(self, probe: bool = False) -> dict[str, Any]:
        if probe:
            try:
                await asyncio.to_thread(self._client.bucket_exists, self.bucket)
                self._set_ok()
            except (S3Error, ServerError, InvalidResponseError, *_NETWORK_ERRORS) as exc:
                self._set_degraded(str(_classify(exc, None)))
        return {
            "backend": self.backend,
            "endpoint": self.endpoint,
            "bucket": self.bucket,
            "state": "degraded" if self._error else "ok",
            "error": self._error,
            "since": self._since,
        }

    async def _call(self, fn: Callable[..., T], *args: Any, key: str | None = None) -> T:
        await self._ensure_bucket()
        return await self._retry(fn, *args, key=key)

    async def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        async with self._bucket_lock:
            if not self._bucket_ready:
                await self._retry(self._make_bucket_sync)
                self._bucket_ready = True

    def _make_bucket_sync(self) -> None:
        if self._client.bucket_exists(self.bucket):
            self._check_versioning_sync()
            return
        try:
            self._client.make_bucket(self.bucket, object_lock=bool(self.object_lock_days))
        except S3Error as exc:
            if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise  # another node creating it at the same time is fine
            return
        if self.object_lock_days:
            lock = ObjectLockConfig(GOVERNANCE, self.object_lock_days, DAYS)
            self._client.set_object_lock_config(self.bucket, lock)
        elif self.versioning:
            self._client.set_bucket_versioning(self.bucket, VersioningConfig(ENABLED))

    def _check_versioning_sync(self) -> None:
        """An existing bucket: say so when it lacks what the config asks for."""
        if not (self.versioning or self.object_lock_days):
            return
        status = self._client.get_bucket_versioning(self.bucket).status
        if status != ENABLED:
            log.warning(
                "S3 bucket %s has no versioning (%s): enable it (and Object Lock, which only "
                "a new bucket can get); overwritten or deleted evidence is not recoverable",
                self.bucket,
                status,
            )

    async def close(self) -> None:
        self._http.clear()

    # --- writing ------------------------------------------------------------------------

    async def put(
        self, key: str, data: PutData, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        validate_key(key)
        upload = await self._prepare(data)
        try:
            result = await self._call(self._put_sync, key, upload, content_type)
        finally:
            upload.close()
        date = result.http_headers.get("Date") if result.http_headers else None
        modified = parsedate_to_datetime(date) if date else datetime.now(UTC)
        return ObjectInfo(key, upload.size, upload.sha256, modified, content_type)

    async def _prepare(self, data: PutData) -> _Upload:
        if isinstance(data, Path):
            return await asyncio.to_thread(_Upload.from_file, data)
        if isinstance(data, bytes | bytearray | memoryview):
            return await asyncio.to_thread(_Upload.from_bytes, data)
        return await _Upload.from_stream(data, self._spool_dir)

    def _put_sync(self, key: str, upload: _Upload, content_type: str) -> Any:
        with upload.open() as body:
            return self._client.put_object(
                self.bucket,
                key,
                body,
                upload.size,
                content_type=content_type,
                metadata={SHA_META: upload.sha256},
                part_size=self._part_size,
            )

    async def delete(self, key: str) -> None:
        validate_key(key)
        await self._call(self._client.remove_object, self.bucket, key, key=key)

    # --- reading ------------------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo:
        validate_key(key)
        obj = await self._call(self._client.stat_object, self.bucket, key, key=key)
        meta = obj.metadata or {}
        return ObjectInfo(
            key=key,
            size=obj.size or 0,
            sha256=meta.get(f"x-amz-meta-{SHA_META}"),  # case-insensitive header dict
            modified=obj.last_modified or datetime.now(UTC),
            content_type=obj.content_type,
        )

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        return b"".join([chunk async for chunk in self.stream(key, start, end)])

    async def stream(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        validate_key(key)
        lo, _ = clip_range(1 << 62, start, end)  # checks the range; S3 clips to the size
        if end is not None and end <= lo:
            await self.stat(key)  # S3 cannot GET an empty range; still say if it is missing
            return
        reader = _RangeReader(self._client, self.bucket, key, lo, end)
        try:
            while chunk := await self._call(reader.read_chunk, key=key):
                yield chunk
        finally:
            reader.close()  # a quick socket close; must also run when the consumer stops early

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        validate_prefix(prefix)
        objects = await self._call(self._list_sync, prefix)
        return sorted(objects, key=lambda info: info.key)

    def _list_sync(self, prefix: str) -> builtins.list[ObjectInfo]:
        return [
            ObjectInfo(o.object_name, o.size or 0, None, o.last_modified or datetime.now(UTC), None)
            for o in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            if o.object_name and not o.is_dir
        ]

    async def signed_url(self, key: str, expires_s: int = 3600) -> str:
        validate_key(key)
        if not 1 <= expires_s <= MAX_PRESIGN_S:
            raise ValueError(f"expires_s must be 1..{MAX_PRESIGN_S} s on S3 (got {expires_s})")
        # Signing is local (the region is configured), but the SDK may still touch the
        # network for credentials on some setups: keep it off the event loop.
        return await asyncio.to_thread(
            self._client.presigned_get_object,
            self.bucket,
            key,
            expires=timedelta(seconds=expires_s),
        )
