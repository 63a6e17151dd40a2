"""Clocks as cheap encoders send them, through a recording: an RTMP publisher whose audio
is stamped 30 s off its video (FLV timestamps from another clock) is recorded with audio
and video starting within one frame of each other (ffprobe start times of the stored
init + segments, played as one file)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from media_server.rtmp.server import RtmpServer
from recorder.index import RecordingIndex
from recorder.recording import RecorderOptions, Recording
from recorder.signing import Signer
from recorder.verify import verify_recording
from storage.objects import ObjectStore
from tests.fixtures.rtmp import RawRtmpClient
from tests.mediafiles import load_clip
from tests.recorder.conftest import assemble, ffprobe, new_manifest

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("objects", ["disk"], indirect=True)
async def test_flv_audio_clock_apart_is_recorded_in_sync(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
    rtmp_server: RtmpServer,
    rtmp_media: dict[str, Path],
) -> None:
    tracks, packets = load_clip(rtmp_media["nobf"])  # 4 s, audio and video both from 0
    manifest = new_manifest(stream="sync")
    recording = Recording(rtmp_server.hub, objects, index, signer, manifest, options)
    await recording.start()
    client = await RawRtmpClient.connect(rtmp_server.port)
    try:
        await client.publish("sync")
        await client.send_clip(tracks, packets, audio_shift_ms=30_000)
    finally:
        await client.close()
    await asyncio.sleep(0.5)
    manifest = await recording.close()
    report = await verify_recording(objects, manifest.recording_id, signer.public)
    assert report.ok and report.signed, report.summary()
    info = ffprobe(await assemble(objects, manifest, tmp_path / "rec.mp4"))
    start = {s["codec_type"]: float(s["start_time"]) for s in info["streams"]}
    frames = {s["codec_type"]: int(s["nb_read_frames"]) for s in info["streams"]}
    assert frames["video"] > 90 and frames["audio"] > 150, frames  # ~4 s of each
    lead = start["audio"] - start["video"]
    assert abs(lead) < 1 / 30, f"recorded audio starts {lead:+.3f} s from its video"
