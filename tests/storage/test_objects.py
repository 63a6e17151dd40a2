"""The object store contract, run against both backends: a directory, and S3 on a real
SeaweedFS (tests/fixtures/s3.py). Signed URLs are fetched over real HTTP; crashes are real
SIGKILLs of a writer process; the S3 outage is a real SIGSTOP of the server."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from storage.objects import (
    CHUNK_SIZE,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
    open_object_store,
)
from storage.objects_disk import DiskObjectStore
from storage.objects_http import make_objects_router
from tests.fixtures.s3 import S3Server, free_ports

MiB = 1 << 20
BAD_KEYS = ["", "/abs/key", "a//b", "a/../b", "..", "a/./b", "a/", ".hidden", "a\\b", "a\x00b"]


def _fresh_bucket() -> str:
    return f"test-{uuid.uuid4().hex[:20]}"


@pytest.fixture(params=["disk", "s3"])
def store_config(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """Keyword arguments for open_object_store (JSON-able, for a writer subprocess too)."""
    if request.param == "disk":
        port = free_ports(1)[0]
        return {
            "backend": "disk",
            "root": str(tmp_path / "objects"),
            "signing_secret": secrets.token_hex(32),
            "public_base_url": f"http://127.0.0.1:{port}",
        }
    server: S3Server = request.getfixturevalue("s3_server")
    return {
        "backend": "s3",
        "endpoint": server.endpoint,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "bucket": _fresh_bucket(),
        "retry_budget_s": 5.0,
        "request_timeout_s": 5.0,
    }


def _open(config: dict[str, Any]) -> ObjectStore:
    kwargs = dict(config)
    if "root" in kwargs:
        kwargs["root"] = Path(kwargs["root"])
    if "signing_secret" in kwargs:
        kwargs["signing_secret"] = bytes.fromhex(kwargs["signing_secret"])
    return open_object_store(kwargs.pop("backend"), **kwargs)


@pytest.fixture
async def store(store_config: dict[str, Any]) -> AsyncIterator[ObjectStore]:
    s = _open(store_config)
    yield s
    await s.close()


async def _chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@contextlib.asynccontextmanager
async def serving(store: ObjectStore) -> AsyncIterator[None]:
    """For the disk backend, serve its signed URLs on the port of its public_base_url."""
    if not isinstance(store, DiskObjectStore):
        yield  # S3 serves its own presigned URLs
        return
    app = FastAPI()
    app.include_router(make_objects_router(store))
    port = urllib.parse.urlsplit(store.public_base_url).port
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn failed to start"
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def _tamper_signature(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    name = next(k for k, _ in query if k.lower() in ("signature", "x-amz-signature"))
    value = dict(query)[name]
    flipped = value[:-1] + ("0" if value[-1] != "0" else "1")
    query = [(k, flipped if k == name else v) for k, v in query]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


# --- the contract, on both backends --------------------------------------------------------


async def test_put_get_stat_list_delete(store: ObjectStore) -> None:
    info = await store.put("recordings/r1/init.mp4", b"init", content_type="video/mp4")
    await store.put("recordings/r1/seg-2.m4s", b"segment two")
    await store.put("recordings/r10/seg-1.m4s", b"other recording")
    await store.put("events/e1/clip.mp4", b"clip")

    assert info.size == 4 and info.content_type == "video/mp4"
    assert await store.get("recordings/r1/seg-2.m4s") == b"segment two"
    stat = await store.stat("recordings/r1/init.mp4")
    assert (stat.key, stat.size, stat.content_type) == ("recordings/r1/init.mp4", 4, "video/mp4")
    assert stat.modified.tzinfo is not None

    listed = await store.list("recordings/r1/")
    assert [i.key for i in listed] == ["recordings/r1/init.mp4", "recordings/r1/seg-2.m4s"]
    assert [i.size for i in listed] == [4, 11]
    assert [i.key for i in await store.list("recordings/r1")] == [
        "recordings/r1/init.mp4",
        "recordings/r1/seg-2.m4s",
        "recordings/r10/seg-1.m4s",
    ]
    assert len(await store.list()) == 4

    await store.put("recordings/r1/seg-2.m4s", b"replaced")  # overwrite
    assert await store.get("recordings/r1/seg-2.m4s") == b"replaced"

    await store.delete("recordings/r1/init.mp4")
    await store.delete("recordings/r1/init.mp4")  # again: not an error
    with pytest.raises(ObjectNotFound):
        await store.get("recordings/r1/init.mp4")
    assert [i.key for i in await store.list("recordings/r1/")] == ["recordings/r1/seg-2.m4s"]
    assert (await store.health())["state"] == "ok"
    assert (await store.health(probe=True))["state"] == "ok"


async def test_sha256_is_kept_for_every_kind_of_source(store: ObjectStore, tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    expected = hashlib.sha256(payload).hexdigest()

    for key, data in [("b/bytes", payload), ("b/path", source), ("b/iter", _chunks(payload))]:
        put = await store.put(key, data)
        stat = await store.stat(key)
        assert put.sha256 == stat.sha256 == expected, key
        assert stat.size == len(payload)
    assert (await store.stat("b/bytes")).content_type == "application/octet-stream"

    empty = await store.put("b/empty", b"")
    assert empty.sha256 == hashlib.sha256(b"").hexdigest()
    assert await store.get("b/empty") == b""


async def test_large_object_is_streamed_in_and_out(
    store: ObjectStore, store_config: dict[str, Any], request: pytest.FixtureRequest
) -> None:
    size, sha = 50 * MiB, hashlib.sha256()
    block = os.urandom(MiB)

    async def source() -> AsyncIterator[bytes]:
        for i in range(size // MiB):
            chunk = i.to_bytes(8, "big") + block[8:]
            sha.update(chunk)
            yield chunk

    lag = await _max_loop_lag(store.put("big/object.bin", source()))
    assert lag < 0.5, f"the event loop stalled {lag:.2f} s during a put"
    assert (await store.stat("big/object.bin")).sha256 == sha.hexdigest()

    if store_config["backend"] == "s3":  # 50 MiB in 16 MiB parts: a 4-part multipart upload
        server: S3Server = request.getfixturevalue("s3_server")
        etag = server.client().stat_object(store_config["bucket"], "big/object.bin").etag
        assert etag.endswith("-4"), etag

    back, chunks = hashlib.sha256(), 0
    async for chunk in store.stream("big/object.bin"):
        assert 0 < len(chunk) <= CHUNK_SIZE
        back.update(chunk)
        chunks += 1
    assert back.hexdigest() == sha.hexdigest() and chunks >= 50

    tail = await store.get("big/object.bin", size - 100)
    assert tail == block[-100:]
    assert await store.get("big/object.bin", 30 * MiB, 30 * MiB + 8) == (30).to_bytes(8, "big")


async def _max_loop_lag(work: Any) -> float:
    """Run `work` while measuring the longest time the event loop could not run a ticker."""
    worst, running = 0.0, True

    async def ticker() -> None:
        nonlocal worst
        while running:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            worst = max(worst, time.monotonic() - before - 0.01)

    tick = asyncio.create_task(ticker())
    try:
        await work
    finally:
        running = False
        await tick
    return worst


async def test_range_reads(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    size = len(data)
    await store.put("r/data", data)

    assert await store.get("r/data", 0, 10) == data[:10]  # first bytes
    assert await store.get("r/data", 5000, 5100) == data[5000:5100]  # middle
    assert await store.get("r/data", size - 10) == data[-10:]  # last bytes
    assert await store.get("r/data", None, 3) == data[:3]
    assert await store.get("r/data", size - 5, size + 100) == data[-5:]  # clipped like a slice
    assert await store.get("r/data", size + 10) == b""
    assert await store.get("r/data", 7, 7) == b""
    assert b"".join([c async for c in store.stream("r/data", 100, 9000)]) == data[100:9000]

    for bad in [(-1, 5), (10, 5), (0, -1)]:
        with pytest.raises(ValueError):
            await store.get("r/data", *bad)


async def test_missing_key(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match="nope/missing"):
        await store.get("nope/missing")
    with pytest.raises(ObjectNotFound):
        await store.get("nope/missing", 0, 0)
    with pytest.raises(ObjectNotFound):
        await store.stat("nope/missing")
    with pytest.raises(ObjectNotFound):
        async for _ in store.stream("nope/missing"):
            pass
    await store.delete("nope/missing")
    assert await store.list("nope/") == []


async def test_bad_keys_are_rejected(store: ObjectStore) -> None:
    for key in BAD_KEYS:
        with pytest.raises(ValueError, match="key"):
            await store.put(key, b"x")
        for op in (store.get, store.stat, store.delete, store.signed_url):
            with pytest.raises(ValueError, match="key"):
                await op(key)
    with pytest.raises(ValueError):
        await store.list("../")
    assert await store.list() == []


async def test_signed_url_over_http(store: ObjectStore) -> None:
    data = os.urandom(5000)
    await store.put("recordings/r1/seg-1.m4s", data, content_type="video/iso.segment")
    await store.put("recordings/r1/seg-2.m4s", b"another")
    short_lived = await store.signed_url("recordings/r1/seg-1.m4s", expires_s=1)
    issued = time.monotonic()
    url = await store.signed_url("recordings/r1/seg-1.m4s", expires_s=600)

    async with serving(store), httpx.AsyncClient(timeout=10) as http:
        whole = await http.get(url)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-type"].startswith("video/iso.segment")

        part = await http.get(url, headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == data[10:20]
        assert part.headers["content-range"] == "bytes 10-19/5000"

        assert (await http.get(_tamper_signature(url))).status_code == 403
        other_key = url.replace("seg-1.m4s", "seg-2.m4s")
        assert (await http.get(other_key)).status_code == 403

        await asyncio.sleep(max(0.0, issued + 2.2 - time.monotonic()))
        assert (await http.get(short_lived)).status_code == 403


# --- crashes: a writer killed mid-object leaves no half object -----------------------------

WRITER = """
import asyncio, json, sys
from pathlib import Path
from storage.objects import open_object_store

config = json.loads(sys.argv[1])
backend = config.pop("backend")
if "root" in config:
    config["root"] = Path(config["root"])
if "signing_secret" in config:
    config["signing_secret"] = bytes.fromhex(config["signing_secret"])

async def endless():
    n = 0
    while True:
        yield b"v2" * (1 << 19)
        n += 1
        if n == 4:
            print("streaming", flush=True)
        await asyncio.sleep(0.01)

asyncio.run(open_object_store(backend, **config).put("crash/obj", endless()))
"""


async def test_crash_mid_put_leaves_the_old_object(
    store: ObjectStore, store_config: dict[str, Any]
) -> None:
    old = await store.put("crash/obj", b"version one")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, json.dumps(store_config)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    try:
        line = await asyncio.wait_for(asyncio.to_thread(writer.stdout.readline), 30)  # type: ignore[union-attr]
        assert line.strip() == b"streaming"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()  # type: ignore[union-attr]

    assert await store.get("crash/obj") == b"version one"
    assert (await store.stat("crash/obj")).sha256 == old.sha256
    assert [i.key for i in await store.list("crash/")] == ["crash/obj"]

    if isinstance(store, DiskObjectStore):  # the half-written temp file is there, unseen
        leftovers = [p.name for p in (store.root / "crash").iterdir() if ".tmp-" in p.name]
        assert len(leftovers) == 1
        assert await store.remove_leftovers(older_than_s=0) == 1
        assert await store.get("crash/obj") == b"version one"


# --- disk specifics ------------------------------------------------------------------------


@pytest.fixture
async def disk_store(tmp_path: Path) -> DiskObjectStore:
    port = free_ports(1)[0]
    store = open_object_store(
        "disk",
        root=tmp_path / "objects",
        signing_secret=secrets.token_bytes(32),
        public_base_url=f"http://127.0.0.1:{port}/",
    )
    assert isinstance(store, DiskObjectStore)
    return store


async def test_disk_metadata_goes_with_the_data_and_is_rebuilt_when_stale(
    disk_store: DiskObjectStore,
) -> None:
    await disk_store.put("m/seg.m4s", b"first", content_type="video/iso.segment")
    path = disk_store.root / "m" / "seg.m4s"
    sidecar = path.with_name(".seg.m4s.meta")
    # one file per object: the metadata is the data file's xattr, renamed in with it
    assert json.loads(os.getxattr(path, "user.courtcast.meta"))["content_type"] == (
        "video/iso.segment"
    )
    assert not sidecar.exists()

    # New data renamed in without metadata (a file put there by hand): recomputed.
    fresh = path.with_name(".seg.m4s.tmp-test")
    fresh.write_bytes(b"second version")
    os.replace(fresh, path)
    stat = await disk_store.stat("m/seg.m4s")
    assert stat.sha256 == hashlib.sha256(b"second version").hexdigest()
    assert stat.content_type == (mimetypes.guess_type("seg.m4s")[0] or "application/octet-stream")

    path.write_bytes(b"third")  # rewritten in place: the xattr no longer matches it
    stat = await disk_store.stat("m/seg.m4s")
    assert stat.sha256 == hashlib.sha256(b"third").hexdigest()

    # an object stored before xattrs (or where the file system has none): its sidecar
    os.removexattr(path, "user.courtcast.meta")
    st = path.stat()
    old = {"sha256": "ab" * 32, "content_type": "video/mp4"}
    sidecar.write_text(json.dumps({**old, "ino": st.st_ino, "size": 5, "mtime_ns": st.st_mtime_ns}))
    stat = await disk_store.stat("m/seg.m4s")
    assert (stat.sha256, stat.content_type) == (old["sha256"], old["content_type"])
    assert [i.key for i in await disk_store.list()] == ["m/seg.m4s"]
    await disk_store.delete("m/seg.m4s")
    assert not sidecar.exists()

    await disk_store.put("m/seg.m4s", b"fourth")
    (disk_store.root / "m" / ".other.tmp-abc123").write_bytes(b"half")  # a crashed write
    assert [i.key for i in await disk_store.list()] == ["m/seg.m4s"]
    with pytest.raises(ObjectNotFound):
        await disk_store.get("m/other")


async def test_disk_link_errors_are_readable(disk_store: DiskObjectStore) -> None:
    await disk_store.put("a/b.bin", b"0123456789")
    url = await disk_store.signed_url("a/b.bin", 60)
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    expires, signature = int(query["expires"]), query["signature"]
    assert disk_store.verify_signature("a/b.bin", expires, signature)
    assert not disk_store.verify_signature("a/c.bin", expires, signature)
    assert not disk_store.verify_signature("a/b.bin", expires + 1, signature)
    assert "expired" in (disk_store.signature_problem("a/b.bin", expires, signature, now=2e9) or "")

    base = disk_store.public_base_url
    missing = await disk_store.signed_url("a/missing.bin", 60)
    async with serving(disk_store), httpx.AsyncClient(timeout=10) as http:
        unsigned = await http.get(f"{base}/objects/a/b.bin")
        assert unsigned.status_code == 403 and "not signed" in unsigned.json()["detail"]
        tampered = await http.get(_tamper_signature(url))
        assert "altered" in tampered.json()["detail"]
        assert (await http.get(missing)).status_code == 404
        suffix = await http.get(url, headers={"Range": "bytes=-3"})
        assert (suffix.status_code, suffix.content) == (206, b"789")
        beyond = await http.get(url, headers={"Range": "bytes=50-"})
        assert beyond.status_code == 416 and beyond.headers["content-range"] == "bytes */10"


# --- S3 outages ---------------------------------------------------------------------------


def _s3(server: S3Server, bucket: str, **overrides: Any) -> ObjectStore:
    settings: dict[str, Any] = {
        "endpoint": server.endpoint,
        "access_key": server.access_key,
        "secret_key": server.secret_key,
        "bucket": bucket,
    }
    return open_object_store("s3", **(settings | overrides))


async def test_s3_outage_degrades_then_recovers(s3_server: S3Server) -> None:
    bucket = _fresh_bucket()
    impatient = _s3(s3_server, bucket, retry_budget_s=1.5, request_timeout_s=0.5)
    patient = _s3(s3_server, bucket, retry_budget_s=20, request_timeout_s=0.5)
    big = os.urandom(24 * MiB)
    await impatient.put("o/k", b"kept")
    await patient.put("o/big", big)

    s3_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unreachable"):
            await impatient.get("o/k")
        assert time.monotonic() - started < 5
        health = await impatient.health()
        assert health["state"] == "degraded" and "timed out" in health["error"]
        assert (await impatient.health(probe=True))["state"] == "degraded"

        waiting = asyncio.create_task(patient.get("o/k"))  # retries through the outage
        for _ in range(50):  # its first 0.5 s timeout marks it degraded (later on a busy box)
            if (await patient.health())["state"] == "degraded":
                break
            await asyncio.sleep(0.1)
        assert (await patient.health())["state"] == "degraded"
        assert not waiting.done()
    finally:
        s3_server.resume()

    assert await waiting == b"kept"
    assert (await patient.health())["state"] == "ok"
    assert await impatient.get("o/k") == b"kept"
    assert (await impatient.health())["state"] == "ok"

    # An outage in the middle of a download: the stream resumes where it stopped.
    received, seen = bytearray(), []

    async def outage() -> None:
        s3_server.pause()
        await asyncio.sleep(1.5)
        seen.append((await patient.health())["state"])
        s3_server.resume()

    try:
        async for chunk in patient.stream("o/big"):
            if not received:
                interruption = asyncio.create_task(outage())
            received += chunk
        await interruption
    finally:
        s3_server.resume()
    assert received == big
    assert seen == ["degraded"]
    await impatient.close()
    await patient.close()


async def test_s3_unreachable_or_refusing_is_reported_not_crashed(s3_server: S3Server) -> None:
    closed_port = free_ports(1)[0]
    nowhere = open_object_store(
        "s3",
        endpoint=f"http://127.0.0.1:{closed_port}",
        access_key="k",
        secret_key="s",
        bucket=_fresh_bucket(),
        retry_budget_s=1.0,
    )
    with pytest.raises(StorageUnavailable, match=f"127.0.0.1:{closed_port}"):
        await nowhere.put("a/b", b"x")
    health = await nowhere.health()
    assert health["state"] == "degraded" and "refused" in health["error"]

    wrong_secret = _s3(s3_server, _fresh_bucket(), secret_key="not-the-secret")
    started = time.monotonic()
    with pytest.raises(StorageUnavailable, match=r"S3 refused .* secret key"):
        await wrong_secret.put("a/b", b"x")
    assert time.monotonic() - started < 2  # a refusal is not retried
    assert (await wrong_secret.health())["state"] == "degraded"

    with pytest.raises(ValueError, match="bucket"):
        _s3(s3_server, "x")
    with pytest.raises(ValueError, match="unknown object store backend"):
        open_object_store("ftp")
