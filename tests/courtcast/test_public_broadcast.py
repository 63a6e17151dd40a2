"""The public sees a trial only through its delayed public rendition, while a session
approved for broadcast is open in its room (issue 16, items 2, 3 and 7): the live stream
itself is never public, unknown and private things answer 404 alike, a cut shows a slate
and nothing captured in the held window or the cut reaches a public URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from courtcast.platform import Platform
from tests.courtcast.test_platform import (
    base_url,
    cancel,
    define,
    media_role,
    push,
    start_platform,
    wait_live,
)
from tests.fixtures.rtmp import RawRtmpClient
from tests.media_server.test_webrtc_http import open_viewer
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    node = await start_platform(tmp_path)
    yield node
    await node.stop()


async def rtmp_play_bytes(node: Platform, name: str, seconds: float = 3.0) -> int:
    """What an anonymous RTMP player receives in a few seconds (media is tens of kB)."""
    client = await RawRtmpClient.connect(media_role(node).rtmp_port)
    received = 0
    try:
        await client.play(name)
        async with asyncio.timeout(seconds):
            while chunk := await client.reader.read(65536):
                received += len(chunk)
    except TimeoutError:
        pass
    finally:
        await client.close()
    return received


async def test_the_live_trial_stream_is_never_public(platform: Platform, tmp_path: Path) -> None:
    """The `public` flag of a trial stream means "may be broadcast": /live/, WHEP and RTMP
    play still need a signed-in operator or a play token (today they served anyone)."""
    clip = make_clip(tmp_path, seconds=20, fps=25, gop=25)
    key = await define(platform, "court-p", public=True, room="r-p")
    url = f"rtmp://127.0.0.1:{media_role(platform).rtmp_port}/live/court-p?key={key}"
    publisher = asyncio.create_task(push(clip, url))
    try:
        await wait_live(platform, "court-p")
        async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
            hls = await http.get("/live/court-p/index.m3u8")
        assert hls.status_code == 404, hls.text[:200]
        viewer = await open_viewer(base_url(platform), "court-p")
        await viewer.pc.close()
        assert viewer.response.status_code == 404, viewer.response.text[:200]
        assert await rtmp_play_bytes(platform, "court-p") < 5_000
    finally:
        await cancel(publisher)
