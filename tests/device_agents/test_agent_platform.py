"""The agent against the real platform (in-process, as `courtcast up` runs it): a GStreamer
RTSP camera with a main and a sub stream is remuxed and published over RTMP with the keys
of the streams; both play over LL-HLS at their own sizes (checked by decoding), the local
ring records both, and snapshot / switch / a bad key behave."""

from __future__ import annotations

import asyncio
import base64
import io
from pathlib import Path
from typing import Any

import av
import httpx
import pytest

from device_agents.agent import Agent
from device_agents.protocol import Command
from media_server.streams import StreamClass
from tests.control_room.conftest import control as control_role
from tests.courtcast.test_audio_sources import close_and_fetch, session, source_tracks
from tests.courtcast.test_platform import (
    base_url,
    define,
    media_role,
    record_hls,
    start_platform,
    stream_info,
)
from tests.device_agents.helpers import agent_config, decode_ring, source, until

pytestmark = pytest.mark.timeout(90)


async def test_main_and_sub_play_over_ll_hls_and_commands_work(
    tmp_path: Path, rtsp_camera: Any
) -> None:
    camera = await asyncio.to_thread(
        rtsp_camera, user="clerk", password="pw", size="640x360", sub_size="320x180"
    )
    node = await start_platform(tmp_path)
    agent: Agent | None = None
    try:
        main_key = await define(node, "c-r-cam", stream_class=StreamClass.conference, public=True)
        sub_key = await define(
            node, "c-r-cam-sub", stream_class=StreamClass.conference, public=True
        )
        await define(node, "c-r-bad", stream_class=StreamClass.conference, public=True)
        config = agent_config(
            tmp_path,
            media_role(node).rtmp_port,
            {
                "cam": source(
                    "rtsp",
                    camera.url,
                    ("c-r-cam", main_key),
                    ("c-r-cam-sub", sub_key),
                    camera.sub_url,
                ),
                "bad": source("test", "test:160x120", ("c-r-bad", "not-the-key")),
            },
        )
        agent = Agent(config, link=False)
        await agent.start()
        hub = media_role(node).hub
        for stream_id in ("c-r-cam", "c-r-cam-sub"):
            await until(
                lambda s=stream_id: (st := hub.find(s)) is not None and st.live and st.tracks,
                20,
                f"{stream_id} live on the server",
            )
        for stream_id, size in (("c-r-cam", (640, 360)), ("c-r-cam-sub", (320, 180))):
            info = await record_hls(
                f"{base_url(node)}/live/{stream_id}/index.m3u8", tmp_path / f"{stream_id}.mp4", 2
            )
            video = stream_info(info, "video")
            assert (video["width"], video["height"]) == size
            assert int(video["nb_read_frames"]) >= 40  # 2 s at 25 fps, decoded
            assert stream_info(info, "audio")["codec_name"] == "aac"

        # a wrong key is refused by the server and shown as such, retried slowly
        bad = agent.units["bad"].health()
        assert bad.state == "up" and bad.reason.startswith("publish refused:"), bad
        assert not bad.publishing

        # snapshot: a JPEG of the camera's size, from one decoded keyframe
        result = await agent.handle(Command(id="1", name="snapshot", args={"source": "cam"}))
        assert result.ok, result.error
        jpeg = base64.b64decode(result.data["jpeg_b64"])
        with av.open(io.BytesIO(jpeg)) as image:
            frame = next(image.decode(video=0))
        assert (
            (frame.width, frame.height)
            == (640, 360)
            == (result.data["width"], result.data["height"])
        )

        # switch: the main stream id now carries the camera's sub stream
        result = await agent.handle(
            Command(id="2", name="switch", args={"source": "cam", "stream": "sub"})
        )
        assert result.ok and agent.units["cam"].health().active == "sub"
        await until(
            lambda: (st := hub.find("c-r-cam")).live and st.tracks and st.tracks[0].width == 320,
            15,
            "main stream id shows the sub feed",
        )

        health = agent.units["cam"].health()
        assert health.state == "up" and health.publishing and health.fps > 10
        assert health.bitrate_kbps > 50 and 0.5 <= health.keyframe_interval_s <= 1.5
        unknown = await agent.handle(Command(id="3", name="ptz", args={"preset": "1"}))
        assert not unknown.ok and "source" in unknown.error  # two sources: say which
        ptz = await agent.handle(Command(id="4", name="ptz", args={"source": "cam", "preset": "1"}))
        assert not ptz.ok and ptz.error == "camera has no ONVIF endpoint"
    finally:
        if agent is not None:
            await agent.stop()
        await node.stop()
    # the ring recorded both streams all along; every segment decodes
    frames, width, height = decode_ring(agent.ring, "c-r-cam-sub", tmp_path / "ring.mp4")
    assert (width, height) == (320, 180) and frames >= 50


async def test_a_pcma_camera_through_the_agent_is_recorded_naming_pcma(
    tmp_path: Path, rtsp_camera: Any
) -> None:
    """Camera -> agent -> server -> recording: the agent transcodes the camera's G.711
    A-law to AAC before RTMP and says so in onMetaData; the server's stats say the audio is
    transcoded from pcma, and the trial recording's manifest names pcma."""
    camera = await asyncio.to_thread(rtsp_camera, audio="pcma", size="320x180")
    node = await start_platform(tmp_path, **{"recorder.segment_target_s": 2.0})
    agent: Agent | None = None
    try:
        key = await define(node, "c-r-cam", room="r1", court="c1", public=True)
        config = agent_config(
            tmp_path,
            media_role(node).rtmp_port,
            {"cam": source("rtsp", camera.url, ("c-r-cam", key))},
        )
        agent = Agent(config, link=False)
        await agent.start()
        await control_role(node).users.add("ada", "admin", "correct horse battery")
        async with httpx.AsyncClient(base_url=f"{base_url(node)}/api/v1", timeout=30) as http:
            login = {"name": "ada", "password": "correct horse battery"}
            assert (await http.post("/login", json=login)).status_code == 200
            tracks = await source_tracks(http, "c-r-cam")
            assert [(t["kind"], t["codec"], t["state"]) for t in tracks] == [
                ("video", "h264", "carried"),
                ("audio", "aac", "transcoded from pcma"),
            ]
            sid = await session(http, "r1")
            await asyncio.sleep(5)
            record = await close_and_fetch(node, http, sid)
        init = record["manifest"]["inits"][0]
        assert "mp4a.40.2" in init["codecs"]
        assert init["audio_source"] == "pcma" and "AAC-LC" in init["audio_transcode"], init
    finally:
        if agent is not None:
            await agent.stop()
        await node.stop()
