"""Test media: real H.264/H.265 + AAC/Opus clips made with the ffmpeg CLI, turned into the
media model (tracks, packets) and published into a Hub.

    clip = make_clip(tmp_path, seconds=4, fps=30, gop=30, bframes=2)
    tracks, packets = load_clip(clip)
    await publish(hub, "room-1", tracks, packets, realtime=True)

MP4 already holds what the media model carries: avcC/hvcC extradata and length-prefixed
(AVCC) video, the AudioSpecificConfig (or OpusHead) as audio extradata, and raw audio
frames, so no conversion is needed.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Literal, cast

import av
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from media_server.hub import Hub, Publication
from media_server.media import Codec, Packet, Track

VIDEO_ENCODERS = {"h264": "libx264", "h265": "libx265"}
AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus"}


def make_clip(
    directory: Path,
    seconds: float = 4.0,
    fps: int = 30,
    gop: int = 30,
    bframes: int = 0,
    size: tuple[int, int] = (320, 240),
    video: Literal["h264", "h265"] | None = "h264",
    audio: Literal["aac", "opus"] | None = "aac",
    sample_rate: int = 48000,
) -> Path:
    """Encode a test pattern (testsrc2) and a 440 Hz tone into an MP4; returns its path.

    gop is the keyframe interval in frames (fixed: no scene-cut keyframes); bframes > 0
    gives pts != dts. The file name says the settings, so a second call reuses it.
    """
    name = f"clip-{video}-{audio}-{seconds}s-{fps}fps-g{gop}-b{bframes}-{size[0]}x{size[1]}.mp4"
    out = directory / name
    if out.exists():
        return out
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}:rate={fps}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}"]
    cmd += ["-t", str(seconds)]
    if video:
        cmd += [
            "-c:v",
            VIDEO_ENCODERS[video],
            "-pix_fmt",
            "yuv420p",
            "-preset",
            "ultrafast",
            "-g",
            str(gop),
            "-keyint_min",
            str(gop),
            "-bf",
            str(bframes),
        ]
        if video == "h264":
            cmd += ["-sc_threshold", "0"]
        else:
            cmd += [
                "-x265-params",
                f"scenecut=0:bframes={bframes}:log-level=error",
                "-tag:v",
                "hvc1",
            ]
    if audio:
        cmd += ["-c:a", AUDIO_ENCODERS[audio], "-b:a", "64k", "-ac", "1"]
    subprocess.run([*cmd, str(out)], check=True, timeout=60)
    return out


def load_clip(path: Path) -> tuple[tuple[Track, ...], list[Packet]]:
    """Demux an MP4 (no decoding) into tracks and packets in the media model; timestamps
    stay in each track's MP4 timescale. Packets keep the file's interleaving."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        tracks = tuple(_track(i, s) for i, s in enumerate(streams))
        index = {s.index: i for i, s in enumerate(streams)}
        packets = [
            Packet(index[p.stream.index], p.dts, p.pts, p.is_keyframe, bytes(p), arrival=0.0)
            for p in container.demux(streams)
            if p.size and p.dts is not None and p.pts is not None
        ]
    return tracks, packets


def _track(i: int, stream: av.stream.Stream) -> Track:
    time_base = stream.time_base
    assert time_base is not None and time_base.numerator == 1, time_base
    name = {"hevc": "h265"}.get(stream.codec_context.name, stream.codec_context.name)
    assert name in ("h264", "h265", "aac", "opus"), f"no media model codec for {name}"
    codec = cast(Codec, name)
    config = bytes(stream.codec_context.extradata or b"")
    if isinstance(stream, VideoStream):
        video = stream.codec_context
        return Track(
            i, "video", codec, time_base.denominator, config, width=video.width, height=video.height
        )
    assert isinstance(stream, AudioStream)
    audio = stream.codec_context
    return Track(
        i,
        "audio",
        codec,
        time_base.denominator,
        config,
        sample_rate=audio.sample_rate,
        channels=audio.channels,
    )


def shifted(packets: list[Packet], tracks: tuple[Track, ...], seconds: float) -> list[Packet]:
    """Copies of the packets moved `seconds` later (to loop a clip)."""
    return [
        replace(
            p,
            dts=p.dts + round(seconds * tracks[p.track].timescale),
            pts=p.pts + round(seconds * tracks[p.track].timescale),
        )
        for p in packets
    ]


async def publish(
    hub: Hub,
    stream_id: str,
    tracks: tuple[Track, ...],
    packets: list[Packet],
    realtime: bool = True,
    close: bool = True,
    publication: Publication | None = None,
) -> Publication:
    """Publish packets into the hub as an ingest would: paced by dts when realtime (each
    packet pushed when its time has come, arrival stamped then), else as fast as possible
    (yielding to the loop now and then). Closes the publication at the end if close."""
    pub = publication or hub.publish(stream_id, tracks, "test")
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = min((p.dts / tracks[p.track].timescale for p in packets), default=0.0)
    for n, p in enumerate(packets):
        if realtime:
            delay = start + p.dts / tracks[p.track].timescale - first - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        elif n % 50 == 0:
            await asyncio.sleep(0)
        p.arrival = time.time()
        pub.push(p)
    if close:
        pub.close("clip ended")
    return pub


def looped(
    tracks: tuple[Track, ...], packets: list[Packet], seconds: float, times: int
) -> list[Packet]:
    """The clip repeated `times` times back to back, each copy trimmed to presentation
    times in [0, seconds) so that every track's dts keeps increasing across copies."""
    one = [p for p in packets if 0 <= p.pts / tracks[p.track].timescale < seconds]
    return [q for k in range(times) for q in shifted(one, tracks, k * seconds)]
