"""RTMP play: ffmpeg plays from the GOP cache and decodes from the first packet; a player
that stops reading is dropped without slowing anyone; PlayOut from hub items."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from media_server.hub import Hub
from media_server.media import Packet, Skipped, StreamStart, Track
from media_server.rtmp import amf0, flv
from media_server.rtmp.chunk import AUDIO, DATA_AMF0, VIDEO
from media_server.rtmp.play import PlayOut
from media_server.rtmp.server import RtmpLimits, RtmpServer
from tests.fixtures.rtmp import FfmpegRunner, RawRtmpClient, push_args, wait_for
from tests.media_server.test_rtmp_flv import ASC_48K_MONO, AVCC_320


async def test_ffmpeg_plays_from_the_gop_cache_and_decodes(
    rtmp_server: RtmpServer, rtmp_media: dict[str, Path], rtmp_ffmpeg: FfmpegRunner, tmp_path: Path
) -> None:
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/live/hall?key=k"
    await rtmp_ffmpeg.start(*push_args(rtmp_media["bf"], url, realtime=True, loop=True))
    hub = rtmp_server.hub
    await wait_for(lambda: (s := hub.find("hall")) is not None and len(s.gop()) > 15)
    out = tmp_path / "played.flv"
    rc, _, err = await rtmp_ffmpeg.run(
        "-v", "error", "-i", url, "-c", "copy", "-frames:v", "30", "-f", "flv", str(out)
    )
    assert rc == 0, err
    rc, text, err = await rtmp_ffmpeg.run(
        "-v",
        "error",
        "-show_entries",
        "packet=codec_type,dts,flags:stream=codec_name,width,height",
        "-of",
        "json",
        str(out),
        tool="ffprobe",
    )
    assert rc == 0, err
    info = json.loads(text)
    assert {(s["codec_name"], s.get("width")) for s in info["streams"]} == {
        ("h264", 320),
        ("aac", None),
    }
    video = [p for p in info["packets"] if p["codec_type"] == "video"]
    assert len(video) == 30 and "K" in video[0]["flags"]
    assert 0 <= int(info["packets"][0]["dts"]) < 200, "player clock starts near 0"
    # every frame decodes, the first one included, with no decoder complaint
    rc, text, err = await rtmp_ffmpeg.run(
        "-v",
        "error",
        "-select_streams",
        "v",
        "-show_entries",
        "frame=key_frame,pict_type",
        "-of",
        "csv",
        str(out),
        tool="ffprobe",
    )
    assert rc == 0 and not err.strip(), err
    frames = text.split()
    assert len(frames) == 30 and frames[0].startswith("frame,1,I")
    rc, _, err = await rtmp_ffmpeg.run(
        "-v", "error", "-i", url, "-frames:v", "20", "-f", "null", "-"
    )
    assert rc == 0 and not err.strip(), err
    assert rtmp_server.stats.bytes_out > 50_000


async def test_player_that_stops_reading_is_dropped_alone(
    rtmp_media: dict[str, Path], rtmp_ffmpeg: FfmpegRunner
) -> None:
    server = RtmpServer(Hub(), "127.0.0.1", 0, limits=RtmpLimits(write_timeout=0.5))
    await server.start()
    try:
        stalled = await RawRtmpClient.connect(server.port, rcvbuf=4096)
        await stalled.play("flood")
        await wait_for(lambda: server.stats.playing == 1)
        watcher = server.hub.subscribe("flood", "test", max_packets=1_000_000)
        url = f"rtmp://127.0.0.1:{server.port}/live/flood"
        pub = await rtmp_ffmpeg.start(*push_args(rtmp_media["bf"], url, loop=True))
        await wait_for(lambda: server.stats.playing == 0, timeout=20)
        before = watcher.queued
        await wait_for(lambda: watcher.queued > before + 1000)  # the publisher never waited
        assert pub.returncode is None
        await rtmp_ffmpeg.stop(pub)
        await stalled.close()
    finally:
        await server.stop()


# -- PlayOut from hub items --

VIDEO_TRACK = flv.video_track(0, "h264", AVCC_320)
AUDIO_TRACK = flv.audio_track(1, ASC_48K_MONO)


def recorder() -> tuple[PlayOut, list[tuple[int, int, bytes]]]:
    sent: list[tuple[int, int, bytes]] = []
    out = PlayOut(
        lambda csid, type_id, ts, payload, prefix: sent.append(
            (type_id, ts, prefix + bytes(payload))
        )
    )
    return out, sent


def media(sent: list[tuple[int, int, bytes]]) -> list[tuple[str, int, int]]:
    """(kind, timestamp, flv packet type) of the audio/video messages sent."""
    return [
        ("v" if t == VIDEO else "a", ts, body[1]) for t, ts, body in sent if t in (VIDEO, AUDIO)
    ]


def test_start_sends_metadata_and_sequence_headers_then_rebased_packets() -> None:
    out, sent = recorder()
    out.handle(StreamStart((VIDEO_TRACK, AUDIO_TRACK), 1))
    out.handle(Packet(1, 9_980, 9_980, True, b"early audio"))  # before the keyframe
    out.handle(Packet(0, 10_000, 10_067, True, b"key"))
    out.handle(Packet(1, 10_001, 10_001, True, b"aac"))
    out.handle(Packet(0, 10_033, 10_033, False, b"p"))
    assert sent[0][0] == DATA_AMF0 and amf0.decode(sent[0][2])[0] == "onMetaData"
    assert media(sent) == [("v", 0, 0), ("a", 0, 0), ("v", 0, 1), ("a", 1, 1), ("v", 33, 1)]
    key = flv.parse_video(sent[3][2])
    assert (key.keyframe, key.cto, bytes(key.data)) == (True, 67, b"key")


def test_skip_waits_for_the_next_keyframe() -> None:
    out, sent = recorder()
    out.handle(StreamStart((VIDEO_TRACK,), 1))
    out.handle(Packet(0, 0, 0, True, b"k"))
    out.handle(Skipped(50))
    out.handle(Packet(0, 2000, 2000, False, b"p"))
    out.handle(Packet(0, 2033, 2033, True, b"k2"))
    assert media(sent)[1:] == [("v", 0, 1), ("v", 2033, 1)]


def test_new_publisher_does_not_turn_the_clock_back() -> None:
    out, sent = recorder()
    out.handle(StreamStart((VIDEO_TRACK,), 1))
    out.handle(Packet(0, 50_000, 50_000, True, b"k"))
    out.handle(Packet(0, 55_000, 55_000, False, b"p"))
    out.handle(StreamStart((VIDEO_TRACK,), 2))
    out.handle(Packet(0, 0, 0, True, b"k"))
    out.handle(Packet(0, 40, 40, False, b"p"))
    assert [ts for kind, ts, ptype in media(sent) if ptype == 1] == [0, 5000, 5000, 5040]


def test_other_timescales_are_converted_and_opus_is_left_out() -> None:
    out, sent = recorder()
    rtp_video = Track(0, "video", "h264", 90000, AVCC_320, 320, 240)
    opus = Track(1, "audio", "opus", 48000, b"OpusHead")
    out.handle(StreamStart((rtp_video, opus), 1))
    out.handle(Packet(0, 90_000, 93_000, True, b"k"))
    out.handle(Packet(1, 48_000, 48_000, True, b"opus"))
    out.handle(Packet(0, 93_000, 93_000, False, b"p"))
    assert media(sent) == [("v", 0, 0), ("v", 0, 1), ("v", 33, 1)]
    assert flv.parse_video(sent[2][2]).cto == 33


async def test_player_waiting_before_the_publisher_gets_the_stream(
    rtmp_server: RtmpServer, rtmp_media: dict[str, Path], rtmp_ffmpeg: FfmpegRunner
) -> None:
    url = f"rtmp://127.0.0.1:{rtmp_server.port}/live/later"
    player = await rtmp_ffmpeg.start("-v", "error", "-i", url, "-frames:v", "15", "-f", "null", "-")
    await wait_for(lambda: rtmp_server.stats.playing == 1)
    await rtmp_ffmpeg.start(*push_args(rtmp_media["nobf"], url, realtime=True, loop=True))
    _, err = await asyncio.wait_for(player.communicate(), 20)
    assert player.returncode == 0 and not err.strip(), err
