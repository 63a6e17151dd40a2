"""A file played into the hub in real time, looping: a camera stand-in for tests, benches
and demos. The ffmpeg CLI makes a test clip (testsrc2 + a tone); PyAV demuxes it (MP4
gives avcC/hvcC and AVCC packets, as RTMP would), without decoding."""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av

from media_server.hub import Hub, Publication
from media_server.media import Codec, Packet, Track


def make_test_clip(
    path: Path,
    *,
    seconds: float = 4.0,
    width: int = 640,
    height: int = 360,
    fps: int = 30,
    gop: int = 30,
    video_codec: str = "libx264",
    audio: bool = True,
    bitrate: str = "800k",
) -> Path:
    """An MP4 with a moving test picture (no B-frames) and a 1 kHz tone in AAC."""
    video = ["-c:v", video_codec, "-g", str(gop), "-bf", "0", "-b:v", bitrate]
    if video_codec == "libx264":
        video += ["-profile:v", "baseline", "-tune", "zerolatency", "-preset", "veryfast"]
    elif video_codec == "libx265":
        video += ["-x265-params", "log-level=error:bframes=0", "-tag:v", "hvc1"]
    cmd = [
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size={width}x{height}:rate={fps}",
    ]
    if audio:
        cmd += ["-f", "lavfi", "-i", "sine=frequency=1000:sample_rate=48000"]
    cmd += ["-t", str(seconds), "-pix_fmt", "yuv420p", *video]
    cmd += ["-c:a", "aac", "-b:a", "96k", "-ac", "2"] if audio else []
    cmd += ["-movflags", "+faststart", str(path)]
    subprocess.run(cmd, check=True, timeout=120)
    return path


@dataclass
class Clip:
    tracks: tuple[Track, ...]
    packets: list[Packet]
    durations: tuple[int, ...]  # per track, in its timescale: the loop's period


def load_clip(path: Path) -> Clip:
    """Tracks and packets of a file, in file order, as the hub carries them."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        tracks = tuple(_track(i, s) for i, s in enumerate(streams))
        index = {s.index: i for i, s in enumerate(streams)}
        packets = [
            Packet(
                index[p.stream.index],
                p.dts,
                p.pts if p.pts is not None else p.dts,
                bool(p.is_keyframe),
                bytes(p),
            )
            for p in container.demux(streams)
            if p.size and p.dts is not None
        ]
    # one period for all tracks, so audio and video stay in step loop after loop
    period_s = max(_duration(t.index, packets) / t.timescale for t in tracks)
    return Clip(tracks, packets, tuple(round(period_s * t.timescale) for t in tracks))


CODECS: dict[str, Codec] = {"h264": "h264", "hevc": "h265", "aac": "aac", "opus": "opus"}


def _track(index: int, stream: av.stream.Stream) -> Track:
    ctx: Any = stream.codec_context
    base = stream.time_base
    timescale = base.denominator if base is not None and base.numerator == 1 else 90000
    codec = CODECS.get(ctx.name)
    if codec is None:
        raise ValueError(f"{ctx.name} is not a codec the hub carries ({', '.join(CODECS)})")
    config = bytes(ctx.extradata or b"")
    if stream.type == "video":
        return Track(index, "video", codec, timescale, config, width=ctx.width, height=ctx.height)
    return Track(
        index, "audio", codec, timescale, config, sample_rate=ctx.sample_rate, channels=ctx.channels
    )


def _duration(track: int, packets: list[Packet]) -> int:
    dts = [p.dts for p in packets if p.track == track]
    if len(dts) < 2:
        return 1
    return dts[-1] - dts[0] + (dts[-1] - dts[0]) // (len(dts) - 1)


class ClipPublisher:
    """Publishes a clip into a hub stream in real time, looping, until stopped."""

    def __init__(self, hub: Hub, stream_id: str, clip: Clip, source: str = "test clip") -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.clip = clip
        self.source = source
        self.publication: Publication | None = None
        self.loops = 0

    async def run(self) -> None:
        self.publication = self.hub.publish(self.stream_id, self.clip.tracks, self.source)
        start = time.monotonic()
        try:
            while True:
                await self._play_once(start)
                self.loops += 1
        finally:
            self.publication.close("test clip stopped")

    async def _play_once(self, start: float) -> None:
        assert self.publication is not None
        tracks, durations = self.clip.tracks, self.clip.durations
        for packet in self.clip.packets:
            shift = durations[packet.track] * self.loops
            due = start + (packet.dts + shift) / tracks[packet.track].timescale
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.publication.push(
                replace(packet, dts=packet.dts + shift, pts=packet.pts + shift, arrival=time.time())
            )
