"""Bytes for the codec tests: avcC records captured from ffmpeg/libx264, and H.264/H.265
access units encoded in memory by PyAV's libx264/libx265."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from media_server.codecs.h264 import parse_avcc_record
from media_server.codecs.video import AccessUnitNormalizer
from media_server.media import Packet, Track

# avcC records captured from ffmpeg/libx264 (constrained baseline 640x360, high 1280x720)
AVCC_BASELINE_360 = bytes.fromhex(
    "0142c01effe100196742c01eda0280bfe5c044000003000400000300f23c58ba8001000468ce3c80"
)
AVCC_HIGH_720 = bytes.fromhex(
    "0164001fffe1001a6764001facd9405005bb0110000003001000000303c0f183196001000668ebe3cb22c0fdf8f800"
)

(SPS, PPS), _ = parse_avcc_record(AVCC_BASELINE_360)
IDR = bytes([0x65]) + bytes(range(256)) * 20  # 5 KB slice: needs FU-A
P_SLICE = bytes([0x41]) + b"\x11" * 300

FPS = 25
X265 = {"preset": "ultrafast", "x265-params": "log-level=none:keyint=25:bframes=0"}


def encode(
    codec: str, width: int, height: int, frames: int = 30, options: dict[str, str] | None = None
) -> list[bytes]:
    """Annex-B access units as an encoder without global header emits them."""
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, FPS), FPS
    ctx.options = options or {"preset": "ultrafast", "bf": "0"}
    ramp = np.linspace(0, 255, width, dtype=np.uint8)
    out: list[bytes] = []
    for i in range(frames):
        image = np.full((height * 3 // 2, width), 128, np.uint8)
        image[:height] = np.roll(ramp, i * 8)
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in ctx.encode(frame)]
    return out + [bytes(p) for p in ctx.encode(None)]


def hub_packets(units: list[bytes], codec: str) -> tuple[Track, list[Packet]]:
    normalizer = AccessUnitNormalizer(codec)
    packets = []
    for i, unit in enumerate(units):
        data, keyframe, _ = normalizer.convert(unit)
        packets.append(Packet(0, i * 3600, i * 3600, keyframe, data))
    info = normalizer.params.sps_info()
    track = Track(
        0,
        "video",
        codec,
        90000,
        normalizer.params.record(),  # type: ignore[arg-type]
        width=info.width,
        height=info.height,
    )
    return track, packets
