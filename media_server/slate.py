"""The slate a cut public broadcast shows ("庭审直播暂停 / Broadcast paused"), in the
stream's own format.

A slate is encoded once per format (video codec and size, audio codec, rate and channels)
and kept: one second of a still picture (one GOP) and of silence, which the public
rendition loops with growing timestamps for as long as the cut lasts. So a cut costs one
encode per format per process, and the normal flow none. Encoding is PyAV work: it runs in
a thread (`SlateCache.get`), never on the event loop.

The picture is drawn with numpy (no font library): a dark card with a pause sign and
"BROADCAST PAUSED" in a built-in 5x7 bitmap font. The Chinese words need a CJK font this
machine does not have; the pages overlay them.
"""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from av.audio.stream import AudioStream
from av.video.stream import VideoStream

from media_server.media import Packet, Track, VideoCodec, video_track

FPS = 25
LOOP_S = 1  # one GOP, looped
DEFAULT_SIZE = (640, 360)  # a stream whose format is not known yet (audio only, none)
BACKGROUND = (22, 34, 58)  # RGB of the card
TEXT = "BROADCAST PAUSED"

# 5x7 glyphs of the letters TEXT needs, one string of 7 rows of 5 bits each
_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01111 10000 10000 10000 10000 10000 01111",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    " ": "00000 00000 00000 00000 00000 00000 00000",
}


@dataclass(frozen=True)
class SlateFormat:
    """What a slate must match to follow the stream in the same player."""

    video: str  # h264 | h265
    width: int
    height: int
    audio: str = ""  # aac, or "" (no audio track: Opus streams get a silent-free slate)
    sample_rate: int = 0
    channels: int = 0

    @classmethod
    def of(cls, tracks: tuple[Track, ...]) -> SlateFormat:
        video = video_track(tracks)
        audio = next((t for t in tracks if t.kind == "audio" and t.codec == "aac"), None)
        codec, (width, height) = "h264", DEFAULT_SIZE
        if video is not None and video.width and video.height:
            codec, width, height = video.codec, video.width, video.height
        if audio is None or not audio.sample_rate:
            return cls(codec, width, height)
        return cls(codec, width, height, "aac", audio.sample_rate, audio.channels or 1)


@dataclass(frozen=True)
class Slate:
    """One loop of slate media: tracks, packets (dts from 0) and each track's loop length
    in its own timescale."""

    format: SlateFormat
    tracks: tuple[Track, ...]
    packets: tuple[Packet, ...]
    loop_units: tuple[int, ...]


def picture(width: int, height: int) -> np.ndarray:
    """The slate's picture, RGB."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BACKGROUND
    bar_w, bar_h = max(2, width // 32), max(4, height // 5)
    top, middle = height // 2 - bar_h, width // 2
    for left in (middle - 2 * bar_w, middle + bar_w):
        image[top : top + bar_h, left : left + bar_w] = 255
    scale = max(1, width // (len(TEXT) * 6 * 3))
    text_w = len(TEXT) * 6 * scale
    x0, y0 = max(0, (width - text_w) // 2), min(height - 7 * scale, top + bar_h + 2 * scale * 7)
    for k, char in enumerate(TEXT):
        rows = _GLYPHS[char].split()
        for r, row in enumerate(rows):
            for c, bit in enumerate(row):
                if bit == "1":
                    y, x = y0 + r * scale, x0 + (k * 6 + c) * scale
                    image[y : y + scale, x : x + scale] = 255
    return image


def encode_slate(fmt: SlateFormat) -> Slate:
    """Encode one loop of the slate in fmt (blocking: call it in a thread). Muxed into an
    in-memory MP4 and read back, so the packets come out in the media model's carried
    form (length-prefixed video, avcC/hvcC and AudioSpecificConfig configs)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        video = out.add_stream({"h264": "libx264", "h265": "libx265"}[fmt.video], rate=FPS)
        assert isinstance(video, VideoStream)
        video.width, video.height, video.pix_fmt = fmt.width, fmt.height, "yuv420p"
        video.options = {"g": str(FPS * LOOP_S), "bf": "0", "preset": "veryfast"}
        if fmt.video == "h265":
            video.options["x265-params"] = "log-level=error"
        audio = None
        if fmt.audio:
            audio = out.add_stream("aac", rate=fmt.sample_rate)
            assert isinstance(audio, AudioStream)
            audio.layout = "stereo" if fmt.channels == 2 else "mono"
        frame = av.VideoFrame.from_ndarray(picture(fmt.width, fmt.height), format="rgb24")
        frame = frame.reformat(format="yuv420p")
        for i in range(FPS * LOOP_S):
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            _encode_silence(out, audio, fmt)
    return _read_back(fmt, buffer.getvalue())


def _encode_silence(
    out: av.container.OutputContainer, audio: AudioStream, fmt: SlateFormat
) -> None:
    samples = 1024
    layout = "stereo" if fmt.channels == 2 else "mono"
    for k in range(fmt.sample_rate * LOOP_S // samples):
        data = np.zeros((1, samples * fmt.channels), np.float32)
        frame = av.AudioFrame.from_ndarray(data, format="flt", layout=layout)
        frame.sample_rate, frame.pts = fmt.sample_rate, k * samples
        frame.time_base = Fraction(1, fmt.sample_rate)
        out.mux(audio.encode(frame))
    out.mux(audio.encode(None))


def _read_back(fmt: SlateFormat, mp4: bytes) -> Slate:
    with av.open(io.BytesIO(mp4), "r") as container:
        streams = [s for s in container.streams if s.type in ("video", "audio")]
        tracks = tuple(_track(i, s) for i, s in enumerate(streams))
        index = {s.index: i for i, s in enumerate(streams)}
        raw = [
            (index[p.stream.index], p.dts, p.pts, p.is_keyframe, bytes(p), p.duration or 0)
            for p in container.demux(streams)
            if p.size and p.dts is not None and p.pts is not None
        ]
    first = [min(r[1] for r in raw if r[0] == t.index) for t in tracks]
    packets = tuple(
        Packet(i, dts - first[i], pts - first[i], key, data, arrival=0.0)
        for i, dts, pts, key, data, _ in raw
    )
    loops = []
    for t in tracks:
        last = max((r for r in raw if r[0] == t.index), key=lambda r: r[1])
        loops.append(last[1] - first[t.index] + max(1, last[5]))
    return Slate(fmt, tracks, packets, tuple(loops))


def _track(i: int, stream: av.stream.Stream) -> Track:
    time_base = stream.time_base
    assert time_base is not None and time_base.numerator == 1
    config = bytes(stream.codec_context.extradata or b"")
    if isinstance(stream, VideoStream):
        codec: VideoCodec = "h265" if stream.codec_context.name == "hevc" else "h264"
        context = stream.codec_context
        return Track(
            i, "video", codec, time_base.denominator, config, context.width, context.height
        )
    assert isinstance(stream, AudioStream)
    audio = stream.codec_context
    return Track(
        i,
        "audio",
        "aac",
        time_base.denominator,
        config,
        sample_rate=audio.sample_rate,
        channels=audio.channels,
    )


class SlateCache:
    """Slates by format, each encoded once (in a thread) and kept for the process."""

    def __init__(self) -> None:
        self._slates: dict[SlateFormat, Slate] = {}
        self._encoding: dict[SlateFormat, asyncio.Task[Slate]] = {}

    def peek(self, fmt: SlateFormat) -> Slate | None:
        return self._slates.get(fmt)

    async def get(self, fmt: SlateFormat) -> Slate:
        found = self._slates.get(fmt)
        if found is not None:
            return found
        task = self._encoding.get(fmt)
        if task is None:
            task = self._encoding[fmt] = asyncio.create_task(asyncio.to_thread(encode_slate, fmt))
        try:
            slate = await asyncio.shield(task)
        finally:
            if task.done():
                self._encoding.pop(fmt, None)
        self._slates[fmt] = slate
        return slate

    def __len__(self) -> int:
        return len(self._slates)
