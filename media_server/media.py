"""The media model every role shares: tracks, packets and the markers between them.

Video payloads are kept length-prefixed (AVCC / HVCC, 4-byte lengths), the form RTMP, FLV
and MP4 carry, so that the common paths (RTMP -> HLS, stream -> recording) copy bytes
unchanged. Outputs that need Annex-B (WebRTC) convert once per stream, not per viewer.
Timestamps are integers in the track's own timescale (RTMP: 1000, RTP video: 90000), so
no output ever rounds what the source said.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

VideoCodec = Literal["h264", "h265"]
AudioCodec = Literal["aac", "opus"]
Codec = Literal["h264", "h265", "aac", "opus"]
Kind = Literal["video", "audio"]

VIDEO_CODECS: frozenset[str] = frozenset({"h264", "h265"})
AUDIO_CODECS: frozenset[str] = frozenset({"aac", "opus"})


@dataclass(frozen=True, slots=True)
class Track:
    """One elementary stream of a live stream, with the codec config decoders need.

    config: AVCDecoderConfigurationRecord (avcC) for H.264, HEVCDecoderConfigurationRecord
    (hvcC) for H.265, AudioSpecificConfig for AAC, OpusHead for Opus.
    """

    index: int
    kind: Kind
    codec: Codec
    timescale: int
    config: bytes
    width: int = 0
    height: int = 0
    sample_rate: int = 0
    channels: int = 0
    source_codec: str = ""  # the camera's own codec when this track is a transcode of it

    @property
    def is_video(self) -> bool:
        return self.kind == "video"


@dataclass(frozen=True, slots=True)
class SourceTrack:
    """One track a source sends and what the stream makes of it, for stats and events.

    state: "carried", "transcoded from <codec>" or "dropped: <reason>"."""

    kind: str  # video | audio | data ...
    codec: str  # as the source names it: h264, pcma, mp3 ...
    state: str

    @property
    def dropped(self) -> bool:
        return self.state.startswith("dropped")


@dataclass(slots=True)
class Packet:
    """One access unit (a video frame or an audio frame), never decoded on the default path.

    arrival is the wall-clock (UNIX seconds) at which the first byte reached us; outputs
    use it for program date-time and the recorder for segment start times.
    """

    track: int
    dts: int
    pts: int
    keyframe: bool
    data: bytes
    arrival: float = field(default_factory=time.time)

    @property
    def cto(self) -> int:
        """Composition time offset (pts - dts), non-zero with B-frames."""
        return self.pts - self.dts


@dataclass(frozen=True, slots=True)
class StreamStart:
    """Marker a subscriber receives before packets of a (new) publication.

    epoch grows by one each time a publisher takes the stream over, so outputs know to
    mark a discontinuity (EXT-X-DISCONTINUITY, a recording gap).
    """

    tracks: tuple[Track, ...]
    epoch: int


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Marker: the publisher went away (reason says why). The stream may start again."""

    reason: str


@dataclass(frozen=True, slots=True)
class Skipped:
    """Marker: this subscriber fell behind and lost `count` packets; the next packet of a
    video track is a keyframe."""

    count: int


Item = Packet | StreamStart | StreamEnd | Skipped


def video_track(tracks: tuple[Track, ...]) -> Track | None:
    """The first video track, the one segmenting and GOP caching follow."""
    return next((t for t in tracks if t.is_video), None)
