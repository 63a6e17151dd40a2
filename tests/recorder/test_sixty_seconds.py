"""The issue's acceptance run, against real S3 (SeaweedFS): 60 s published by ffmpeg over
RTMP in two halves with the publisher away 10 s between them. The recording has one
publisher-lost gap, plays back over HLS as 60 s (± one GOP) with a discontinuity, a 10 s
export decodes to about 10 s, and verify says OK."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest

from tests.courtcast.test_platform import media_role, probe, push, start_platform, wait_live
from tests.fixtures.s3 import S3Server
from tests.mediafiles import make_clip
from tests.recorder.test_platform_recording import recorder_role

pytestmark = pytest.mark.timeout(150)
FPS, GOP_S = 25, 1


async def test_sixty_seconds_over_rtmp_into_s3(tmp_path: Path, s3_server: S3Server) -> None:
    clip = make_clip(tmp_path, seconds=30, fps=FPS, gop=FPS * GOP_S)
    s3 = {
        "endpoint": s3_server.endpoint,
        "access_key": s3_server.access_key,
        "secret_key": s3_server.secret_key,
        "bucket": f"rec-{uuid.uuid4().hex[:12]}",
    }
    node = await start_platform(
        tmp_path,
        **{
            "security.open": True,
            "recorder.record_all": True,
            "objects.backend": "s3",
            "objects.s3": s3,
        },
    )
    try:
        url = f"rtmp://127.0.0.1:{media_role(node).rtmp_port}/live/hall-1"
        for half in range(2):
            publisher = asyncio.create_task(push(clip, url))
            await wait_live(node, "hall-1")
            code, out = await publisher
            assert code == 0, out
            if half == 0:
                await asyncio.sleep(10)
        [recording] = recorder_role(node).active.values()
        manifest = await recording.close()
        rid = manifest.recording_id
        # one gap inside the recording; the second publisher's end opens a last one, which
        # the close ends
        inside = [g for g in manifest.gaps if g.end < manifest.segments[-1].start]
        assert [g.cause for g in inside] == ["publisher-lost"]
        assert all(g.cause == "publisher-lost" for g in manifest.gaps)
        gap = inside[0]
        assert 10.0 <= gap.end - gap.start <= 10.0 + 2 * GOP_S, gap
        assert abs(manifest.duration - 60.0) <= GOP_S
        base = f"http://127.0.0.1:{node.http_port}/api/v1/recordings/{rid}"
        async with httpx.AsyncClient(timeout=60) as http:
            playlist = (await http.get(f"{base}/index.m3u8")).text
            assert playlist.count("#EXT-X-DISCONTINUITY") == 1
            verified = (await http.get(f"{base}/verify")).json()
            assert verified["ok"] and verified["signed"], verified
            start = manifest.segments[0].start
            clip_out = tmp_path / "export.mp4"
            response = await http.get(
                f"{base}/export.mp4", params={"from": str(start + 10), "to": str(start + 20)}
            )
            assert response.status_code == 200, response.text
            assert response.headers["x-courtcast-signature"]
            clip_out.write_bytes(response.content)
        info = await probe(f"{base}/index.m3u8")
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert abs(int(video["nb_read_frames"]) / FPS - 60.0) <= GOP_S
        exported = float((await probe(clip_out))["format"]["duration"])
        assert abs(exported - 10.0) <= 0.1, exported
    finally:
        await node.stop()
