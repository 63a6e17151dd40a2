"""HEVC over Enhanced RTMP with a real peer (PyAV's FFmpeg writes FourCC 'hvc1' tags):
LL-HLS carries it as 'hvc1' and it decodes; an RTMP player gets HEVC back the same way;
AV1 ('av01') is refused with what to send instead."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from media_server.hls.output import HlsOptions, HlsOutputs
from media_server.rtmp.server import RtmpServer
from tests.fixtures.rtmp import wait_for
from tests.media_server.media_check import decode_errors, probe, write_ll_hls

pytestmark = pytest.mark.timeout(90)


async def peer(*args: str) -> asyncio.subprocess.Process:
    """The PyAV peer in its own process (PyAV blocks with the GIL held)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.media_server.ertmp_peer",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(proc: asyncio.subprocess.Process, timeout: float = 40) -> tuple[int, str]:
    _, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode or 0, err.decode(errors="replace")


async def test_hevc_over_enhanced_rtmp_is_hvc1_in_ll_hls(
    rtmp_server: RtmpServer, tmp_path: Path
) -> None:
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/live/hevc"
    publisher = await peer("publish", url, "5")
    hub = rtmp_server.hub
    outputs = HlsOutputs(hub, HlsOptions(idle_timeout_s=60))
    try:
        await wait_for(lambda: (s := hub.find("hevc")) is not None and bool(s.tracks))
        output = outputs.get("hevc")
        assert output is not None
        rc, err = await finished(publisher)
        assert rc == 0, err
        await wait_for(lambda: not output.segmenter.live)
        path = write_ll_hls(output.segmenter, tmp_path / "ll-hls.mp4")
    finally:
        await outputs.close()
    info = probe(path)
    assert (info["video"]["codec_name"], info["video"]["codec_tag_string"]) == ("hevc", "hvc1")
    assert (info["video"]["width"], info["video"]["height"]) == (320, 240)
    assert int(str(info["video"]["nb_read_frames"])) >= 100  # of 125 sent
    assert info["audio"]["codec_name"] == "aac"
    assert decode_errors(path) == ""


async def test_rtmp_play_gives_hevc_back(rtmp_server: RtmpServer, tmp_path: Path) -> None:
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/live/hevc"
    publisher = await peer("publish", url, "8")
    try:
        hub = rtmp_server.hub
        await wait_for(lambda: (s := hub.find("hevc")) is not None and len(s.gop()) > 20)
        played = tmp_path / "played.mp4"
        rc, err = await finished(await peer("play", url, str(played), "50"))
        assert rc == 0, err
    finally:
        if publisher.returncode is None:
            publisher.kill()
        await publisher.wait()
    info = probe(played)
    assert (info["video"]["codec_name"], info["video"]["width"]) == ("hevc", 320)
    assert int(str(info["video"]["nb_read_frames"])) == 50
    assert info["audio"]["codec_name"] == "aac"
    assert decode_errors(played) == ""  # from the first frame: the player starts at a keyframe


async def test_av1_is_refused_with_what_to_send(rtmp_server: RtmpServer) -> None:
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/live/av1"
    rc, _ = await finished(await peer("publish", url, "2", "av1"))
    assert rc != 0  # the server closed the connection
    stream = rtmp_server.hub.find("av1")
    assert stream is not None and not stream.tracks
    reason = stream.last_end_reason
    assert "AV1" in reason and "send H.264 or H.265" in reason, reason
