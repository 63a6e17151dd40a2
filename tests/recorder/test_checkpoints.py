"""Manifest checkpoints (recorder/checkpoints.py): a live segment is listed in the stored
manifest at most checkpoint_every_s late, stays in the spool until then (a restart lists
it again), and the closed recording lists every segment and verifies."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from media_server.hub import Hub
from recorder.index import RecordingIndex
from recorder.manifest import Manifest
from recorder.recording import RecorderOptions, Recording
from recorder.signing import Signer
from recorder.verify import verify_recording
from storage.objects import ObjectStore
from storage.recording_keys import manifest_key
from tests.mediafiles import load_clip, looped, make_clip, publish
from tests.recorder.conftest import new_manifest

pytestmark = pytest.mark.timeout(90)

FPS = 25
SECONDS, TIMES = 4, 3  # 12 s of media: 6 segments of 2 s


async def recording_of_clip(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> Recording:
    """A recording with the clip published into it (not in real time), its uploads done."""
    clip = make_clip(tmp_path, seconds=SECONDS, fps=FPS, gop=FPS)
    tracks, packets = load_clip(clip)
    hub = Hub()
    recording = Recording(hub, objects, index, signer, new_manifest(), options)
    pub = hub.publish("room-1", tracks, "test")
    await recording.start()
    media = looped(tracks, packets, SECONDS, TIMES)
    await publish(hub, "room-1", tracks, media, realtime=False, publication=pub, close=False)
    await asyncio.sleep(0.2)
    await asyncio.wait_for(recording.uploads.drain(), 30)
    return recording


async def stored(objects: ObjectStore, recording: Recording) -> Manifest:
    return Manifest.from_bytes(await objects.get(manifest_key(recording.id)))


async def test_live_segments_wait_for_the_next_checkpoint_in_the_spool(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> None:
    options = dataclasses.replace(options, checkpoint_every_s=3600.0)
    recording = await recording_of_clip(tmp_path, objects, index, signer, options)
    listed = len(recording.manifest.segments)
    assert listed >= 4, listed
    # the first segment came with the init: checkpointed at once; the others wait
    assert len((await stored(objects, recording)).segments) == 1
    waiting = [p.seq for p in recording.spool.pending_segments()]
    assert waiting == [s.seq for s in recording.manifest.segments[1:]]
    manifest = await recording.close()
    assert len(manifest.segments) >= listed
    assert (await stored(objects, recording)).segments == manifest.segments
    report = await verify_recording(objects, recording.id, signer.public)
    assert report.ok, report


async def test_a_timer_lists_the_last_segments_and_frees_the_spool(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> None:
    options = dataclasses.replace(options, checkpoint_every_s=0.5)
    recording = await recording_of_clip(tmp_path, objects, index, signer, options)
    try:
        await asyncio.sleep(1.0)  # no segment comes: the timer checkpoints
        assert (await stored(objects, recording)).segments == recording.manifest.segments
        assert recording.spool.pending_segments() == []
    finally:
        await recording.close()


async def test_stop_lists_what_was_uploaded(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> None:
    options = dataclasses.replace(options, checkpoint_every_s=3600.0)
    recording = await recording_of_clip(tmp_path, objects, index, signer, options)
    await recording.stop(timeout_s=10.0)
    segments = (await stored(objects, recording)).segments
    assert segments == recording.manifest.segments and len(segments) >= 4
    assert recording.spool.pending_segments() == []
