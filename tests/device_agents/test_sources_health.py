"""A camera with the wrong password, and one that is not there: each source is down with
a reason a technician can act on, keeps retrying, and nothing else is disturbed."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from device_agents.agent import Agent
from device_agents.sources import classify
from tests.device_agents.helpers import agent_config, source, until
from tests.fixtures.rtsp_camera import free_port

pytestmark = pytest.mark.timeout(60)


async def test_wrong_password_and_unreachable_camera_are_down_with_reasons(
    tmp_path: Path, rtsp_camera: Any
) -> None:
    camera = await asyncio.to_thread(rtsp_camera, user="admin", password="Hunter2pw")
    wrong = camera.url.replace("admin:Hunter2pw@", "admin:Wrong7pw@")
    nowhere = f"rtsp://127.0.0.1:{free_port()}/cam"
    config = agent_config(
        tmp_path,
        free_port(),
        {
            "locked": source("rtsp", wrong, ("c-r-locked", "k1")),
            "gone": source("rtsp", nowhere, ("c-r-gone", "k2")),
            "fine": source("rtsp", camera.url, ("c-r-fine", "k3")),
        },
    )
    agent = Agent(config, link=False)
    await agent.start()
    try:
        await until(lambda: agent.units["locked"].health().state == "down", 15)
        await until(
            lambda: agent.units["gone"].health().reconnects >= 2,
            15,
            "the unreachable camera is retried",
        )
        await until(lambda: agent.units["fine"].health().state == "up", 15)
        beat = agent.heartbeat()
    finally:
        await agent.stop()
    health = {s.name: s for s in beat.sources}
    assert health["locked"].reason == "wrong credentials"
    assert "Hunter2pw" not in beat.model_dump_json() and "Wrong7pw" not in beat.model_dump_json()
    assert health["gone"].state == "down" and health["gone"].reason.startswith("unreachable")
    # the good camera is up; nobody listens on its RTMP port, and it says so
    assert health["fine"].state == "up" and "uplink down" in health["fine"].reason
    assert beat.spool_limit_bytes == 1 << 30


async def test_a_source_in_an_unsupported_codec_is_down_and_says_which(tmp_path: Path) -> None:
    # MPEG-4 Part 2, as older cameras and encoders send: courtcast never transcodes, so the
    # technician must be told to switch the camera to H.264/H.265
    clip = tmp_path / "old.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "2",
            "-c:v",
            "mpeg4",
            str(clip),
        ],
        check=True,
        timeout=60,
    )
    config = agent_config(
        tmp_path, free_port(), {"old": source("file", str(clip), ("c-r-old", "k1"))}
    )
    agent = Agent(config, link=False)
    await agent.start()
    try:
        await until(lambda: agent.units["old"].health().state == "down", 20)
        health = agent.heartbeat().sources[0]
    finally:
        await agent.stop()
    assert health.reason == "unsupported codec mpeg4", health


def test_reasons_are_classified() -> None:
    assert (
        classify("unauthorized: check the user name and password in the source URL")
        == "wrong credentials"
    )
    assert classify("no H.264/H.265 video track (video found: mjpeg)") == "unsupported codec mjpeg"
    assert classify("connection refused: is the camera up, and is the port right?").startswith(
        "unreachable"
    )
    assert classify("no answer within 5 s (timeout)").startswith("unreachable")


async def test_health_lists_each_source_track_with_its_state(
    tmp_path: Path, rtsp_camera: Any
) -> None:
    """A camera with H.264, G.711 A-law and a second microphone track: the heartbeat says
    the video is carried, the A-law transcoded, the second track dropped and why."""
    camera = await asyncio.to_thread(rtsp_camera, audio="pcma+pcmu", size="320x180")
    config = agent_config(
        tmp_path, free_port(), {"bench": source("rtsp", camera.url, ("c-r-bench", "k1"))}
    )
    agent = Agent(config, link=False)
    await agent.start()
    try:
        await until(lambda: agent.units["bench"].health().tracks, 15, "tracks in the health")
        health = agent.heartbeat().sources[0]
    finally:
        await agent.stop()
    assert [(t.kind, t.codec, t.state) for t in health.tracks] == [
        ("video", "h264", "carried"),
        ("audio", "pcma", "transcoded from pcma"),
        ("audio", "pcmu", "dropped: a second audio track (the first is carried)"),
    ]
