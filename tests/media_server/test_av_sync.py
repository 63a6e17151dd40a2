"""Clocks as cameras send them: audio that starts later than the video (RTSP, timed by RTCP
sender reports / RTP-Info) and FLV audio stamped from a clock far off the video's (cheap
encoders) come out of LL-HLS in sync within one frame (ffprobe start times of the fMP4)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from media_server.hls.segmenter import Segmenter
from media_server.hub import Hub
from media_server.media import Packet, StreamStart
from media_server.rtmp.server import RtmpServer
from media_server.rtsp.pull import RtspPull
from tests.fixtures.rtmp import RawRtmpClient
from tests.fixtures.rtsp_camera import RtspCamera
from tests.media_server.media_check import collect, decode_errors, probe, write_ll_hls
from tests.mediafiles import load_clip

pytestmark = pytest.mark.timeout(90)


def ll_hls_audio_lead(items: tuple[list[StreamStart], list[Packet]], path: Path) -> float:
    """Seconds from the first video frame to the first audio frame in the LL-HLS made of
    one publication's items (its tracks announced once)."""
    starts, packets = items
    segmenter = Segmenter()
    segmenter.feed(next(s for s in starts if s.tracks))
    for packet in packets:
        segmenter.feed(packet)
    segmenter.end_run()
    write_ll_hls(segmenter, path)
    info = probe(path)
    assert decode_errors(path) == ""
    assert int(str(info["audio"]["nb_read_frames"])) > 50
    return float(str(info["audio"]["start_time"])) - float(str(info["video"]["start_time"]))


@pytest.mark.parametrize("audio_shift_ms", [0, 30_000, -4_000])
async def test_flv_audio_clock_apart_is_in_sync(
    audio_shift_ms: int, rtmp_server: RtmpServer, rtmp_media: dict[str, Path], tmp_path: Path
) -> None:
    tracks, packets = load_clip(rtmp_media["nobf"])  # audio and video both start at 0
    sub = rtmp_server.hub.subscribe("sync", "test", max_packets=100_000)
    client = await RawRtmpClient.connect(rtmp_server.port)
    try:
        await client.publish("sync")
        await client.send_clip(tracks, packets, audio_shift_ms)
    finally:
        await client.close()
    items = await collect(sub, 1.0)
    lead = ll_hls_audio_lead(items, tmp_path / "ll.mp4")
    # the clip's audio frames (21 ms apart) start with its video: within one frame (33 ms)
    assert -0.002 <= lead < 1 / 30, f"audio starts {lead:+.3f} s from the video"


@pytest.mark.serial  # live capture timed to a frame
@pytest.mark.parametrize("rtp_info", [True, False], ids=["rtp-info", "no-rtp-info"])
async def test_rtsp_audio_starting_late_stays_late_by_as_much(
    rtp_info: bool, rtsp_camera: Callable[..., RtspCamera], tmp_path: Path
) -> None:
    # same clock, audio joins 1 s in. Before a track's first RTCP sender report FFmpeg
    # times it from RTP-Info, or without it (cheap cameras) from its first packet: the
    # audio at 0.000 s; at a report FFmpeg remaps the tracks, which jump (measured ~1 s)
    camera = rtsp_camera(audio_delay_ms=1000, rtp_info=rtp_info)
    hub = Hub()
    sub = hub.subscribe("cam", "test", max_packets=100_000)
    pull = RtspPull(hub, "cam", camera.url, timeout_s=3.0)
    pull.start()
    try:
        items = await collect(sub, 7.0)  # audio is held until its first report (~1-5 s)
    finally:
        await pull.stop()
    tracks = next(s for s in items[0] if s.tracks).tracks
    for track in tracks:
        times = [p.dts / track.timescale for p in items[1] if p.track == track.index]
        jumps = [round(b - a, 3) for a, b in zip(times, times[1:], strict=False) if b - a > 0.1]
        assert not jumps, f"{track.kind} timeline jumps {jumps} s (its clock was remapped)"
    lead = ll_hls_audio_lead(items, tmp_path / "ll.mp4")
    assert abs(lead - 1.0) < 1 / 25, f"audio starts {lead:.3f} s after the video, not 1.000"
