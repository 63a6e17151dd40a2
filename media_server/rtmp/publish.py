"""One RTMP publication: FLV tags in, tracks and packets out to the hub.

Pure of I/O: the server hands it message timestamps and payloads, it hands the hub's
Publication tracks (set_tracks) and packets (push). Tracks are announced when every track
onMetaData promised has its sequence header, or at the first coded frame, whichever comes
first; a later or changed sequence header re-announces (subscribers restart).
Timestamps: each track unwraps its own 32-bit RTMP clock, so dts is what the publisher
sent (FLV tag time in ms) and pts = dts + composition time. One exception: a cheap encoder
may stamp audio and video from clocks that start far apart (seconds, or its uptime for one
and zero for the other) while sending both at once. When the second track's first frame
says it is more than CLOCKS_APART_MS away from where the first track's clock stands at its
arrival, it is moved to the first track's clock by arrival time. Under that threshold the
publisher's stamps are kept: an encoder's own delay (x264 lookahead) makes arrival differ
from them by up to ~2 s, so arrival cannot tell a real offset from one there.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Any

import av

from media_server.hub import Publication
from media_server.ingest_audio import AudioSource, AudioTranscoder, ThreadedTranscoder
from media_server.media import Packet, SourceTrack, Track
from media_server.rtmp import flv
from media_server.source_audio import (
    SOURCE_TRACK,
    WEBRTC_CLOCKS,
    SourcePacket,
    passes_to_webrtc,
)

log = logging.getLogger(__name__)

_WRAP = 1 << 32
_HALF = 1 << 31
CLOCKS_APART_MS = 3000


class _Source:
    """What we know of one incoming track: its config and its clock."""

    __slots__ = (
        "codec",
        "config",
        "dts",
        "first",
        "index",
        "last_raw",
        "legacy_id",
        "shift",
        "track",
    )

    def __init__(self, codec: str, config: bytes, track: Track) -> None:
        self.configure(codec, config, track)
        self.index = -1
        self.last_raw: int | None = None
        self.dts = 0
        self.shift = 0  # moves this track's clock onto the other track's (clocks apart)
        self.first: tuple[int, float] | None = None  # (dts, arrival) of the first frame

    def configure(self, codec: str, config: bytes, track: Track) -> None:
        self.codec, self.config, self.track = codec, config, track
        # the FLV codec id of this codec's legacy tags (enhanced RTMP tags never match it)
        self.legacy_id = flv.LEGACY_VIDEO_IDS.get(codec, -1)

    def unwrap(self, raw: int) -> int:
        """32-bit RTMP time -> unbounded dts; a step over half the range is a step back."""
        if self.last_raw is None:
            self.last_raw = self.dts = raw
            return raw + self.shift
        delta = (raw - self.last_raw) % _WRAP
        if delta >= _HALF:
            delta -= _WRAP
        self.last_raw = raw
        self.dts += delta
        return self.dts + self.shift


SOURCE_CODEC = re.compile(r"[a-z0-9_.-]{1,24}")


class Ingest:
    """trusted: the publisher's key was checked, so what its onMetaData says of the
    audio's origin (`audiosourcecodec`, from a courtcast agent that transcoded a camera's
    audio to AAC) is believed; it is informational (stats, a recording's manifest)."""

    def __init__(self, publication: Publication, name: str, trusted: bool = False) -> None:
        self.publication = publication
        self.name = name
        self.trusted = trusted
        self.video: _Source | None = None
        self.audio: _Source | None = None
        self.order: list[str] = []  # kinds in track-index order, fixed once announced
        self.announced = False
        self.expect: set[str] = set()
        self.metadata: dict[str, Any] = {}
        self.frames_without_config = 0
        self.audio_problem: str | None = None
        self.transcoder: ThreadedTranscoder | None = None  # audio in another codec -> AAC
        self.dropped_audio: SourceTrack | None = None

    @property
    def tracks(self) -> tuple[Track, ...]:
        return tuple(s.track for s in self._sources())

    def _sources(self) -> list[_Source]:
        out = []
        for kind in self.order:
            src = self.video if kind == "video" else self.audio
            if src is not None:
                out.append(src)
        return out

    # -- messages --

    def on_metadata(self, values: list[Any]) -> None:
        if values and values[0] == "@setDataFrame":
            values = values[1:]
        if len(values) < 2 or values[0] != "onMetaData" or not isinstance(values[1], dict):
            return
        self.metadata = dict(values[1])
        self.expect = {
            kind
            for kind, key in (("video", "videocodecid"), ("audio", "audiocodecid"))
            if self.metadata.get(key) not in (None, 0, 0.0, "")
        }
        if not self.announced and self._all_expected():
            self._announce()

    def on_video(self, timestamp: int, payload: bytes | bytearray, arrival: float) -> None:
        src = self.video
        head = payload[0] if payload else 0
        # the common case, read off its first bytes without making a tag (what parse_video
        # makes of it, checked by tests): a legacy coded frame of the announced codec
        if (
            src is not None
            and head & 0x8F == src.legacy_id
            and head >> 4 != 5
            and len(payload) > 5
            and payload[1] == flv.FRAME
            and self.announced
        ):
            dts = self._clock(src, timestamp, arrival)
            self.publication.push(
                Packet(
                    src.index,
                    dts,
                    dts + flv.si24(payload, 2),
                    head >> 4 in (1, 4),
                    bytes(payload[5:]),
                    arrival,
                )
            )
            return
        tag = flv.parse_video(payload)
        if tag.kind == flv.FRAME:
            if src is None or src.codec != tag.codec:
                self.frames_without_config += 1  # undecodable without its SPS/PPS
                return
            if not self.announced:
                self._announce()
            if len(tag.data):
                dts = self._clock(src, timestamp, arrival)
                self.publication.push(
                    Packet(src.index, dts, dts + tag.cto, tag.keyframe, bytes(tag.data), arrival)
                )
        elif tag.kind == flv.SEQUENCE_HEADER:
            config = bytes(tag.data)
            if self.video is None or self.video.config != config:
                self._configured("video", tag.codec, config, flv.video_track(0, tag.codec, config))

    def on_audio(self, timestamp: int, payload: bytes | bytearray, arrival: float) -> None:
        src = self.audio
        # the common case, as on_video's: a raw AAC frame (sound format 10, packet type 1)
        if (
            src is not None
            and len(payload) > 2
            and payload[0] >> 4 == 10
            and payload[1] == flv.FRAME
            and self.announced
            and self.audio_problem is None
        ):
            dts = self._clock(src, timestamp, arrival)
            self.publication.push(Packet(src.index, dts, dts, True, bytes(payload[2:]), arrival))
            return
        if self.audio_problem is not None:
            return
        try:
            tag = flv.parse_audio(payload)
            if tag.kind == flv.SEQUENCE_HEADER:
                config = bytes(tag.data)
                if self.audio is None or self.audio.config != config:
                    track = replace(flv.audio_track(0, config), source_codec=self._source_codec())
                    self._configured("audio", "aac", config, track)
                return
        except flv.FlvError as exc:
            # audio we cannot carry must not cost the court its picture: keep the video
            self._drop_audio(flv.audio_codec_name(payload), str(exc))
            return
        if tag.decoder:
            self._transcode_audio(tag, timestamp, arrival)
            return
        src = self.audio
        if tag.kind != flv.FRAME or src is None or not len(tag.data):
            return
        if not self.announced:
            self._announce()
        dts = self._clock(src, timestamp, arrival)
        self.publication.push(Packet(src.index, dts, dts, True, bytes(tag.data), arrival))

    def _source_codec(self) -> str:
        """The codec the AAC was transcoded from upstream, as a trusted publisher says."""
        said = self.metadata.get("audiosourcecodec")
        if self.trusted and isinstance(said, str) and SOURCE_CODEC.fullmatch(said):
            return said
        return ""

    # -- audio in another codec than AAC --

    def _transcode_audio(self, tag: flv.AudioTag, timestamp: int, arrival: float) -> None:
        """One transcoder per publication, in a pool thread; its AAC comes back to
        _push_audio on the loop."""
        current = self.transcoder
        if current is None or current.transcoder.source.name != tag.codec:
            if current is not None:
                current.close()
            source = AudioSource(tag.codec, tag.decoder, tag.sample_rate, tag.channels, 1000)
            try:
                current = ThreadedTranscoder(AudioTranscoder(source, 0), self._push_audio)
            except (av.FFmpegError, ValueError) as exc:
                self._drop_audio(tag.codec, f"cannot transcode {tag.codec}: {exc}")
                return
            self.transcoder = current
            self._configured("audio", tag.codec, b"", current.track)
        src = self.audio
        if src is None or not len(tag.data):
            return
        if not self.announced:
            self._announce()
        data, dts = bytes(tag.data), self._clock(src, timestamp, arrival)
        current.feed(data, dts, arrival)
        if passes_to_webrtc(tag.codec, tag.sample_rate, tag.channels):  # G.711, as it came
            ts = dts * WEBRTC_CLOCKS[tag.codec] // 1000
            packet = SourcePacket(SOURCE_TRACK, ts, ts, True, data, arrival, tag.codec)
            self.publication.push_source_audio(packet)

    def _push_audio(self, packets: list[Packet]) -> None:
        src = self.audio
        if not self.publication.alive and self.transcoder is not None:
            self.transcoder.close()  # the publication ended: nothing more to transcode
            return
        if src is None or not self.announced:
            return
        for packet in packets:
            packet.track = src.index
            self.publication.push(packet)

    def _drop_audio(self, codec: str, reason: str) -> None:
        self.audio_problem = reason
        self.dropped_audio = SourceTrack("audio", codec, f"dropped: {reason}")
        log.warning("rtmp %s: audio dropped: %s", self.name, reason)
        self._describe()

    def _describe(self) -> None:
        """Every track the publisher sends and what became of it, for stats and events."""
        out = []
        for src in self._sources():
            state = "carried"
            if src.track.source_codec:
                state = f"transcoded from {src.track.source_codec}"
            out.append(SourceTrack(src.track.kind, src.codec, state))
        if self.dropped_audio is not None:
            out.append(self.dropped_audio)
        self.publication.describe_source(tuple(out))

    # -- clocks --

    def _clock(self, src: _Source, raw: int, arrival: float) -> int:
        """The dts of a frame stamped `raw`; a track's first frame may move its clock."""
        if src.first is None:
            self._align(src, raw, arrival)
        return src.unwrap(raw)

    def _align(self, src: _Source, raw: int, arrival: float) -> None:
        other = self.audio if src is self.video else self.video
        if other is not None and other.first is not None:
            other_dts, other_arrival = other.first
            expected = other_dts + round((arrival - other_arrival) * 1000)
            if abs(raw - expected) > CLOCKS_APART_MS:
                src.shift = expected - raw
                kind, other_kind = ("video", "audio") if src is self.video else ("audio", "video")
                log.warning(
                    "rtmp %s: %s clock starts %d ms off the %s clock at arrival; moved onto it",
                    self.name,
                    kind,
                    -src.shift,
                    other_kind,
                )
        src.first = (raw + src.shift, arrival)

    # -- tracks --

    def _configured(self, kind: str, codec: str, config: bytes, track: Track) -> None:
        src = self.video if kind == "video" else self.audio
        if src is None:
            src = _Source(codec, config, track)
            if kind == "video":
                self.video = src
            else:
                self.audio = src
        else:
            src.configure(codec, config, track)
        if self.announced or self._all_expected():
            self._announce()

    def _all_expected(self) -> bool:
        have = {k for k, s in (("video", self.video), ("audio", self.audio)) if s is not None}
        return bool(self.expect) and self.expect <= have

    def _announce(self) -> None:
        for kind, src in (("video", self.video), ("audio", self.audio)):
            if src is not None and kind not in self.order:
                self.order.append(kind)
        for index, src in enumerate(self._sources()):
            src.index = index
            src.track = replace(src.track, index=index)
        self.announced = True
        self.publication.set_tracks(self.tracks)
        self._describe()
