"""A stream's audio as the camera sent it, beside the hub's AAC, for WebRTC viewers.

The hub carries one audio track, AAC (ingest_audio.py transcodes other codecs once per
stream), which LL-HLS, recordings and RTMP play read. WebRTC takes G.711 (PCMA, PCMU at
8 kHz mono) and Opus as they are, so for those the ingest also hands the source's own
frames to the stream's SourceAudio: a WebRTC viewer whose offer has the codec gets them
untouched instead of source -> AAC -> Opus (two lossy transcodes, and CPU).

It is no hub track: the other outputs never see it. One per hub stream (Stream.source_audio),
kept across publications; listeners are called on the event loop as frames are pushed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from media_server.media import Packet

log = logging.getLogger(__name__)

# codec -> its RTP clock in WebRTC (RFC 3551: G.711 at 8 kHz; RFC 7587: Opus at 48 kHz)
WEBRTC_CLOCKS = {"pcma": 8000, "pcmu": 8000, "opus": 48000}
G711_FRAME = 160  # 20 ms at 8 kHz, one byte a sample: a frame a browser takes well
SOURCE_TRACK = -1  # the track index of a SourcePacket: never one of the hub's


def passes_to_webrtc(codec: str, sample_rate: int, channels: int) -> bool:
    """Can WebRTC viewers take this source audio as it is?"""
    if codec == "opus":
        return True  # RTP Opus runs at 48 kHz whatever the encoder's input rate
    return codec in ("pcma", "pcmu") and sample_rate == 8000 and channels <= 1


@dataclass(slots=True)
class SourcePacket(Packet):
    """One source audio frame for Stream.source_audio (not for the hub: track is
    SOURCE_TRACK); dts and pts are in the codec's WebRTC clock (WEBRTC_CLOCKS)."""

    codec: str = ""


@dataclass(frozen=True, slots=True)
class SourceFrame:
    """A frame to send: RTP payload and timestamp in the codec's clock."""

    codec: str
    data: bytes
    timestamp: int


Listener = Callable[[SourceFrame], None]


class SourceAudio:
    """One stream's source audio frames, fanned out to the WebRTC viewers listening.

    codec: what the live publication carries here ("" none: viewers get AAC -> Opus)."""

    def __init__(self) -> None:
        self.codec = ""
        self.listeners: list[Listener] = []
        self.frames_in = 0

    def reset(self) -> None:
        """A publication starts or ends: nothing carried until its frames come."""
        self.codec = ""

    def expect(self, codec: str) -> None:
        """The publication says which codec its frames will be in, before the first."""
        if not self.codec:
            self.codec = codec

    def attach(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def detach(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)

    def push(self, packet: SourcePacket) -> None:
        if packet.codec != self.codec:
            log.debug("source audio now %s (was %s)", packet.codec, self.codec or "none")
            self.codec = packet.codec
        self.frames_in += 1
        if not self.listeners:
            return
        for frame in _frames(packet):
            for listener in list(self.listeners):
                listener(frame)


def _frames(packet: SourcePacket) -> list[SourceFrame]:
    """G.711 cut into 20 ms frames (an RTMP encoder's may be 128 ms, too big for one RTP
    packet); Opus as it came."""
    data, codec = packet.data, packet.codec
    if codec == "opus" or len(data) <= G711_FRAME:
        return [SourceFrame(codec, data, packet.pts)]
    return [
        SourceFrame(codec, data[at : at + G711_FRAME], packet.pts + at)
        for at in range(0, len(data), G711_FRAME)
    ]
