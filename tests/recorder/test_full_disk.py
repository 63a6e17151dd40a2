"""The recordings disk fills up (ENOSPC) while the whole platform records two streams:
the spool and the disk object store sit on a small tmpfs that a filler file fills. The
recorder must keep its memory bounded, say plainly that the disk is full, keep the server
serving, and, once space comes back, record again with an explicit `disk-full` gap; the
recording verifies and decodes (a 27-minute benchmark at N=40 filled the disk: the
recorder stopped recording silently and its memory rose from 5 to 14.8 MB per stream)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.alerts import ALERTS_STREAM
from courtcast.platform import Platform
from recorder.recording import QUEUE_PACKETS, Recording
from recorder.verify import verify_recording
from tests.courtcast.test_platform import (
    METRICS_TOKEN,
    base_url,
    cancel,
    media_role,
    push,
    start_platform,
    wait_live,
)
from tests.mediafiles import make_clip
from tests.recorder.conftest import assemble, decoded_video, fill
from tests.recorder.test_platform_recording import recorder_role

pytestmark = pytest.mark.timeout(150)
FPS = 25
STREAMS = ("cam-1", "cam-2")


def held_bytes(recording: Recording) -> int:
    """Media bytes the recording's segmenter still holds."""
    seg = recording.segmenter
    segments = [*seg.segments, *([seg.open] if seg.open is not None else [])]
    return sum(len(p.data) for s in segments for p in s.parts)


async def alerts(node: Platform) -> list[dict[str, Any]]:
    state = recorder_role(node).index.state
    return [entry for _, entry in await state.read_events(ALERTS_STREAM)]


async def test_a_full_disk_is_a_clear_error_a_gap_and_recording_resumes(
    tmp_path: Path, small_disk: Path
) -> None:
    clip = make_clip(tmp_path, seconds=40, fps=FPS, gop=FPS, size=(640, 360))
    node = await start_platform(
        tmp_path,
        **{
            "security.open": True,
            "recorder.record_all": True,
            "recorder.segment_target_s": 2.0,
            "recorder.spool_dir": str(small_disk / "spool"),
            "objects.path": str(small_disk / "objects"),
        },
    )
    port = media_role(node).rtmp_port
    publishers = [
        asyncio.create_task(push(clip, f"rtmp://127.0.0.1:{port}/live/{s}")) for s in STREAMS
    ]
    role = recorder_role(node)
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    try:
        for s in STREAMS:
            await wait_live(node, s)
        await asyncio.sleep(4)
        recordings = list(role.active.values())
        assert len(recordings) == 2
        filler = fill(small_disk, leave=0)
        filled_at = time.time()
        await asyncio.sleep(10)

        # (a) bounded memory: each recording still reads the hub (its queue does not fill)
        # and holds no media it could not spool
        for r in recordings:
            assert r._reader is not None and not r._reader.done(), (
                f"{r.id}: the recorder stopped reading: {r._reader and r._reader.exception()!r}"
            )
            assert r._sub is not None and r._sub.queued < QUEUE_PACKETS // 10, r._sub.queued
            assert held_bytes(r) < 2 << 20, held_bytes(r)

        # (b) health says plainly that the disk is full, and where; an alert says so too
        # (c) the server keeps serving: health, and the live streams over LL-HLS
        async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as http:
            health = (await http.get("/api/v1/health", headers=auth)).json()
            recorder = health["roles"]["recorder"]
            assert recorder["state"] == "degraded", recorder
            error = str(recorder.get("disk_error"))
            assert "ENOSPC" in error and "disk full" in error, recorder
            assert str(small_disk / "spool") in error, recorder
            assert "No space left on device" in str(recorder.get("store_error")), recorder
            for s in STREAMS:
                playlist = await http.get(f"/live/{s}/index.m3u8")
                assert playlist.status_code == 200, playlist.text
        full = [a for a in await alerts(node) if a.get("kind") == "disk-full"]
        assert full and str(small_disk / "spool") in str(full[0].get("path")), full

        # (d) space comes back: recording resumes, and what was lost is a disk-full gap
        filler.unlink()
        freed_at = time.time()
        await asyncio.sleep(10)
        async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as http:
            health = (await http.get("/api/v1/health", headers=auth)).json()
            assert health["roles"]["recorder"].get("disk_error") is None, health
        manifests = [await r.close(timeout_s=60) for r in recordings]
        for manifest in manifests:
            gaps = [g for g in manifest.gaps if g.cause == "disk-full"]
            assert len(gaps) == 1, manifest.gaps
            assert "ENOSPC" in gaps[0].reason, gaps[0]
            # no more than the full time is lost, give or take the segment (2 s) being
            # written as the disk filled and the one being written as space came back
            assert filled_at - 3 <= gaps[0].start and gaps[0].end <= freed_at + 5, (
                gaps[0],
                filled_at,
                freed_at,
            )
            after = [s for s in manifest.segments if s.start >= gaps[0].end]
            assert len(after) >= 3, "recording did not resume once space came back"
            assert after[0].discontinuity
            rid = manifest.recording_id
            report = await verify_recording(role.storage.objects, rid, role.signer.public)
            assert report.ok and report.signed, report.summary()
            media = await assemble(role.storage.objects, manifest, tmp_path / f"{rid}.mp4")
            frames = await asyncio.to_thread(decoded_video, media)
            assert len(frames) >= FPS * manifest.duration - 2 * len(manifest.segments), (
                len(frames),
                manifest.duration,
            )
    finally:
        for p in publishers:
            await cancel(p)
        await node.stop()
