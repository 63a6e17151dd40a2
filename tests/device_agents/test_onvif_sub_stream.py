"""The agent's `sub-stream-h264` command against a real ONVIF camera (ipycam's ONVIF service
with settable video encoders, tests/fixtures/onvif_encoders.py).

The camera's second profile starts as a JPEG sub stream; the command must leave it H.264
without B-frames (Baseline, else Main) with a 2 s GOP, as the camera itself then reports over
ONVIF to another client, the main profile untouched, and the agent's sub feed re-opened once.
A camera that cannot or will not (one profile, only High offered, a locked encoder, a wrong
password) answers an error an operator can read, and its sub stream stays as it was.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from device_agents.commands import run_command
from device_agents.protocol import Command
from device_agents.sources import Feed
from media_server.hub import Hub

pytestmark = pytest.mark.timeout(60)


async def _encoders(port: int, user: str, password: str) -> list[tuple[str, Any, Any]]:
    """(profile name, encoding, H264 element) of each profile, as the camera reports it to an
    ONVIF client of its own (the same library the agent uses, a separate session)."""
    from onvif import ONVIFCamera

    camera = ONVIFCamera("127.0.0.1", port, user, password)
    try:
        await camera.update_xaddrs()
        media = await camera.create_media_service()
        profiles = await media.GetProfiles()
        return [
            (p.Name, p.VideoEncoderConfiguration.Encoding, p.VideoEncoderConfiguration.H264)
            for p in profiles
        ]
    finally:
        await camera.close()


def _agent(onvif_url: str | None, sub: Feed | None = None) -> Any:
    """All that run_command's handler reads of an agent: its units, their config and feeds."""
    feeds = {"sub": sub} if sub else {}
    unit = SimpleNamespace(name="cam", config=SimpleNamespace(onvif_url=onvif_url), feeds=feeds)
    return SimpleNamespace(units={"cam": unit})


def _command(n: int) -> Command:
    return Command(id=f"s{n}", name="sub-stream-h264", args={"source": "cam"})


@pytest.mark.parametrize(
    ("offered", "chosen"), [("Baseline,Main,High", "Baseline"), ("Main,High", "Main")]
)
async def test_sub_stream_becomes_h264_without_b_frames(
    onvif_camera: Any, offered: str, chosen: str
) -> None:
    cam = await asyncio.to_thread(onvif_camera, user="tech", password="p@ss", h264_profiles=offered)
    endpoint = f"http://tech:p%40ss@127.0.0.1:{cam.port}"
    before = await _encoders(cam.port, "tech", "p@ss")
    assert [(name, encoding) for name, encoding, _ in before] == [
        ("MainStream", "H264"),
        ("SubStream", "JPEG"),
    ]
    # the agent's sub feed: a real Feed (its camera URL answers nothing; only re-opens count)
    sub = Feed(Hub(), "cam", "sub", "rtsp", "rtsp://127.0.0.1:9/sub", timeout_s=1)
    try:
        result = await run_command(_agent(endpoint, sub), _command(1))
        assert result.ok, result.error
        assert result.data == {
            "profile": "SubStream",
            "encoding": "H264",
            "h264_profile": chosen,
            "resolution": "640x480",  # the camera offers its current size for H.264: kept
            "fps": 15,
            "gov_length": 30,  # a keyframe every 2 s at 15 fps
            "changed": True,
        }
        assert sub.restarts == 1

        main, after = (await _encoders(cam.port, "tech", "p@ss"))[:2]
        assert main == before[0]  # the main stream's encoder is untouched
        assert after[1] == "H264"
        assert (after[2].H264Profile, after[2].GovLength) == (chosen, 30)

        again = await run_command(_agent(endpoint, sub), _command(2))
        assert again.ok and again.data["changed"] is False, again
        assert sub.restarts == 1  # nothing changed, so the feed was not re-opened
    finally:
        await sub.stop()


@pytest.mark.parametrize(
    ("camera", "error"),
    [
        ({"profiles": 1}, "has no second media profile (its profiles: 'MainStream')"),
        (
            {"h264_profiles": "High"},
            "offers H.264 on its sub stream only as High;"
            " a wall tile needs Baseline or Main (no B-frames)",
        ),
        (
            {"read_only": True},
            "refused H.264 on its sub stream: encoder configurations are locked on this camera",
        ),
    ],
)
async def test_a_camera_that_cannot_says_why(
    onvif_camera: Any, camera: dict[str, Any], error: str
) -> None:
    cam = await asyncio.to_thread(onvif_camera, user="tech", password="pw", **camera)
    result = await run_command(_agent(cam.endpoint), _command(3))
    assert not result.ok
    assert result.error == f"ONVIF camera 127.0.0.1:{cam.port} {error}"
    encodings = [encoding for _, encoding, _ in await _encoders(cam.port, "tech", "pw")]
    assert encodings == ["H264", "JPEG"][: len(encodings)]  # nothing changed


async def test_wrong_password_and_no_endpoint_are_clear_errors(onvif_camera: Any) -> None:
    cam = await asyncio.to_thread(onvif_camera, user="tech", password="right")
    wrong = await run_command(_agent(f"http://tech:wrong@127.0.0.1:{cam.port}"), _command(4))
    assert not wrong.ok
    assert wrong.error.startswith(
        f"ONVIF camera 127.0.0.1:{cam.port} refused user 'tech' (wrong user or password?)"
    ), wrong.error
    assert [e for _, e, _ in await _encoders(cam.port, "tech", "right")] == ["H264", "JPEG"]

    none = await run_command(_agent(None), _command(5))
    assert (none.ok, none.error) == (False, "camera has no ONVIF endpoint")
