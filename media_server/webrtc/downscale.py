"""H.264 or H.265 frames in, H.264 every browser decodes over WebRTC out: decode, scale
down, encode. Blocking PyAV work, run in a worker thread (rendition.py).

The output is constrained baseline (no B-frames, so frames leave in the order they are
shown, as WebRTC receivers need), tuned for zero latency (no lookahead: one frame in, one
frame out), with an IDR every KEYINT frames and whenever a viewer asks for one. Frames
leave as the hub carries H.264: AVCC (4-byte lengths), with the avcC record in `config`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import av
from av.video.codeccontext import VideoCodecContext
from av.video.frame import PictureType, VideoFrame

from media_server.codecs.bitstream import BitstreamError, nals_to_avcc, split_annexb
from media_server.codecs.h264 import NAL_PPS, NAL_SPS, avcc_record, nal_type
from media_server.media import Packet, Track

MAX_SIZE = (640, 360)  # a wall tile: a quarter or less of a 1080p screen
KEYINT = 60  # frames: 2 s at 30 fps; viewers that need one sooner ask for it
DECODERS = {"h264": "h264", "h265": "hevc"}
ENCODER_OPTIONS = {
    "preset": "veryfast",
    "tune": "zerolatency",  # no B-frames, no lookahead, no frame threads: no added delay
    "profile": "baseline",  # x264 writes constrained baseline (profile-level-id 42c0..)
    "forced-idr": "1",  # a keyframe asked for is an IDR a new viewer can start from
    "crf": "25",
    "maxrate": "1200k",  # VBV: no frame so large that it bursts a viewer's link
    "bufsize": "600k",
}


class DownscaleError(Exception):
    """The source cannot be made into a rendition (a codec FFmpeg cannot decode here)."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """One output frame: AVCC data, at the source frame's presentation time."""

    pts: int
    keyframe: bool
    data: bytes


def fit(width: int, height: int, box: tuple[int, int] = MAX_SIZE) -> tuple[int, int]:
    """The largest size within box with the source's aspect, even, never scaled up."""
    scale = min(1.0, box[0] / width, box[1] / height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class Downscaler:
    """One source track's frames made into H.264 at most MAX_SIZE. Not thread-safe: one
    worker thread calls feed() for one stream."""

    def __init__(self, track: Track, fps: float = 30.0, box: tuple[int, int] = MAX_SIZE) -> None:
        name = DECODERS.get(track.codec)
        if name is None:
            raise DownscaleError(f"no rendition from {track.codec.upper()} video")
        self.box = box
        self.fps = fps if fps > 0 else 30.0
        self.time_base = Fraction(1, track.timescale)
        self.decoder = cast(VideoCodecContext, av.CodecContext.create(name, "r"))
        self.decoder.extradata = track.config  # avcC / hvcC: packets are length-prefixed
        self.decoder.thread_count = 1  # frame threads would hold frames back
        self.encoder: VideoCodecContext | None = None
        self.config = b""  # the output's avcC, known from its first keyframe
        self.size = (0, 0)
        self.cpu_s = 0.0
        self.frames_in = self.frames_out = 0

    def feed(self, packet: Packet, keyframe: bool = False) -> list[Encoded]:
        """Decode one access unit and encode what it shows; keyframe: make the next output
        frame an IDR. Raises av.FFmpegError on data the decoder refuses."""
        started = time.thread_time()
        try:
            source = av.Packet(packet.data)
            source.pts, source.dts, source.time_base = packet.pts, packet.dts, self.time_base
            out: list[Encoded] = []
            for frame in self.decoder.decode(source):
                self.frames_in += 1
                out += self._encode(frame, keyframe)
                keyframe = False
            return out
        finally:
            self.cpu_s += time.thread_time() - started

    def _encode(self, frame: VideoFrame, keyframe: bool) -> list[Encoded]:
        encoder = self.encoder or self._open(frame)
        scaled = frame.reformat(self.size[0], self.size[1], "yuv420p", interpolation="BILINEAR")
        scaled.pts, scaled.time_base = frame.pts, self.time_base
        # (a frame not scaled is the decoder's: its I/P/B type must not steer the encoder)
        scaled.pict_type = PictureType.I if keyframe else PictureType.NONE
        return [self._output(p) for p in encoder.encode(scaled)]

    def _open(self, frame: VideoFrame) -> VideoCodecContext:
        self.size = fit(frame.width, frame.height, self.box)
        encoder = av.CodecContext.create("libx264", "w")
        encoder.width, encoder.height = self.size
        encoder.pix_fmt = "yuv420p"
        encoder.time_base = self.time_base
        encoder.framerate = Fraction(round(self.fps * 1000), 1000)  # rate control's pace
        encoder.gop_size = KEYINT
        encoder.max_b_frames = 0
        encoder.thread_count = 1
        encoder.options = dict(ENCODER_OPTIONS)
        encoder.open()
        self.encoder = encoder
        return encoder

    def _output(self, packet: av.Packet[Any]) -> Encoded:
        nals = split_annexb(bytes(packet))
        if packet.is_keyframe and not self.config:
            sps = [n for n in nals if nal_type(n) == NAL_SPS]
            pps = [n for n in nals if nal_type(n) == NAL_PPS]
            try:
                self.config = avcc_record(sps, pps)
            except BitstreamError as exc:
                raise DownscaleError(f"the encoder's first keyframe: {exc}") from exc
        self.frames_out += 1
        pts = packet.pts if packet.pts is not None else 0
        return Encoded(pts, bool(packet.is_keyframe), nals_to_avcc(nals))
