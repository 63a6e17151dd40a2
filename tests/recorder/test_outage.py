"""The object store goes away while recording (SeaweedFS frozen with SIGSTOP, like a stalled
network): segments wait in the local spool and arrive when it is back, in order, once."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from media_server.hub import Hub
from recorder.index import RecordingIndex
from recorder.recording import RecorderOptions, Recording
from recorder.signing import Signer
from recorder.verify import verify_recording
from storage.objects import ObjectInfo, ObjectStore
from storage.recording_keys import object_key
from tests.fixtures.s3 import S3Server
from tests.mediafiles import load_clip, looped, make_clip, publish
from tests.recorder.conftest import new_manifest, s3_store

pytestmark = pytest.mark.timeout(120)


class CountingPuts:
    """The real store, counting the puts that succeeded per key."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.puts: Counter[str] = Counter()
        self.order: list[str] = []

    async def put(self, key: str, data: Any, content_type: str = "") -> ObjectInfo:
        info = await self.store.put(key, data, content_type)
        self.puts[key] += 1
        self.order.append(key)
        return info

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


async def test_s3_outage_spools_then_uploads_in_order_once(
    tmp_path: Path,
    s3_server: S3Server,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> None:
    store = s3_store(s3_server, retry_budget_s=1.0, request_timeout_s=1.0)
    counting = CountingPuts(store)
    clip = make_clip(tmp_path, seconds=4, fps=25, gop=25)
    tracks, packets = load_clip(clip)
    hub = Hub()
    recording = Recording(
        hub,
        counting,
        index,
        signer,  # type: ignore[arg-type]
        new_manifest("cam-s3"),
        options,
    )
    pub = hub.publish("cam-s3", tracks, "test")
    await recording.start()
    feed = asyncio.create_task(
        publish(
            hub,
            "cam-s3",
            tracks,
            looped(tracks, packets, 4, 4),
            realtime=True,
            publication=pub,
            close=False,
        )
    )
    try:
        await asyncio.sleep(3)
        s3_server.pause()
        await asyncio.sleep(8)
        assert recording.outage_since is not None, "the outage went unnoticed"
        spooled = len(recording.spool.pending_segments())
        assert spooled >= 2, spooled
    finally:
        s3_server.resume()
    await feed
    manifest = await recording.close(timeout_s=60)
    segment_keys = [k for k in counting.order if k.endswith(".m4s")]
    expected = [object_key(manifest.recording_id, s.name) for s in manifest.segments]
    assert segment_keys == expected  # in order
    assert all(counting.puts[k] == 1 for k in expected)  # once each
    assert abs(manifest.duration - 16.0) <= 0.1 and manifest.gaps == []
    report = await verify_recording(store, manifest.recording_id, signer.public)
    await store.close()
    assert report.ok, report.summary()
