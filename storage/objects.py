"""Objects: one interface, two backends (a local directory, or S3 through the minio SDK).

Recordings, manifests, clips and snapshots are objects addressed by a key such as
`recordings/{recording_id}/seg-42.m4s`. Callers use `ObjectStore` only; which backend is
behind it is configuration (`open_object_store`).

Contract shared by every backend:

- Keys are `/`-separated relative paths: no leading `/`, no empty part, no `.` or `..`
  part, and no part starting with `.` (reserved for the disk backend's temp files and
  sidecars), no backslash or NUL. A bad key raises `ValueError` saying what is wrong.
- Byte ranges are Python-slice style: `start` inclusive, `end` exclusive, both counted
  from the start of the object (`get(k, 0, 10)` is the first 10 bytes). `None` means "from
  the start" / "to the end". A range reaching past the end is clipped, like a slice.
  HTTP's inclusive `bytes=a-b` is `start=a, end=b + 1`.
- Every object's SHA-256 (hex) is computed while it is written and kept as metadata;
  `stat()` returns it. `list()` is a cheap listing (key, size, modified): its `sha256` and
  `content_type` are None, because S3 listings carry no user metadata.
- `delete()` of a missing key is not an error (S3 semantics; retention can re-run).
- A missing object raises `ObjectNotFound`; a backend that stays unreachable past its
  retry budget raises `StorageUnavailable` and reports `{"state": "degraded"}` in
  `health()` meanwhile. Nothing else about outages leaks out (no urllib3 errors).
"""

from __future__ import annotations

import abc
import builtins
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PutData = bytes | bytearray | memoryview | Path | AsyncIterable[bytes]

DEFAULT_CONTENT_TYPE = "application/octet-stream"
CHUNK_SIZE = 1 << 20  # 1 MiB: large enough for throughput, small enough to stay lean


class StorageError(Exception):
    """Base of every object-store error."""


class ObjectNotFound(StorageError, KeyError):
    """The key names no object."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"no object with key {self.key!r}"


class StorageUnavailable(StorageError):
    """The backend could not be reached (or refused us) within the retry budget."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    sha256: str | None  # hex; None in list() results or for objects written by other tools
    modified: datetime  # timezone-aware, UTC
    content_type: str | None


def validate_key(key: str) -> str:
    """Return `key` if it is a safe object key, else raise ValueError saying why."""
    if not isinstance(key, str) or not key:
        raise ValueError("object key must be a non-empty string")
    if "\x00" in key or "\\" in key:
        raise ValueError(f"object key {key!r} must not contain NUL or backslash")
    if key.startswith("/"):
        raise ValueError(f"object key {key!r} must be relative (no leading '/')")
    for part in key.split("/"):
        if part == "":
            raise ValueError(f"object key {key!r} has an empty part ('//' or trailing '/')")
        if part in (".", ".."):
            raise ValueError(f"object key {key!r} must not contain '.' or '..' parts")
        if part.startswith("."):
            raise ValueError(f"object key {key!r}: parts starting with '.' are reserved ({part!r})")
    return key


def validate_prefix(prefix: str) -> str:
    """A list prefix is a key's beginning: '' or ends anywhere, but never escapes the root."""
    if prefix == "":
        return prefix
    # A trailing '/' is fine in a prefix ("recordings/abc/"); validate what precedes it.
    validate_key(prefix.rstrip("/") or "x")
    return prefix


def clip_range(size: int, start: int | None, end: int | None) -> tuple[int, int]:
    """Slice-style [start, end) clipped to an object of `size` bytes."""
    lo = 0 if start is None else start
    if lo < 0 or (end is not None and end < 0):
        raise ValueError(f"byte range [{start}, {end}) must not be negative")
    if end is not None and end < lo:
        raise ValueError(f"byte range [{start}, {end}) ends before it starts")
    hi = size if end is None else min(end, size)
    return min(lo, size), max(min(lo, size), hi)


class ObjectStore(abc.ABC):
    """Async object storage. Blocking I/O never runs on the event loop."""

    backend: str
    _error: str | None = None  # what the last failed operation saw; None while healthy
    _since: float | None = None  # when the store became degraded

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """Where the objects are, for logs (never with credentials)."""

    def _set_degraded(self, error: str) -> None:
        if self._error is None:
            log.warning("object store %s degraded: %s", self.label, error)
            self._since = time.time()
        self._error = error

    def _set_ok(self) -> None:
        if self._error is not None:
            log.info("object store %s recovered", self.label)
        self._error, self._since = None, None

    @abc.abstractmethod
    async def put(
        self, key: str, data: PutData, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        """Store `data` under `key` (replacing any object there), streaming it."""

    @abc.abstractmethod
    async def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The bytes [start, end) of the object (whole object by default)."""

    @abc.abstractmethod
    def stream(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        """The bytes [start, end) in chunks of at most CHUNK_SIZE, for big objects.

        ObjectNotFound is raised on the first iteration, not on the call.
        """

    @abc.abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size, SHA-256, modification time and content type of the object."""

    @abc.abstractmethod
    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Remove the object; a missing key is fine."""

    @abc.abstractmethod
    async def signed_url(self, key: str, expires_s: int = 3600) -> str:
        """A URL that lets anyone holding it GET the object until it expires."""

    @abc.abstractmethod
    async def health(self, probe: bool = False) -> dict[str, Any]:
        """{"state": "ok"|"degraded", "error": str|None, ...}.

        Without `probe` it reports what the last operations saw (cheap, no I/O);
        with `probe` it checks the backend once, without retrying.
        """

    async def close(self) -> None:  # noqa: B027 (most stores hold nothing to release)
        """Release connections and threads."""


def open_object_store(
    backend: str,
    *,
    root: Path | None = None,
    endpoint: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    bucket: str = "courtcast",
    region: str = "us-east-1",
    secure: bool = False,
    signing_secret: bytes | None = None,
    public_base_url: str = "",
    retry_budget_s: float = 30.0,
    request_timeout_s: float = 10.0,
    versioning: bool = False,
    object_lock_days: int | None = None,
) -> ObjectStore:
    """Build the configured store.

    - "disk": objects under `root` (e.g. `<data dir>/objects`); `signing_secret` (at least
      16 bytes) signs URLs that `public_base_url` + `/objects/...` serves
      (see storage.objects_http).
    - "s3": `endpoint` ("host:port" or "http(s)://host:port"), keys, `bucket` (created if
      missing; with `versioning`, and Object Lock in governance mode for
      `object_lock_days` when set), `region`, `secure` (TLS). Unreachable S3 is retried
      with backoff for `retry_budget_s`; each request gives up after `request_timeout_s` of silence.
    """
    if backend == "disk":
        from storage.objects_disk import DiskObjectStore

        if root is None or signing_secret is None:
            raise ValueError("disk object store needs `root` and `signing_secret`")
        return DiskObjectStore(root, signing_secret=signing_secret, public_base_url=public_base_url)
    if backend == "s3":
        from storage.objects_s3 import S3ObjectStore

        if not endpoint or not access_key or not secret_key:
            raise ValueError("s3 object store needs `endpoint`, `access_key` and `secret_key`")
        return S3ObjectStore(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            bucket=bucket,
            region=region,
            secure=secure,
            retry_budget_s=retry_budget_s,
            request_timeout_s=request_timeout_s,
            versioning=versioning,
            object_lock_days=object_lock_days,
        )
    raise ValueError(f"unknown object store backend {backend!r}; use 'disk' or 's3'")
