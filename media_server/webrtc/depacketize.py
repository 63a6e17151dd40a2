"""WHIP ingest, pure part: access units as aiortc's jitter buffer reassembles them from
RTP (Annex-B, parameter sets in-band) -> the hub's form (AVCC frames, avcC config).

Browsers change resolution while their bandwidth estimate ramps up, each time sending a
new SPS with an IDR: a changed SPS/PPS yields a new avcC, and the ingest restarts the
hub's tracks with it. Frames before the first SPS/PPS and IDR cannot be decoded by anyone
and are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from media_server.webrtc.h264 import (
    NAL_AUD,
    NAL_IDR,
    NAL_PPS,
    NAL_SPS,
    H264Error,
    annexb_nals,
    build_avcc_config,
    nal_type,
    sps_dimensions,
    to_avcc,
)


@dataclass(frozen=True, slots=True)
class VideoFrame:
    """One frame for the hub; config is set when it starts a new avcC (a keyframe)."""

    data: bytes
    keyframe: bool
    config: bytes | None = None
    width: int = 0
    height: int = 0


class H264Assembler:
    """Turns depayloaded Annex-B access units into AVCC frames plus avcC changes."""

    def __init__(self) -> None:
        self.sps: bytes | None = None
        self.pps: bytes | None = None
        self.config: bytes | None = None
        self.width = self.height = 0
        self.dropped = 0
        self._waiting_key = True

    def push(self, annexb: bytes) -> VideoFrame | None:
        nals = annexb_nals(annexb)
        for nal in nals:
            if nal_type(nal) == NAL_SPS:
                self.sps = nal
            elif nal_type(nal) == NAL_PPS:
                self.pps = nal
        slices = [n for n in nals if nal_type(n) not in (NAL_SPS, NAL_PPS, NAL_AUD)]
        if not slices:
            return None
        keyframe = any(nal_type(n) == NAL_IDR for n in slices)
        changed = self._config_changed() if keyframe else None
        if self.config is None or (self._waiting_key and not keyframe):
            self.dropped += 1
            return None
        self._waiting_key = False
        return VideoFrame(to_avcc(slices), keyframe, changed, self.width, self.height)

    def _config_changed(self) -> bytes | None:
        if self.sps is None or self.pps is None:
            return None
        config = build_avcc_config([self.sps], [self.pps])
        if config == self.config:
            return None
        try:
            self.width, self.height = sps_dimensions(self.sps)
        except H264Error:
            self.width = self.height = 0
        self.config = config
        return config

    def lost(self) -> None:
        """Frames were lost: send nothing until the next keyframe."""
        self._waiting_key = True
