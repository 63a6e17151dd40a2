"""Track readers: one source stream (PyAV) -> one hub track.

Timestamps are checked and put in the track's timescale, video is converted to the hub's
AVCC form, and a change of parameter sets mid-stream becomes a new track. Runs in the
pull's worker thread; no I/O of its own.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, cast

import av

from media_server.codecs.bitstream import BitstreamError
from media_server.codecs.video import AccessUnitNormalizer
from media_server.ingest_audio import AudioSource, AudioTranscoder
from media_server.media import Codec, Packet, Track
from media_server.source_audio import (
    SOURCE_TRACK,
    WEBRTC_CLOCKS,
    SourcePacket,
    passes_to_webrtc,
)

# PyAV's decoder names -> the codec as a camera's settings page names it
AUDIO_NAMES = {
    "pcm_alaw": "pcma",
    "pcm_mulaw": "pcmu",
    "adpcm_g726": "g726",
    "adpcm_g726le": "g726",
    "g726": "g726",
    "g726le": "g726",
    "adpcm_g722": "g722",
    "pcm_s16be": "l16",
    "pcm_s24be": "l24",
    "opus": "opus",
    "mp3": "mp3",
    "mp2": "mp2",
}


class TrackReader:
    """One source stream -> one hub track: timestamps checked, video converted to AVCC."""

    def __init__(self, index: int, stream: av.stream.Stream, codec: Codec) -> None:
        self.index = index
        self.source_index = stream.index
        self.codec = codec
        ctx = stream.codec_context
        self.is_video = codec in ("h264", "h265")
        self.timescale, self._rescale = _timescale(stream, self.is_video)
        self.step = _frame_ticks(stream, self.timescale, self.is_video)
        extradata = bytes(ctx.extradata or b"")
        self.normalizer = AccessUnitNormalizer(codec, extradata) if self.is_video else None
        self.track = self._build_track(ctx, extradata)
        self.new_track: Track | None = None
        self.offset = 0  # added to every timestamp (file loops)
        self.first_dts: int | None = None
        self.last_dts: int | None = None
        self.dropped = 0
        self._pending: tuple[bytes, bool, float] | None = None

    def _build_track(self, ctx: Any, config: bytes) -> Track:
        if self.normalizer is None:
            return Track(
                self.index,
                "audio",
                "aac",
                self.timescale,
                config,
                sample_rate=ctx.sample_rate,
                channels=ctx.channels,
            )
        width, height, record = ctx.width, ctx.height, b""
        if self.normalizer.params.complete:
            record = self.normalizer.params.record()
            info = self.normalizer.params.sps_info()
            width, height = info.width, info.height
        return Track(
            self.index, "video", self.codec, self.timescale, record, width=width, height=height
        )

    @property
    def ready(self) -> bool:
        return bool(self.track.config)

    def read(self, packet: av.Packet[Any], arrival: float) -> list[Packet]:
        data, keyframe = bytes(packet), bool(packet.is_keyframe)
        if self.normalizer is not None:
            try:
                data, keyframe, changed = self.normalizer.convert(data)
            except BitstreamError:
                self.dropped += 1  # one damaged frame is no reason to drop the camera
                return []
            if changed and self.normalizer.params.complete:
                self._refresh_track()
            if not data:
                return []
        return self._stamp(data, keyframe, packet, arrival)

    def _refresh_track(self) -> None:
        assert self.normalizer is not None
        record = self.normalizer.params.record()
        if record != self.track.config:
            info = self.normalizer.params.sps_info()
            self.track = Track(
                self.index,
                "video",
                self.codec,
                self.timescale,
                record,
                width=info.width,
                height=info.height,
            )
            self.new_track = self.track

    def _stamp(
        self, data: bytes, keyframe: bool, packet: av.Packet[Any], arrival: float
    ) -> list[Packet]:
        """Timestamps in the track's timescale; a packet without any (RTSP's first, before
        the first RTP timestamp mapping) gets one from its neighbour, a packet going
        backwards is dropped, as a muxer would refuse it."""
        dts = packet.dts if packet.dts is not None else packet.pts
        if dts is None:
            if self.last_dts is None:
                self._pending = (data, keyframe, arrival)
                return []
            dts = pts = self.last_dts + self.step
        else:
            pts = packet.pts if packet.pts is not None else dts
            dts, pts = self._scale(dts) + self.offset, self._scale(pts) + self.offset
        out: list[Packet] = []
        if self._pending is not None and self.last_dts is None:
            early = dts - self.step
            out.append(
                Packet(
                    self.index, early, early, self._pending[1], self._pending[0], self._pending[2]
                )
            )
            self.first_dts = self.last_dts = early
        self._pending = None
        if self.last_dts is not None and dts <= self.last_dts:
            self.dropped += 1
            return out
        if self.first_dts is None:
            self.first_dts = dts
        self.last_dts = dts
        out.append(Packet(self.index, dts, max(pts, dts), keyframe, data, arrival))
        return out

    def _scale(self, ts: int) -> int:
        return round(ts * self._rescale) if self._rescale is not None else ts


def _frame_ticks(stream: av.stream.Stream, timescale: int, is_video: bool) -> int:
    """One frame's duration in ticks: stands in for a missing timestamp."""
    if is_video:
        rate = stream.guessed_rate or stream.average_rate or 25
        return max(1, round(timescale / rate))
    ctx = cast(av.AudioCodecContext, stream.codec_context)
    return max(1, round((ctx.frame_size or 1024) * timescale / (ctx.sample_rate or timescale)))


def _timescale(stream: av.stream.Stream, is_video: bool) -> tuple[int, Fraction | None]:
    """The track's timescale and the factor from the stream's time_base to it."""
    tb = stream.time_base or Fraction(1, 90000)
    if tb.numerator == 1:
        return tb.denominator, None
    if is_video:
        scale = 90000
    else:
        scale = cast(av.AudioCodecContext, stream.codec_context).sample_rate or 90000
    return scale, tb * scale


class TranscodingReader(TrackReader):
    """A source audio stream in another codec than AAC -> an AAC-LC hub track: timestamps
    checked as any track's, then each frame transcoded (in the pull's worker thread).
    G.711 and Opus frames also come out as they are (SourcePacket), for WebRTC viewers."""

    def __init__(self, index: int, stream: av.stream.Stream) -> None:
        super().__init__(index, stream, "aac")
        ctx = cast(av.AudioCodecContext, stream.codec_context)
        source = AudioSource(
            AUDIO_NAMES.get(ctx.name, ctx.name),
            ctx.name,
            ctx.sample_rate,
            ctx.channels,
            self.timescale,
        )
        self.transcoder = AudioTranscoder(source, index, decoder=ctx)
        self.track = self.transcoder.track
        passes = passes_to_webrtc(source.name, source.sample_rate, source.channels)
        self.webrtc_clock = WEBRTC_CLOCKS[source.name] if passes else 0

    def read(self, packet: av.Packet[Any], arrival: float) -> list[Packet]:
        out: list[Packet] = []
        for stamped in super().read(packet, arrival):
            if self.webrtc_clock:
                out.append(self._as_sent(stamped))
            out.extend(self.transcoder.transcode(stamped.data, stamped.dts, stamped.arrival))
        return out

    def _as_sent(self, stamped: Packet) -> SourcePacket:
        ts = stamped.dts * self.webrtc_clock // self.timescale
        name = self.transcoder.source.name
        return SourcePacket(SOURCE_TRACK, ts, ts, True, stamped.data, stamped.arrival, name)
