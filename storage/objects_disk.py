"""Object store on a local directory: the single-node default, under the data dir.

Layout: the object `recordings/r1/seg-1.m4s` is the file `<root>/recordings/r1/seg-1.m4s`;
its metadata (sha256, content type) is the file's extended attribute `user.courtcast.meta`
(JSON). On a file system without user xattrs, and for objects stored before they were
used, it is the sidecar `<root>/recordings/r1/.seg-1.m4s.meta`. Names starting with "."
are never object keys (objects.validate_key), so temp files and sidecars cannot collide
with objects and are skipped by list().

Crash safety, in write order: data goes to a temp file `.<name>.tmp-XXXX` in the same
directory, its metadata is set on it, the file is fsynced (data and xattr: one fsync), renamed
over `<name>` (atomic: readers see the old object or the new one), and the directory is
fsynced (the rename is durable when put() returns: a closed segment is durable at once,
DESIGN.md). Two fsyncs per object; the sidecar way took three and four file operations
more (bench/RESULTS.md, issue 19). A crash before the rename leaves only a temp file:
invisible, swept by remove_leftovers(). The metadata records the data file's inode, size
and mtime, so stat() notices data changed without it (a sidecar left from an older
version, a file written by hand), recomputes the SHA-256 and stores it again.

All file I/O runs in worker threads (asyncio.to_thread): the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import builtins
import errno
import hashlib
import hmac
import json
import logging
import mimetypes
import os
import shutil
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

from storage.objects import (
    CHUNK_SIZE,
    DEFAULT_CONTENT_TYPE,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    PutData,
    StorageUnavailable,
    clip_range,
    validate_key,
    validate_prefix,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

TEMP_MARK = ".tmp-"
MIN_SECRET_BYTES = 16
_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


META_XATTR = "user.courtcast.meta"
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}  # the file system has none


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.meta")


def _set_meta_xattr(fd: int, meta: dict[str, Any]) -> bool:
    """Set the metadata on the open file; False if the file system takes no user xattrs."""
    try:
        os.setxattr(fd, META_XATTR, json.dumps(meta).encode())
    except OSError as exc:
        if exc.errno in _NO_XATTR:
            return False
        raise
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _identity(st: os.stat_result) -> dict[str, int]:
    """What ties a sidecar to one version of a data file."""
    return {"ino": st.st_ino, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class _TempFile:
    """A temp file beside `final`; commit() makes it `final` atomically (sync; run in a thread)."""

    def __init__(self, final: Path) -> None:
        self.final = final
        self.sha = hashlib.sha256()
        self.size = 0
        fd, name = self._create(final)
        self.tmp = Path(name)
        self.file: IO[bytes] = os.fdopen(fd, "wb")

    @staticmethod
    def _create(final: Path) -> tuple[int, str]:
        # A concurrent delete may remove the (empty) parent between mkdir and mkstemp: retry once.
        for attempt in range(2):
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                return tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}{TEMP_MARK}")
            except (FileExistsError, NotADirectoryError) as exc:
                raise ValueError(
                    f"cannot store an object under {final.parent.name!r}: on disk it is "
                    "already an object (e.g. 'a/b' when 'a' exists)"
                ) from exc
            except FileNotFoundError:
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        self.file.write(chunk)
        self.sha.update(chunk)
        self.size += len(chunk)

    def copy_from(self, source: Path) -> None:
        try:
            src = open(source, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:  # the caller's file, not our store: not an outage
            raise ValueError(f"cannot read {source} to store it: {exc}") from exc
        with src:
            while chunk := src.read(CHUNK_SIZE):
                self.write(chunk)

    def commit(self, content_type: str | None = None) -> tuple[os.stat_result, dict[str, Any]]:
        """Make the file `final`, durable; with content_type, its metadata goes with it
        (xattr, or a sidecar where the file system has none). Returns its stat and
        metadata ({} without content_type)."""
        self.file.flush()
        fd = self.file.fileno()
        st = os.fstat(fd)
        meta: dict[str, Any] = {}
        sidecar = False
        if content_type is not None:
            meta = {"sha256": self.sha.hexdigest(), "content_type": content_type, **_identity(st)}
            sidecar = not _set_meta_xattr(fd, meta)
        os.fsync(fd)
        self.file.close()
        if self.final.is_dir():
            raise ValueError(
                f"cannot store an object at {self.final.name!r}: on disk it is already a "
                "prefix of other objects (e.g. 'a' when 'a/b' exists)"
            )
        os.replace(self.tmp, self.final)
        if sidecar:  # (a sidecar of an older version beside an xattr is ignored: _read_meta)
            _write_atomic(_sidecar(self.final), json.dumps(meta).encode())
        if content_type is not None:
            _fsync_dir(self.final.parent)  # the rename(s) durable
        return st, meta

    def abort(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _write_atomic(path: Path, payload: bytes) -> None:
    tmp = _TempFile(path)
    try:
        tmp.write(payload)
        tmp.commit()
    except BaseException:
        tmp.abort()
        raise


def _put_whole(
    path: Path, data: Path | bytes | bytearray | memoryview, content_type: str
) -> tuple[os.stat_result, dict[str, Any]]:
    tmp = _TempFile(path)
    try:
        if isinstance(data, Path):
            tmp.copy_from(data)
        else:
            tmp.write(data)
        return tmp.commit(content_type)
    except BaseException:
        tmp.abort()
        raise


class DiskObjectStore(ObjectStore):
    backend = "disk"

    def __init__(self, root: Path, *, signing_secret: bytes, public_base_url: str = "") -> None:
        if len(signing_secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"signing_secret must be at least {MIN_SECRET_BYTES} random bytes "
                f"(got {len(signing_secret)}); signed URLs would be guessable"
            )
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._secret = signing_secret
        self.public_base_url = public_base_url.rstrip("/")

    # --- paths and health -------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    async def _io(self, fn: Callable[..., T], *args: Any, key: str | None = None) -> T:
        """Run blocking file I/O in a thread. With `key` (reads), a missing file is
        ObjectNotFound. A failing disk (full, read-only, gone) is an outage:
        StorageUnavailable, and health() says degraded until an operation succeeds."""
        try:
            result = await asyncio.to_thread(fn, *args)
        except OSError as exc:
            if key is not None and isinstance(exc, _MISSING):
                raise ObjectNotFound(key) from exc
            self._set_degraded(f"{type(exc).__name__}: {exc}")
            raise StorageUnavailable(f"object store at {self.root} failed: {exc}") from exc
        self._set_ok()
        return result

    @property
    def label(self) -> str:
        return str(self.root)

    async def health(self, probe: bool = False) -> dict[str, Any]:
        free: int | None = None
        if probe:
            try:
                free = await asyncio.to_thread(self._probe_sync)
                self._set_ok()
            except OSError as exc:
                self._set_degraded(f"cannot write to {self.root}: {exc}")
        return {
            "backend": self.backend,
            "root": str(self.root),
            "state": "degraded" if self._error else "ok",
            "error": self._error,
            "since": self._since,
            "free_bytes": free,
        }

    def _probe_sync(self) -> int:
        """Write (atomically, so fsync included) a tiny file; return the free space."""
        _write_atomic(self.root / ".probe", b"ok")
        return shutil.disk_usage(self.root).free

    # --- writing ----------------------------------------------------------------------

    async def put(
        self, key: str, data: PutData, content_type: str = DEFAULT_CONTENT_TYPE
    ) -> ObjectInfo:
        path = self._path(key)
        if isinstance(data, Path | bytes | bytearray | memoryview):
            # the whole put in one worker-thread call: each call waits its turn in the
            # default pool, which all the node's recordings share (durability latency)
            st, meta = await self._io(_put_whole, path, data, content_type)
            return self._info(key, st, meta)
        tmp = await self._io(_TempFile, path)
        try:
            await self._write_stream(tmp, data)
            st, meta = await self._io(tmp.commit, content_type)
        except BaseException:
            # Also on cancellation: a plain unlink, quick enough to do inline.
            tmp.abort()
            raise
        return self._info(key, st, meta)

    async def _write_stream(self, tmp: _TempFile, data: AsyncIterable[bytes]) -> None:
        async for chunk in data:
            if chunk:
                await self._io(tmp.write, chunk)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._io(self._delete_sync, path)

    def _delete_sync(self, path: Path) -> None:
        if path.is_dir():
            return  # a prefix, not an object: nothing to delete
        path.unlink(missing_ok=True)
        _sidecar(path).unlink(missing_ok=True)
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, directory: Path) -> None:
        while directory != self.root and directory.is_relative_to(self.root):
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or already gone): stop climbing
            directory = directory.parent

    async def remove_leftovers(self, older_than_s: float = 3600.0) -> int:
        """Delete temp files of writes that never finished (crashes); returns how many."""
        return await self._io(self._remove_leftovers_sync, time.time() - older_than_s)

    def _remove_leftovers_sync(self, cutoff: float) -> int:
        removed = 0
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath, name)
                if name.startswith(".") and TEMP_MARK in name and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # --- reading ----------------------------------------------------------------------

    async def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        st, meta = await self._io(self._stat_sync, path, key=key)
        return self._info(key, st, meta)

    def _stat_sync(self, path: Path) -> tuple[os.stat_result, dict[str, Any]]:
        st = path.stat()
        if not path.is_file():
            raise FileNotFoundError(2, "not an object", str(path))
        meta = self._read_meta(path)
        if meta is None or {k: meta.get(k) for k in ("ino", "size", "mtime_ns")} != _identity(st):
            meta = self._rebuild_meta(path, meta)
            st = path.stat()
        return st, meta

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any] | None:
        """The xattr, else the sidecar (no xattrs here, or an object from before them)."""
        try:
            raw = os.getxattr(path, META_XATTR)
        except OSError as exc:
            if exc.errno not in (errno.ENODATA, *_NO_XATTR):
                raise
            try:
                raw = _sidecar(path).read_bytes()
            except FileNotFoundError:
                return None
        try:
            meta = json.loads(raw)
        except ValueError:
            return None
        return meta if isinstance(meta, dict) else None

    def _rebuild_meta(self, path: Path, stale: dict[str, Any] | None) -> dict[str, Any]:
        """Data without matching metadata (module docstring): hash it again."""
        log.info("object %s has no matching metadata; recomputing its SHA-256", path)
        sha = hashlib.sha256()
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            while chunk := f.read(CHUNK_SIZE):
                sha.update(chunk)
            guessed = mimetypes.guess_type(path.name)[0] or DEFAULT_CONTENT_TYPE
            meta = {"sha256": sha.hexdigest(), "content_type": guessed, **_identity(st)}
            if _set_meta_xattr(f.fileno(), meta):
                os.fsync(f.fileno())
                _sidecar(path).unlink(missing_ok=True)
                return meta
        _write_atomic(_sidecar(path), json.dumps(meta).encode())
        _fsync_dir(path.parent)
        return meta

    def _info(self, key: str, st: os.stat_result, meta: dict[str, Any]) -> ObjectInfo:
        return ObjectInfo(
            key=key,
            size=st.st_size,
            sha256=meta.get("sha256"),
            modified=datetime.fromtimestamp(st.st_mtime, UTC),
            content_type=meta.get("content_type"),
        )

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        path = self._path(key)
        return await self._io(self._read_sync, path, start, end, key=key)

    @staticmethod
    def _read_sync(path: Path, start: int | None, end: int | None) -> bytes:
        with open(path, "rb") as f:
            lo, hi = clip_range(os.fstat(f.fileno()).st_size, start, end)
            f.seek(lo)
            return f.read(hi - lo)

    async def stream(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        f, lo, hi = await self._io(self._open_range, path, start, end, key=key)
        try:
            while lo < hi:
                chunk = await self._io(f.read, min(CHUNK_SIZE, hi - lo))
                if not chunk:
                    return  # truncated under us: an atomic writer never does that
                lo += len(chunk)
                yield chunk
        finally:
            f.close()

    @staticmethod
    def _open_range(path: Path, start: int | None, end: int | None) -> tuple[IO[bytes], int, int]:
        f = open(path, "rb")  # noqa: SIM115 - closed by stream()
        try:
            lo, hi = clip_range(os.fstat(f.fileno()).st_size, start, end)
            f.seek(lo)
        except BaseException:
            f.close()
            raise
        return f, lo, hi

    async def list(self, prefix: str = "") -> builtins.list[ObjectInfo]:
        validate_prefix(prefix)
        return await self._io(self._list_sync, prefix)

    def _list_sync(self, prefix: str) -> builtins.list[ObjectInfo]:
        # Walk only the deepest directory the prefix names, not the whole store.
        base = self.root / prefix.rpartition("/")[0]
        found: builtins.list[ObjectInfo] = []
        for dirpath, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if name.startswith(".") or not key.startswith(prefix):
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue  # deleted while we walked
                modified = datetime.fromtimestamp(st.st_mtime, UTC)
                found.append(ObjectInfo(key, st.st_size, None, modified, None))
        return sorted(found, key=lambda info: info.key)

    # --- signed URLs --------------------------------------------------------------------

    def _signature(self, key: str, expires: int) -> str:
        message = f"{expires}\n{key}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    async def signed_url(self, key: str, expires_s: int = 3600) -> str:
        validate_key(key)
        if expires_s < 1:
            raise ValueError(f"expires_s must be at least 1 second (got {expires_s})")
        expires = int(time.time()) + expires_s
        query = urllib.parse.urlencode(
            {"expires": expires, "signature": self._signature(key, expires)}
        )
        return f"{self.public_base_url}/objects/{urllib.parse.quote(key)}?{query}"

    def signature_problem(
        self, key: str, expires: int | None, signature: str | None, now: float | None = None
    ) -> str | None:
        """Why a signed link must be refused, in words for its holder; None if it is good."""
        if expires is None or not signature:
            return "this link is not signed: it needs 'expires' and 'signature' parameters"
        expected = self._signature(key, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return "this link's signature does not match: it was altered or is for another object"
        if expires < (time.time() if now is None else now):
            when = datetime.fromtimestamp(expires, UTC).isoformat(timespec="seconds")
            return f"this link expired at {when}; ask for a new one"
        return None

    def verify_signature(self, key: str, expires: int, signature: str) -> bool:
        return self.signature_problem(key, expires, signature) is None
