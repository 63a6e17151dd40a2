"""Audio whatever the camera sends, end to end in the whole platform: a GStreamer RTSP camera
(G.711, Opus, AAC; H.264 or H.265) or ffmpeg publishing FLV over RTMP (G.711, MP3) gives an
LL-HLS stream whose audio decodes to the source's tone, and a trial session's recording that
verifies, names the camera's codec and exports with audio that is not silence. A camera
whose audio stops mid-session leaves an audio gap with its cause in the manifest."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from courtcast.platform import Platform
from media_server.streams import StreamClass
from tests.courtcast.test_platform import (
    base_url,
    cancel,
    define,
    media_role,
    record_hls,
    run,
    start_platform,
    stream_info,
    wait_live,
)
from tests.media_server.test_audio_ingest import RTMP_AUDIO, tone
from tests.recorder.test_platform_recording import recorder_role

pytestmark = pytest.mark.timeout(120)
FPS = 25


async def publish_flv(url: str, audio: list[str], seconds: float) -> None:
    code, out = await run(
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=320x180:rate={FPS}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(seconds),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        str(FPS),
        *audio,
        "-f",
        "flv",
        url,
        timeout=seconds + 30,
    )
    assert code == 0, out


async def session(http: httpx.AsyncClient, room: str) -> str:
    opened = await http.post(
        "/sessions", json={"room": room, "case_number": "A-1", "title": "A v B", "public": True}
    )
    assert opened.status_code == 201, opened.text
    return str(opened.json()["id"])


async def close_and_fetch(node: Platform, http: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    """Close the session; the recording's record with its manifest, once it is closed."""
    assert (await http.post(f"/sessions/{sid}/close")).status_code == 200
    await asyncio.sleep(0.5)  # the role reconciles on the change
    await recorder_role(node).wait_closed()
    [record] = (await http.get("/recordings", params={"case_number": "A-1"})).json()["recordings"]
    return dict((await http.get(f"/recordings/{record['id']}")).json())


async def source_tracks(http: httpx.AsyncClient, stream: str) -> list[dict[str, str]]:
    for _ in range(50):  # live stats reach Redis within about a second
        stats = (await http.get(f"/streams/{stream}")).json().get("stats") or {}
        if stats.get("tracks"):
            return list(stats["tracks"])
        await asyncio.sleep(0.1)
    raise AssertionError(f"no tracks in the stats of {stream}: {stats}")


async def check_live_and_recorded(
    node: Platform, tmp_path: Path, stream: str, named: str, sid: str, http: httpx.AsyncClient
) -> None:
    state = f"transcoded from {named}" if named != "aac" else "carried"
    tracks = await source_tracks(http, stream)
    assert [(t["kind"], t["state"]) for t in tracks] == [("video", "carried"), ("audio", state)]
    # LL-HLS: both tracks, ~6 s of each decoded
    hls = tmp_path / "hls.mp4"
    info = await record_hls(f"{base_url(node)}/live/{stream}/index.m3u8", hls, 6)
    assert stream_info(info, "audio")["codec_name"] == "aac"
    assert int(stream_info(info, "video")["nb_read_frames"]) >= 5 * FPS
    seconds, rms = tone(hls)
    assert seconds >= 5.0 and rms > 0.05, (seconds, rms)
    # the recording: verified, names the camera's codec, exports with sound
    record = await close_and_fetch(node, http, sid)
    rid, manifest = record["id"], record["manifest"]
    verified = (await http.get(f"/recordings/{rid}/verify")).json()
    assert verified["ok"] and verified["signed"], verified
    init = manifest["inits"][0]
    assert "mp4a.40.2" in init["codecs"]
    if named != "aac":
        assert init["audio_source"] == named and "AAC-LC" in init["audio_transcode"]
    first = manifest["segments"][0]["start"]
    got = await http.get(
        f"/recordings/{rid}/export.mp4", params={"from": str(first), "to": str(first + 5)}
    )
    assert got.status_code == 200, got.text
    clip = tmp_path / "export.mp4"
    clip.write_bytes(got.content)
    seconds, rms = tone(clip)
    assert seconds >= 3.5 and rms > 0.05, (seconds, rms)


@pytest.mark.parametrize(
    "codec, audio",
    [("h264", "pcma"), ("h265", "pcma"), ("h264", "pcmu"), ("h264", "opus"), ("h264", "aac")],
)
async def test_rtsp_camera_audio_is_live_and_recorded(
    codec: str, audio: str, tmp_path: Path, rtsp_camera: Any
) -> None:
    camera = await asyncio.to_thread(rtsp_camera, codec=codec, audio=audio, size="320x180")
    node = await start_platform(
        tmp_path, **{"security.open": True, "recorder.segment_target_s": 2.0}
    )
    try:
        await define(
            node,
            "cam",
            room="r1",
            court="c1",
            source_url=camera.url,
            stream_class=StreamClass.conference,
            public=True,
        )
        await wait_live(node, "cam", timeout=15)
        async with httpx.AsyncClient(base_url=f"{base_url(node)}/api/v1", timeout=30) as http:
            sid = await session(http, "r1")
            await check_live_and_recorded(node, tmp_path, "cam", audio, sid, http)
    finally:
        await node.stop()


@pytest.mark.parametrize("named", ["pcma", "pcmu", "mp3"])
async def test_rtmp_audio_is_live_and_recorded(named: str, tmp_path: Path) -> None:
    node = await start_platform(
        tmp_path, **{"security.open": True, "recorder.segment_target_s": 2.0}
    )
    try:
        key = await define(
            node, "enc", room="r1", court="c1", stream_class=StreamClass.conference, public=True
        )
        url = f"rtmp://127.0.0.1:{media_role(node).rtmp_port}/live/enc?key={key}"
        publisher = asyncio.create_task(publish_flv(url, RTMP_AUDIO[named], 16))
        await wait_live(node, "enc")
        async with httpx.AsyncClient(base_url=f"{base_url(node)}/api/v1", timeout=30) as http:
            sid = await session(http, "r1")
            await check_live_and_recorded(node, tmp_path, "enc", named, sid, http)
        await cancel(publisher)
    finally:
        await node.stop()


async def test_audio_that_stops_mid_session_is_a_named_audio_gap(
    tmp_path: Path, rtsp_camera: Any
) -> None:
    camera = await asyncio.to_thread(
        rtsp_camera, audio="pcma", size="320x180", audio_stop_after=5.0
    )
    node = await start_platform(
        tmp_path, **{"security.open": True, "recorder.segment_target_s": 2.0}
    )
    try:
        await define(
            node,
            "cam",
            room="r1",
            court="c1",
            source_url=camera.url,
            stream_class=StreamClass.conference,
            public=True,
        )
        await wait_live(node, "cam", timeout=15)
        async with httpx.AsyncClient(base_url=f"{base_url(node)}/api/v1", timeout=30) as http:
            sid = await session(http, "r1")
            await asyncio.sleep(8)  # the audio stops ~5 s after the camera's stream started
            record = await close_and_fetch(node, http, sid)
        manifest = record["manifest"]
        [gap] = manifest["audio_gaps"]
        assert gap["cause"] == "audio-lost" and "no audio" in gap["reason"]
        assert gap["end"] - gap["start"] >= 2.0, gap
        assert manifest["gaps"] == []  # the picture went on: no gap in the recording itself
        verified = await http_verify(node, record["id"])
        assert verified["ok"], verified
    finally:
        await node.stop()


async def http_verify(node: Platform, rid: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"{base_url(node)}/api/v1", timeout=30) as http:
        return dict((await http.get(f"/recordings/{rid}/verify")).json())


async def test_a_dropped_track_is_listed_and_raises_one_alert(
    tmp_path: Path, rtsp_camera: Any
) -> None:
    """A camera with a second microphone track: the first (G.711 A-law) is carried as AAC,
    the second is listed as dropped with its reason, and one track-dropped alert says so
    (not one per stats tick)."""
    camera = await asyncio.to_thread(rtsp_camera, audio="pcma+pcmu", size="320x180")
    node = await start_platform(tmp_path, **{"security.open": True})
    try:
        await define(
            node,
            "cam",
            room="r1",
            court="c1",
            source_url=camera.url,
            stream_class=StreamClass.conference,  # anonymous callers may read its stats
            public=True,
        )
        await wait_live(node, "cam", timeout=15)
        async with httpx.AsyncClient(base_url=f"{base_url(node)}/api/v1", timeout=30) as http:
            tracks = await source_tracks(http, "cam")
        assert [(t["kind"], t["codec"], t["state"]) for t in tracks] == [
            ("video", "h264", "carried"),
            ("audio", "pcma", "transcoded from pcma"),
            ("audio", "pcmu", "dropped: a second audio track (the first is carried)"),
        ]
        await asyncio.sleep(3)  # three more stats ticks: still one alert
        state = node.roles[0].state  # type: ignore[attr-defined]
        alerts = [a for _, a in await state.read_events("alerts")]
        dropped = [a for a in alerts if a["kind"] == "track-dropped"]
        assert len(dropped) == 1, alerts
        assert (dropped[0]["stream"], dropped[0]["track"], dropped[0]["codec"]) == (
            "cam",
            "audio",
            "pcmu",
        )
        assert "a second audio track" in dropped[0]["message"], dropped[0]
    finally:
        await node.stop()
