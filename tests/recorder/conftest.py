"""Recorder test setup: a real Redis (embedded), real object stores (disk, and S3 through
SeaweedFS), a signing key in a tmp data dir, helpers to record a published clip, and a
small disk of its own (tmpfs) to fill up."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from recorder.index import RecordingIndex
from recorder.manifest import Manifest
from recorder.recording import RecorderOptions
from recorder.signing import Signer
from storage.objects import ObjectStore, open_object_store
from storage.recording_keys import object_key
from storage.redis_server import EmbeddedRedis
from storage.state import StateStore
from tests.fixtures.s3 import S3Server


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateStore]:
    server = EmbeddedRedis(tmp_path / "redis")
    await server.start()
    store = StateStore(server.url)
    await store.connect()
    yield store
    await store.close()
    await server.stop()


def s3_store(server: S3Server, **kwargs: Any) -> ObjectStore:
    return open_object_store(
        "s3",
        endpoint=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        bucket=f"rec-{uuid.uuid4().hex[:16]}",
        **kwargs,
    )


@pytest.fixture(params=["disk", "s3"])
async def objects(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "disk":
        store = open_object_store(
            "disk", root=tmp_path / "objects", signing_secret=secrets.token_bytes(32)
        )
    else:
        store = s3_store(
            request.getfixturevalue("s3_server"), retry_budget_s=2.0, request_timeout_s=2.0
        )
    yield store
    await store.close()


@pytest.fixture
def signer(tmp_path: Path) -> Signer:
    return Signer.for_data_dir(tmp_path / "data")


@pytest.fixture
def index(state: StateStore) -> RecordingIndex:
    return RecordingIndex(state)


@pytest.fixture
def options(tmp_path: Path) -> RecorderOptions:
    return RecorderOptions(segment_target_s=2.0, part_target_s=0.5, spool_dir=tmp_path / "spool")


def new_manifest(stream: str = "room-1", **fields: Any) -> Manifest:
    import time

    return Manifest(
        recording_id=f"{stream}-{uuid.uuid4().hex[:8]}",
        stream=stream,
        opened_at=time.time(),
        **fields,
    )


async def assemble(store: ObjectStore, manifest: Manifest, out: Path) -> Path:
    """init + every segment, as one fragmented MP4 a player can read."""
    rid = manifest.recording_id
    parts = [await store.get(object_key(rid, manifest.inits[0].name))]
    parts += [await store.get(object_key(rid, s.name)) for s in manifest.segments]
    out.write_bytes(b"".join(parts))
    return out


def ffprobe(path: Path | str, *extra: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            *extra,
            "-count_frames",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def decoded_video(path: Path) -> list[float]:
    """Presentation times (s) of every decoded video frame; raises on a decode error."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"err_detect": "explode"}
        return [
            float(f.pts * f.time_base)
            for f in container.decode(stream)
            if f.pts is not None and f.time_base is not None
        ]


def decoded_seconds(info: dict[str, Any], fps: int) -> float:
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    return int(video["nb_read_frames"]) / fps


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 24 MB file system of its own (tmpfs), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    _run_or_skip(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], "a tmpfs")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _run_or_skip(cmd: list[str], what: str) -> None:
    """Run cmd; skip the test, saying why, where this machine refuses it (no mounts)."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot make {what} here: {cmd[0]}: {done.stderr.strip()}")


def fill(disk: Path, leave: int) -> Path:
    """A filler file taking all the free space but `leave` bytes."""
    st = os.statvfs(disk)
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        left = st.f_bavail * st.f_frsize - leave
        chunk = b"\0" * (1 << 20)
        while left > 0:
            try:
                left -= f.write(chunk[: min(left, len(chunk))])
            except OSError:
                break
    return filler


@pytest.fixture
def small_ext4(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB ext4 file system (a loop device, no blocks reserved for root), where a full
    disk also refuses new directories (tmpfs does not)."""
    image, mount = tmp_path / "ext4.img", tmp_path / "ext4"
    mount.mkdir()
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    _run_or_skip(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], "a small ext4")
    _run_or_skip(["mount", "-o", "loop", str(image), str(mount)], "a small ext4")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
