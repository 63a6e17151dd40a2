"""Cut a stream's packets into fMP4 parts and segments, in memory.

The segmenter is synchronous and does no I/O. Three outputs use it: LL-HLS (serves the
window it holds), the recorder (spools and uploads what it makes) and the device agent's
ring (writes closed segments to disk). Each feeds it hub items and is told of what it made
by a listener (`listen`), called when a publication starts or ends and when a part or a
segment closes. Rules:

- A segment starts only at a keyframe of the lead track (the video track; for audio-only
  streams every frame is a keyframe), the first one at or after the segment target.
- A part ends before the lead packet that would make it longer than the part target, so
  parts are never longer than the target (unless one frame alone is). Parts need no
  keyframe; one that starts with a keyframe is independent. Other tracks (audio) are cut at
  the same media time as the lead track.
- Each run of continuous media (a publication, or what follows a skip or a timestamp jump)
  is rebased to continue the output timeline where the previous run ended, so plain HLS
  clients see monotonic timestamps; the run starts with a discontinuity and, if the codec
  config changed, a new init segment. A writer resumed after a restart says where its
  timeline ended (`continue_timeline`).
- Packets whose dts does not increase on their track are dropped and counted.
- Keyframes carry the parameter sets in-band too, so players that keep the first init
  segment (FFmpeg) still follow a resolution change after a restart.
"""

from __future__ import annotations

import bisect
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from media_server import fmp4
from media_server.fmp4 import TrackRun
from media_server.media import Item, Packet, Skipped, StreamEnd, StreamStart, Track, video_track

log = logging.getLogger(__name__)

MAX_LEAD_GAP_S = 10.0  # a jump in the lead track's dts bigger than this starts a new run


@dataclass(slots=True)
class Part:
    """A partial segment: one moof+mdat, ready to serve."""

    msn: int
    index: int
    data: bytes
    duration: float
    independent: bool


@dataclass(slots=True)
class Segment:
    """A media segment: the concatenation of its parts once complete.

    start is on the output timeline (seconds); wallclock is the program date-time of its
    first sample (UNIX seconds); init_id names the init segment (EXT-X-MAP) it needs.
    """

    msn: int
    start: float
    wallclock: float
    init_id: int
    discontinuity: bool
    discontinuity_sequence: int
    parts: list[Part] = field(default_factory=list)
    duration: float = 0.0
    complete: bool = False
    _data: bytes | None = None
    # playlist lines of this segment once complete, by how they were asked for (first,
    # new_map, with_parts, query): a complete segment never changes, playlists often do
    lines: dict[tuple[bool, bool, bool, str], list[str]] = field(default_factory=dict)

    def data(self) -> bytes:
        if self._data is None:
            joined = b"".join(p.data for p in self.parts)
            if not self.complete:
                return joined
            self._data = joined
        return self._data


class Change(StrEnum):
    """What a listener is told, with the segment it concerns (None for start and end)."""

    start = "start"  # a publication began: new tracks, maybe a new init segment
    part = "part"  # a part closed: the newest part of the segment
    segment = "segment"  # the segment closed: complete, it will not change any more
    end = "end"  # the publication ended: not live any more


Listener = Callable[[Change, Segment | None], None]


@dataclass(slots=True)
class _Run:
    """Where a run of continuous media sits on the output timeline."""

    offsets: list[int]  # added to each track's dts
    base: float  # output time (s) of the run's first lead sample
    wallclock: float  # wall-clock of that sample


class Segmenter:
    """Hub items in, parts and segments (with their init segments) out."""

    def __init__(
        self,
        segment_target_s: float = 2.0,
        part_target_s: float = 0.5,
        window_segments: int = 6,
        first_msn: int = 0,
        prft: bool = True,
    ) -> None:
        self.segment_target_s = segment_target_s
        self.part_target_s = part_target_s
        self.window_segments = window_segments
        self.prft = prft
        self.segments: deque[Segment] = deque()  # complete, oldest first
        self.open: Segment | None = None
        self.inits: dict[int, bytes] = {}
        self.tracks: tuple[Track, ...] = ()
        self.epoch = 0
        self.live = False
        self.version = 0  # grows with every change a listener is told of
        self.dropped = 0
        self.max_segment_s = 0.0
        self._next_msn = first_msn
        self._init_id = -1
        self._fragment_seq = 1
        self._discontinuity_seq = 0
        self._pending_discontinuity = False
        self._timeline_end = 0.0
        self._listeners: list[Listener] = []
        self._lead = -1
        self._lead_ts = 1
        self._keyframe_prefix = b""
        self._run: _Run | None = None
        self._pending: list[list[Packet]] = []
        self._last_dts: list[int | None] = []
        self._part_start = 0
        self._seg_start = 0
        self._part_units = 0.0
        self._seg_units = 0.0
        self._gap_units = 0.0

    def listen(self, listener: Listener) -> None:
        """Call listener(change, segment) after each change, inside feed() or end_run():
        it runs on the feeder's stack, so it must be quick and must not block."""
        self._listeners.append(listener)

    def continue_timeline(self, end_s: float) -> None:
        """Start the next run at end_s (seconds) on the output timeline, as if a run had
        ended there: a writer resumed after a restart continues its media timeline."""
        if self._run is not None:
            raise RuntimeError("continue_timeline: a run is open; end_run() first")
        self._timeline_end = end_s

    # -- input --------------------------------------------------------------------------

    def feed(self, item: Item) -> None:
        if isinstance(item, Packet):
            self._packet(item)
        elif isinstance(item, StreamStart):
            self._stream_start(item)
        elif isinstance(item, StreamEnd):
            self.end_run()
            self.live = False
            self._changed(Change.end, None)
        elif isinstance(item, Skipped):
            log.info(
                "segmenter: skipped %d packets, the next segment starts a discontinuity", item.count
            )
            self.end_run()

    def _stream_start(self, start: StreamStart) -> None:
        if self.tracks and start.tracks == self.tracks and start.epoch == self.epoch:
            self.live = True
            return  # the same publication announced again
        self.end_run()
        self.epoch = start.epoch
        lead = video_track(start.tracks) or next(iter(start.tracks), None)
        try:
            init = fmp4.init_segment(start.tracks) if lead else b""
        except ValueError as e:
            log.warning("segmenter: cannot package this stream: %s", e)
            lead = None
        if lead is None:
            self.tracks, self._lead, self.live = (), -1, False
            return
        self.tracks = start.tracks
        self.live = True
        self._lead, self._lead_ts = lead.index, lead.timescale
        self._keyframe_prefix = fmp4.parameter_sets(lead)
        self._part_units = self.part_target_s * lead.timescale
        self._seg_units = self.segment_target_s * lead.timescale
        self._gap_units = MAX_LEAD_GAP_S * lead.timescale
        self._pending = [[] for _ in start.tracks]
        self._last_dts = [None] * len(start.tracks)
        self._init_id = self._next_msn  # unique: no segment of an older init has this msn
        self.inits[self._init_id] = init
        self._changed(Change.start, None)

    def _packet(self, p: Packet) -> None:
        i = p.track
        if i >= len(self._pending):
            return
        last = self._last_dts[i]
        if last is not None and p.dts <= last:
            self._drop(p, "dts does not increase")
            return
        if i == self._lead:
            if last is not None and p.dts - last > self._gap_units and self._run:
                log.info(
                    "segmenter: lead dts jumped %.1f s, new run", (p.dts - last) / self._lead_ts
                )
                self.end_run()
            if not self._lead_packet(p):
                return
        elif self._run is None or p.dts + self._run.offsets[i] < 0:
            self.dropped += 1  # before the first lead keyframe of the run
            return
        else:
            self._pending[i].append(p)
        self._last_dts[i] = p.dts

    def _drop(self, p: Packet, why: str) -> None:
        self.dropped += 1
        if self.dropped & (self.dropped - 1) == 0:  # log the 1st, 2nd, 4th, 8th... drop
            log.info(
                "segmenter: dropped packet of track %d (%s), %d dropped so far",
                p.track,
                why,
                self.dropped,
            )

    def _lead_packet(self, p: Packet) -> bool:
        sync = p.keyframe or not self.tracks[self._lead].is_video
        if self._run is None:
            if not sync:
                self.dropped += 1
                return False
            self._start_run(p)
        else:
            lead = self._pending[self._lead]
            if p.dts - self._part_start > self._part_units and len(lead) > 1:
                self._close_part(lead[-1].dts, keep_last=True)
            if sync and p.dts - self._seg_start >= self._seg_units:
                self._close_part(p.dts)
                self._close_segment()
                self._open_segment(p)
            elif p.dts - self._part_start >= self._part_units:
                self._close_part(p.dts)
        self._pending[self._lead].append(p)
        return True

    # -- runs, parts, segments ----------------------------------------------------------

    def _start_run(self, first: Packet) -> None:
        """Map this run onto the output timeline, continuing where the last one ended."""
        base = self._timeline_end
        lead_ts = self._lead_ts
        offsets = [
            round(base * t.timescale) - round(first.dts * t.timescale / lead_ts)
            for t in self.tracks
        ]
        self._run = _Run(offsets, base, first.arrival)
        self._open_segment(first)

    def _open_segment(self, first: Packet) -> None:
        run = self._run
        assert run is not None
        start = (first.dts + run.offsets[self._lead]) / self._lead_ts
        discontinuity = self._pending_discontinuity
        self._pending_discontinuity = False
        if discontinuity:
            self._discontinuity_seq += 1
        self.open = Segment(
            self._next_msn,
            start,
            run.wallclock + start - run.base,
            self._init_id,
            discontinuity,
            self._discontinuity_seq,
        )
        self._next_msn += 1
        self._seg_start = self._part_start = first.dts

    def _close_part(self, end_dts: int | None, keep_last: bool = False) -> None:
        """Emit the pending packets up to end_dts (lead track units) as one part.

        keep_last: the last pending lead packet (which starts at end_dts) begins the next
        part. end_dts None: the run ends; the last sample keeps the previous duration.
        """
        run, seg = self._run, self.open
        assert run is not None and seg is not None
        lead_track = self.tracks[self._lead]
        lead_pending = self._pending[self._lead]
        lead_packets = lead_pending[:-1] if keep_last else lead_pending
        if not lead_packets:
            return
        all_in = end_dts is None
        if end_dts is None:
            end_dts = lead_packets[-1].dts + _last_duration(lead_packets, lead_track)
        cut = None if all_in else (end_dts + run.offsets[self._lead]) / self._lead_ts
        runs = [
            TrackRun(
                lead_track,
                lead_packets,
                end_dts,
                run.offsets[self._lead],
                keyframe_prefix=self._keyframe_prefix,
            )
        ]
        for i, pending in enumerate(self._pending):
            if i != self._lead and pending:
                runs.append(self._take_until(i, pending, cut))
        runs = [r for r in runs if r.packets]
        wallclock = None
        if self.prft and not seg.parts:
            wallclock = run.wallclock + seg.start - run.base
        data = fmp4.fragment(self._fragment_seq, runs, wallclock)
        self._fragment_seq += 1
        first = lead_packets[0]
        independent = first.keyframe or not lead_track.is_video
        seg.parts.append(
            Part(seg.msn, len(seg.parts), data, (end_dts - first.dts) / self._lead_ts, independent)
        )
        self._timeline_end = (end_dts + run.offsets[self._lead]) / self._lead_ts
        self._pending[self._lead] = lead_pending[-1:] if keep_last else []
        self._part_start = end_dts
        self._changed(Change.part, seg)

    def _take_until(self, i: int, pending: list[Packet], cut: float | None) -> TrackRun:
        """The packets of track i that start before the cut (output seconds)."""
        run = self._run
        assert run is not None
        track = self.tracks[i]
        if cut is None:
            n = len(pending)
        else:
            limit = cut * track.timescale - run.offsets[i]
            n = bisect.bisect_left(pending, limit, key=lambda p: p.dts)
        taken, rest = pending[:n], pending[n:]
        self._pending[i] = rest
        return TrackRun(track, taken, rest[0].dts if rest else None, run.offsets[i])

    def _close_segment(self) -> None:
        seg = self.open
        if seg is None:
            return
        self.open = None
        if not seg.parts:
            self._next_msn = seg.msn  # nothing was in it: reuse its number
            return
        seg.duration = sum(p.duration for p in seg.parts)
        seg.complete = True
        self.max_segment_s = max(self.max_segment_s, seg.duration)
        self.segments.append(seg)
        while len(self.segments) > self.window_segments:
            self.segments.popleft()
        used = {s.init_id for s in self.segments} | {self._init_id}
        for init_id in [k for k in self.inits if k not in used]:
            del self.inits[init_id]
        self._changed(Change.segment, seg)

    def end_run(self) -> None:
        """Close what is pending (publisher gone, skip, jump); what follows is a new run
        behind a discontinuity."""
        if self._run is not None:
            self._close_part(None)
            self._close_segment()
            self._pending_discontinuity = True
        self._run = None
        self._pending = [[] for _ in self._pending]

    def _changed(self, change: Change, segment: Segment | None) -> None:
        self.version += 1
        for listener in self._listeners:
            listener(change, segment)

    # -- queries (what the HTTP side asks) ----------------------------------------------

    @property
    def last_msn(self) -> int | None:
        """The media sequence number of the newest complete segment."""
        return self.segments[-1].msn if self.segments else None

    def segment(self, msn: int) -> Segment | None:
        """A complete segment still in the window."""
        if not self.segments:
            return None
        i = msn - self.segments[0].msn
        return self.segments[i] if 0 <= i < len(self.segments) else None

    def part(self, msn: int, index: int) -> Part | None:
        seg = self.open if self.open is not None and self.open.msn == msn else self.segment(msn)
        if seg is None or not 0 <= index < len(seg.parts):
            return None
        return seg.parts[index]

    def next_part(self) -> tuple[int, int] | None:
        """(msn, index) of the part being built: the preload hint. None when not live.
        Between two runs (a cut to the slate, a resume) it is the next run's first part."""
        if not self.live:
            return None
        if self.open is None:
            return self._next_msn, 0
        return self.open.msn, len(self.open.parts)

    @property
    def next_init(self) -> int | None:
        """The init segment the next run's media uses, once its start is known."""
        return self._init_id if self.live and self.tracks else None

    def has(self, msn: int, part: int | None = None) -> bool:
        """Whether a playlist would now contain segment msn (complete) or, with part, that
        part. A part index past the last part of a complete segment means part 0 of the
        next segment (RFC 8216bis, blocking playlist reload)."""
        newest = self.last_msn
        if part is None:
            return newest is not None and newest >= msn
        if newest is not None and newest >= msn:
            seg = self.segment(msn)
            if seg is None or part < len(seg.parts):
                return True
            return self.has(msn + 1, 0)
        return self.open is not None and self.open.msn == msn and part < len(self.open.parts)

    def is_future_part(self, msn: int, index: int) -> bool:
        """Whether (msn, index) may still appear soon: the hinted part or the next segment's
        first part."""
        nxt = self.next_part()
        if nxt is None:
            return False
        return (msn, index) in (nxt, (nxt[0] + 1, 0))


def _last_duration(packets: list[Packet], track: Track) -> int:
    """The duration the last sample of a run gets when nothing follows it."""
    if len(packets) > 1:
        return packets[-1].dts - packets[-2].dts
    return fmp4.guess_duration(track)
