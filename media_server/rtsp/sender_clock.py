"""An RTSP camera's tracks put in sync by the camera's clock, from its RTCP sender reports.

FFmpeg's RTSP demuxer times a stream from RTP-Info or its first packet until the stream's
first sender report, then remaps it to the reports' NTP clock, and again when a report
moves. Cameras (GStreamer too) get RTP-Info wrong for a track that starts later than the
others: audio that starts 1 s after the video came out at 0.000 s, then jumped +1.08 s
3.4 s in; with 2.5 s, both tracks jumped +2.6 s at their second report (the camera's NTP
mapping moved, for both tracks alike, one report apart). What holds: once a stream has had
a report, FFmpeg marks each of its packets with the camera's wall clock for it (PRFT side
data: the report's NTP time plus the RTP time since).

So every track keeps its own RTP cadence: a jump FFmpeg makes at a report is taken out.
The video (the lead) goes out as it comes; its wall clocks tie the camera's clock to the
output timeline. Every other track (audio) is held until it has a wall clock and the tie is
known, then placed by it: packets from before its first report keep their RTP spacing to
the first one after. Later, a track follows its wall clock when it drifts (by up to DRIFT_S)
or when it stays off for PERSIST_S (a placement made between two tracks' reports); a step
that comes and goes with the other track's next report is ignored. A camera that sends no
report within HOLD_S is timed as FFmpeg times it (logged). Runs in the pull's worker thread.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeAlias

import av

log = logging.getLogger(__name__)

HOLD_S = 8.0  # cameras send a report every 1-5 s (RFC 3550: the first within ~3.75 s)
# FFmpeg's H.264 parser puts a frame's side data on the frame before it, so a remap can
# show a packet after the report's mark, and a frame's wall clock can be a frame late:
AFTER_REPORT = 3  # packets after a report's mark that may carry FFmpeg's remap
TIE_PACKETS = 5  # the tie: the smallest of the lead's last (wall clock - output time)
REORDERED_JUMP_US = 500_000  # with B-frames, a remap is a jump bigger than this
ADJUST_US = 2_000  # a placed track's wall clock off by more than this moves it...
DRIFT_S = 0.1  # ...at once up to this (drift), beyond only when it stays off this long:
PERSIST_S = 15.0  # longer than a report interval (RFC 3550: up to 7.5 s)

Held: TypeAlias = "tuple[av.Packet[Any], float]"  # a packet and its arrival (time.time())


@dataclass
class _Stream:
    time_base: Fraction
    placed: bool  # False: held until placed on the camera's clock
    shift: int = 0  # ticks added to FFmpeg's timestamps
    last: int | None = None  # FFmpeg's last pts, and its last step: the stream's cadence
    step: int = 0
    after_report: int = 0
    reordered: bool = False  # pts seen going back: B-frames, no exact cadence
    off_since: float | None = None  # arrival since when its wall clock says otherwise
    held: list[tuple[av.Packet[Any], float, int]] = field(default_factory=list)  # + shift

    def ticks(self, us: int) -> int:
        return round(Fraction(us, 1_000_000) / self.time_base)

    def us(self, ticks: int) -> int:
        return round(ticks * self.time_base * 1_000_000)

    def cadence(self, pts: int) -> int:
        """Where the stream's own cadence puts the packet after the last one."""
        return pts if self.last is None or not self.step else self.last + self.step

    def note(self, pts: int) -> None:
        if self.last is not None and pts > self.last:
            self.step = pts - self.last
        elif self.last is not None and pts < self.last:
            self.reordered = True
        self.last = pts

    def keep_cadence(self, packet: av.Packet[Any]) -> None:
        """Take out a jump FFmpeg makes at a report (its remap), keeping the RTP spacing:
        frames (audio, video without B-frames) follow each other a step apart; with
        B-frames only a jump bigger than any reordering is taken for a remap."""
        assert packet.pts is not None
        if packet.has_sidedata("rtcp_sr"):
            self.after_report = AFTER_REPORT
        if self.after_report:
            self.after_report -= 1
            expected = self.cadence(packet.pts)
            tolerance = self.ticks(REORDERED_JUMP_US) if self.reordered else self.step // 2
            if abs(packet.pts - expected) > tolerance:
                self.shift += expected - packet.pts
                self.last = None  # the new timeline; the step stays
        self.note(packet.pts)


class SenderClock:
    """Re-times one RTSP session's packets by the camera's sender reports (see above).

    feed() takes each demuxed packet and gives back those ready to go, retimed in place.
    Any other source (no report ever comes) goes through untouched.
    """

    def __init__(self, container: av.container.InputContainer, lead: int, name: str) -> None:
        self._enabled = container.format.name == "rtsp"
        self._name = name
        self._lead_index = lead
        self._ties: deque[int] = deque(maxlen=TIE_PACKETS)  # lead's wall - output (µs)
        self._streams: dict[int, _Stream] = {}
        for stream in container.streams:
            tb = stream.time_base or Fraction(1, 90000)
            self._streams[stream.index] = _Stream(tb, placed=stream.index == lead)

    @property
    def _tie_us(self) -> int | None:
        """The camera's wall clock minus the output time, from the lead."""
        return min(self._ties) if len(self._ties) == TIE_PACKETS else None

    def feed(self, packet: av.Packet[Any], arrival: float) -> list[Held]:
        s = self._streams.get(packet.stream_index)
        if not self._enabled or s is None:
            return [(packet, arrival)]
        wall = None
        if packet.pts is not None:
            s.keep_cadence(packet)
            wall = _wallclock_us(packet)
            if wall is not None and packet.stream_index == self._lead_index:
                self._ties.append(wall - s.us(packet.pts + s.shift))
        if not s.placed:
            return self._hold(s, packet, arrival, wall)
        if packet.pts is not None:
            self._follow(s, packet.pts, wall, arrival)
        _shift(packet, s.shift)
        return [(packet, arrival)]

    def _follow(self, s: _Stream, pts: int, wall: int | None, arrival: float) -> None:
        """A placed track follows its wall clock (see the module's docstring)."""
        tie = self._tie_us
        if wall is None or tie is None or s is self._streams[self._lead_index]:
            return
        off = s.us(s.ticks(wall - tie) - pts - s.shift)
        if abs(off) <= ADJUST_US:
            s.off_since = None
            return
        if s.off_since is None:
            s.off_since = arrival
        if abs(off) <= DRIFT_S * 1e6 or arrival - s.off_since >= PERSIST_S:
            log.info("stream %s: track moved %+.3f s to the camera's clock", self._name, off / 1e6)
            s.shift += s.ticks(off)
            s.off_since = None

    def _hold(
        self, s: _Stream, packet: av.Packet[Any], arrival: float, wall: int | None
    ) -> list[Held]:
        s.held.append((packet, arrival, s.shift))
        tie = self._tie_us
        if wall is not None and tie is not None and packet.pts is not None:
            moved = s.ticks(wall - tie) - packet.pts - s.shift
            log.info(
                "stream %s: track %d placed by the camera's sender reports, %+.3f s from "
                "FFmpeg's timing before them",
                self._name,
                packet.stream_index,
                s.us(moved) / 1e6,
            )
            return self._release(s, moved)
        if arrival - s.held[0][1] < HOLD_S:
            return []
        log.warning(
            "stream %s: no RTCP sender report in %.0f s: audio and video timed as the "
            "camera's RTP-Info says (they may be out of sync until one comes)",
            self._name,
            HOLD_S,
        )
        return self._release(s, 0)

    def _release(self, s: _Stream, moved: int) -> list[Held]:
        """The held packets, each with the shift that kept its RTP spacing, moved."""
        s.shift += moved
        for packet, _, shift in s.held:
            _shift(packet, shift + moved)
        out = [(packet, arrival) for packet, arrival, _ in s.held]
        s.held, s.placed = [], True
        return out


def _shift(packet: av.Packet[Any], ticks: int) -> None:
    if ticks:
        if packet.pts is not None:
            packet.pts += ticks
        if packet.dts is not None:
            packet.dts += ticks


def _wallclock_us(packet: av.Packet[Any]) -> int | None:
    """The camera's wall clock for this packet (µs), once its stream has had a report."""
    if not packet.has_sidedata("prft"):
        return None
    data = bytes(packet.get_sidedata("prft"))  # AVProducerReferenceTime: int64 wallclock
    return int(struct.unpack_from("=q", data)[0]) if len(data) >= 8 else None
