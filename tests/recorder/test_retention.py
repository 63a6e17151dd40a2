"""Retention: a security recording past its days is deleted (objects and index entry) and
the deletion audited; a trial recording of the same age stays."""

from __future__ import annotations

import time
from pathlib import Path

from media_server.hub import Hub
from recorder.index import RecordingIndex
from recorder.recording import RecorderOptions, Recording
from recorder.retention import apply_retention
from recorder.signing import Signer
from storage.objects import ObjectStore
from storage.recording_keys import recording_prefix
from tests.mediafiles import load_clip, make_clip, publish
from tests.recorder.conftest import new_manifest


async def record(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
    stream_class: str,
) -> str:
    tracks, packets = load_clip(make_clip(tmp_path, seconds=2, fps=25, gop=25))
    hub = Hub()
    recording = Recording(
        hub,
        objects,
        index,
        signer,
        new_manifest(f"cam-{stream_class}", stream_class=stream_class),
        options,
    )
    pub = hub.publish(recording.manifest.stream, tracks, "test")
    await recording.start()
    await publish(
        hub,
        recording.manifest.stream,
        tracks,
        packets,
        realtime=False,
        publication=pub,
        close=False,
    )
    await recording.close()
    return recording.id


async def test_security_recordings_expire_trial_recordings_never(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> None:
    security = await record(tmp_path, objects, index, signer, options, "security")
    trial = await record(tmp_path, objects, index, signer, options, "trial")
    days = {"security": 30, "trial": 1}  # a trial entry is refused by config; ignored here too
    assert await apply_retention(objects, index, days, now=time.time() + 29 * 86400) == []
    deleted = await apply_retention(objects, index, days, now=time.time() + 31 * 86400)
    assert deleted == [security]
    assert await objects.list(recording_prefix(security)) == []
    assert await index.get(security) is None
    assert await objects.list(recording_prefix(trial)) != []
    audit = [e for _, e in await index.state.read_events("audit")]
    assert [(e["action"], e["recording"], e["who"]) for e in audit] == [
        ("delete", security, "retention")
    ]
