"""The recorder core against real Redis and real object stores (disk and SeaweedFS S3):
a published clip becomes init + keyframe-aligned segments, a chained manifest and a
signature; verify recomputes everything from the stored objects; tampering is named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from media_server.hub import Hub
from recorder.index import RecordingIndex
from recorder.manifest import GapCause, Manifest
from recorder.recording import RecorderOptions, Recording
from recorder.signing import Signer
from recorder.uploads import durable_ms
from recorder.verify import verify_recording
from storage.objects import ObjectStore
from storage.recording_keys import manifest_key, object_key, recording_prefix
from tests.mediafiles import load_clip, looped, make_clip, publish
from tests.recorder.conftest import assemble, decoded_seconds, ffprobe, new_manifest

pytestmark = pytest.mark.timeout(90)

FPS = 25


async def record_clip(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
    seconds: int = 4,
    times: int = 3,
    gap_s: float = 0.0,
) -> Manifest:
    """Publish the clip `times` times and record it; with gap_s, in real time as separate
    publications with the publisher away gap_s between them."""
    clip = make_clip(tmp_path, seconds=seconds, fps=FPS, gop=FPS, bframes=2)
    tracks, packets = load_clip(clip)
    hub = Hub()
    recording = Recording(
        hub,
        objects,
        index,
        signer,
        new_manifest(court="c1", room="r1", case_number="(2026)A-1"),
        options,
    )
    pub = hub.publish("room-1", tracks, "test")
    await recording.start()
    if gap_s:
        for n in range(times):
            last = n == times - 1
            await publish(
                hub, "room-1", tracks, packets, realtime=True, publication=pub, close=not last
            )
            if not last:
                await asyncio.sleep(gap_s)
                pub = hub.publish("room-1", tracks, "test")
    else:
        await publish(
            hub,
            "room-1",
            tracks,
            looped(tracks, packets, seconds, times),
            realtime=False,
            publication=pub,
            close=False,
        )
    await asyncio.sleep(0.2)
    return await recording.close()


async def test_records_segments_manifest_and_signature(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> None:
    manifest = await record_clip(tmp_path, objects, index, signer, options)
    assert manifest.state == "closed" and manifest.gaps == []
    assert manifest.codecs()[0].startswith("avc1.") and "mp4a.40.2" in manifest.codecs()
    # keyframe-aligned 2 s segments (GOP 1 s); the last one may be shorter
    assert all(1.9 <= s.duration <= 6.0 for s in manifest.segments[:-1])
    assert abs(manifest.duration - 12.0) <= 1 / FPS * 2
    starts = [s.start for s in manifest.segments]
    assert starts == sorted(starts)
    assert [s.prev for s in manifest.segments[1:]] == [
        s.entry_hash() for s in manifest.segments[:-1]
    ]
    report = await verify_recording(objects, manifest.recording_id, signer.public)
    assert report.ok and report.signed, report.summary()
    info = ffprobe(await assemble(objects, manifest, tmp_path / "all.mp4"))
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    assert abs(decoded_seconds(info, FPS) - 12.0) <= 1 / FPS
    found = await index.search(court="c1", case_number="(2026)A-1")
    assert [r["id"] for r in found] == [manifest.recording_id]
    assert found[0]["state"] == "closed" and found[0]["segments"] == len(manifest.segments)


@pytest.mark.parametrize("objects", ["disk"], indirect=True)  # S3: test_sixty_seconds
async def test_publisher_lost_is_one_gap_and_a_discontinuity(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> None:
    manifest = await record_clip(
        tmp_path, objects, index, signer, options, seconds=3, times=2, gap_s=2.0
    )
    assert len(manifest.gaps) == 1
    first = manifest.gaps[0]
    assert first.cause == GapCause.publisher_lost
    # away 2 s, plus the first GOP the new publisher needs
    assert 1.9 <= first.end - first.start <= 3.2, first
    assert abs(manifest.duration - 6.0) <= 2 / FPS
    after = next(s for s in manifest.segments if s.start >= first.end)
    assert after.discontinuity and after.start == pytest.approx(first.end)
    report = await verify_recording(objects, manifest.recording_id, signer.public)
    assert report.ok, report.summary()


@pytest.mark.parametrize("tamper", ["flip", "delete", "swap", "extra", "manifest"])
async def test_verify_names_the_first_bad_object(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
    tamper: str,
) -> None:
    manifest = await record_clip(tmp_path, objects, index, signer, options, times=2)
    rid = manifest.recording_id
    seg2, seg3 = (object_key(rid, manifest.segments[i].name) for i in (2, 3))
    if tamper == "flip":
        data = bytearray(await objects.get(seg2))
        data[len(data) // 2] ^= 0x01
        await objects.put(seg2, bytes(data))
        expected = ("seg-2.m4s", "changed")
    elif tamper == "delete":
        await objects.delete(seg2)
        expected = ("seg-2.m4s", "missing")
    elif tamper == "swap":
        a, b = await objects.get(seg2), await objects.get(seg3)
        await objects.put(seg2, b)
        await objects.put(seg3, a)
        expected = ("seg-2.m4s", "reordered")
    elif tamper == "extra":
        await objects.put(recording_prefix(rid) + "seg-99.m4s", await objects.get(seg2))
        expected = ("seg-99.m4s", "extra")
    else:
        raw = (await objects.get(manifest_key(rid))).replace(b'"closed"', b'"closxd"')
        await objects.put(manifest_key(rid), raw)
        expected = ("manifest.json", "bad signature")
    report = await verify_recording(objects, manifest.recording_id, signer.public)
    assert not report.ok
    assert report.first is not None
    assert (report.first.object, report.first.why) == expected, report.summary()


@pytest.mark.parametrize("objects", ["disk"], indirect=True)
async def test_recorder_keeps_no_spooled_media_in_memory(
    tmp_path: Path,
    objects: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    options: RecorderOptions,
) -> None:
    """What is in the spool is not kept in memory too: the recorder's segmenter held its
    last 8 closed segments (~8 MB per 2 Mbit/s stream, bench/RESULTS.md issue 19)."""
    clip = make_clip(tmp_path, seconds=4, fps=FPS, gop=FPS, bframes=2)
    tracks, packets = load_clip(clip)
    hub = Hub()
    recording = Recording(hub, objects, index, signer, new_manifest(), options)
    pub = hub.publish("room-1", tracks, "test")
    await recording.start()
    await publish(
        hub,
        "room-1",
        tracks,
        looped(tracks, packets, 4, 3),
        realtime=False,
        publication=pub,
        close=False,
    )
    await asyncio.sleep(0.3)  # the reader has spooled what the segmenter made
    seg = recording.segmenter
    assert seg.open is not None and seg.open.parts, "an open segment with spooled parts"
    held = [s for s in [*seg.segments, seg.open] for p in s.parts if p.data]
    assert held == [], f"{len(held)} parts of spooled segments still in memory"
    manifest = await recording.close()
    assert abs(manifest.duration - 12.0) <= 2 / FPS
    # each segment's closed -> durable time was noted (health, bench/ingest_hls.py)
    assert durable_ms([recording.uploads])["segments"] == len(manifest.segments)
    report = await verify_recording(objects, manifest.recording_id, signer.public)
    assert report.ok and report.signed, report.summary()
