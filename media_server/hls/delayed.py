"""A delayed LL-HLS rendition of a stream that can be switched to a slate: what the
public sees of a broadcast (DESIGN.md §7). It knows nothing of sessions; whoever drives it
(recorder/broadcast.py) says which stream, how late, and when to cut.

The same packets as live, held: a tap keeps what the hub pushes, stamped with its capture
wall-clock, and a ticker hands each item to the rendition's own segmenter `delay_s` after
it was captured. Nothing is decoded or encoded on this path.

A cut throws away everything held (media captured in the last `delay_s`), keeps nothing
captured while it lasts, ends the segment being built and shows the slate (encoded once per
stream format, media_server/slate.py) from the next part on. A resume keeps media again
from the next keyframe on; the slate plays until that keyframe is due, `delay_s` later,
so the rendition stays as late as before. The slate's program date-time is the capture
time it stands in for, so the public timeline stays one clock.

With `mask="faces"` the tap's items pass through a FaceMask (media_server/face_mask.py)
on their way in: the one case where this path decodes and encodes, in a worker thread. The
masked items keep their capture clock, so delay, cut and slate work on them as on the
stream's own; what was in the masker when a cut came is dropped as it comes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from media_server.face_mask import FaceMask
from media_server.hls.output import HlsOptions, SegmentWindow
from media_server.hub import Hub
from media_server.media import Item, Packet, Skipped, StreamStart, video_track
from media_server.slate import Slate, SlateCache, SlateFormat
from media_server.tap import tap

log = logging.getLogger(__name__)

TICK_S = 0.05  # how often held items are released (a part is 0.5 s)
MAX_HELD_BYTES = 256 << 20  # ~30 s of a 60 Mbit/s stream; past it, resync at a keyframe
SLATE_EPOCH = -1  # the slate's "publication", never one of the hub's


@dataclass
class _SlateRun:
    """The slate being shown: when it started and, per track, how many packets of its loop
    went out so far."""

    slate: Slate
    started: float  # wall-clock
    sent: list[int]
    by_track: list[list[Packet]]

    @classmethod
    def of(cls, slate: Slate, now: float) -> _SlateRun:
        by_track = [[p for p in slate.packets if p.track == t.index] for t in slate.tracks]
        return cls(slate, now, [0] * len(slate.tracks), by_track)


class DelayedRendition(SegmentWindow):
    def __init__(
        self,
        hub: Hub,
        stream_id: str,
        delay_s: float,
        options: HlsOptions,
        slates: SlateCache,
        clock: Callable[[], float] = time.time,
        mask: str = "",
    ) -> None:
        super().__init__(options)
        self._clock = clock  # wall-clock, as packets' arrival (tests drive their own)
        self.stream_id = stream_id
        self.delay_s = delay_s
        self.mask = mask
        self.cut_active = False
        self._slates = slates
        self._held: deque[tuple[float, Item]] = deque()  # (capture wall-clock, item)
        self._held_bytes = 0
        self._start: StreamStart | None = None  # the stream's current publication
        self._want_keyframe = False  # after a resume or a resync: keep from a keyframe on
        self._kept_from = 0.0  # capture clock of the last resume: nothing older is kept
        self._slate: _SlateRun | None = None
        self._closed = False
        self._mask = FaceMask(stream_id, self._offer) if mask == "faces" else None
        on_item = self._mask.offer if self._mask is not None else self._offer
        self._tap = tap(hub.stream(stream_id), "public", on_item, self._resync)
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="public tick")

    # -- input (the tap: on the publisher's stack, never blocks) ------------------------

    def _offer(self, item: Item) -> None:
        if isinstance(item, StreamStart):
            self._start = item
            self._prepare_slate()
        if self.cut_active:
            return  # nothing captured during a cut is kept
        if self._want_keyframe:
            if not (isinstance(item, Packet) and self._starts_run(item)):
                return
            if item.arrival < self._kept_from:
                return  # captured before the resume (it was in the masker)
            self._want_keyframe = False
            if self._start is not None:
                self._hold(item.arrival, self._start)
        if isinstance(item, Packet):
            self._hold(item.arrival, item)
            self._held_bytes += len(item.data)
            if self._held_bytes > MAX_HELD_BYTES:
                log.warning("public %s: over %d bytes held, resync", self.stream_id, MAX_HELD_BYTES)
                self._resync()
        else:
            self._hold(self._clock(), item)

    def _hold(self, at: float, item: Item) -> None:
        self._held.append((at, item))

    def _starts_run(self, packet: Packet) -> bool:
        video = video_track(self._start.tracks) if self._start is not None else None
        return video is None or (packet.track == video.index and packet.keyframe)

    def _resync(self) -> None:
        """Drop what is held; keep again from the next keyframe (after a tap error)."""
        self._held.clear()
        self._held_bytes = 0
        self._want_keyframe = True
        self.segmenter.feed(Skipped(0))

    def _prepare_slate(self) -> None:
        """Encode this format's slate ahead (in a thread), so a cut has it at once."""
        if self._start is not None and not self._closed:
            fmt = SlateFormat.of(self._start.tracks)
            if self._slates.peek(fmt) is None:
                asyncio.get_running_loop().create_task(self._slates.get(fmt))

    # -- cut and resume -----------------------------------------------------------------

    def cut(self) -> None:
        """Show the slate from now on; nothing held or captured until resume() goes out."""
        if self.cut_active:
            return
        self.cut_active = True
        self._held.clear()
        self._held_bytes = 0
        self._want_keyframe = False
        self.segmenter.end_run()  # the part being built holds only media already due
        log.info("public %s: cut, slate shown", self.stream_id)
        fmt = SlateFormat.of(self._start.tracks if self._start else ())
        slate = self._slates.peek(fmt)
        if slate is not None:
            self._show(slate)
        else:
            asyncio.get_running_loop().create_task(self._show_when_encoded(fmt))

    async def _show_when_encoded(self, fmt: SlateFormat) -> None:
        slate = await self._slates.get(fmt)
        if self.cut_active and self._slate is None and not self._closed:
            self._show(slate)

    def _show(self, slate: Slate) -> None:
        self._slate = _SlateRun.of(slate, self._clock())
        self.segmenter.feed(StreamStart(slate.tracks, SLATE_EPOCH))

    def resume(self) -> None:
        """Keep media again from the next keyframe; it goes out delay_s after capture, the
        slate filling in until then."""
        if self.cut_active:
            self.cut_active = False
            self._want_keyframe = True
            self._kept_from = self._clock()
            log.info("public %s: resumed, live again in %.0f s", self.stream_id, self.delay_s)

    # -- output -------------------------------------------------------------------------

    async def _tick(self) -> None:
        while True:
            try:
                self.release(self._clock())
            except Exception:  # a bug must not stop the broadcast for good
                log.exception("public %s: release failed", self.stream_id)
                self._resync()
            await asyncio.sleep(TICK_S)

    def release(self, now: float) -> None:
        """Feed the segmenter what is due: held items captured delay_s ago, or slate."""
        due = now - self.delay_s
        held = self._held
        while held and held[0][0] <= due:
            _, item = held.popleft()
            if isinstance(item, Packet):
                self._held_bytes -= len(item.data)
            elif isinstance(item, StreamStart) and self._slate is not None:
                self._slate = None  # live is back (after a resume)
                self.segmenter.end_run()
            self.segmenter.feed(item)
        if self._slate is not None:
            self._feed_slate(now)

    def _feed_slate(self, now: float) -> None:
        run = self._slate
        assert run is not None
        slate, elapsed = run.slate, now - run.started
        out: list[tuple[float, Packet]] = []
        for track in slate.tracks:
            loop, ts = slate.loop_units[track.index], track.timescale
            own = run.by_track[track.index]
            while True:
                n = run.sent[track.index]
                lap, k = divmod(n, len(own))
                p = own[k]
                shift = lap * loop
                at = (p.dts + shift) / ts
                if at > elapsed:
                    break
                capture = run.started - self.delay_s + at
                out.append(
                    (at, Packet(p.track, p.dts + shift, p.pts + shift, p.keyframe, p.data, capture))
                )
                run.sent[track.index] = n + 1
        for _, packet in sorted(out, key=lambda x: x[0]):
            self.segmenter.feed(packet)

    @property
    def showing_slate(self) -> bool:
        return self._slate is not None

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        """Stop: nothing more is served; blocked requests are answered at once."""
        if self._closed:
            return
        self._closed = True
        self._tap.close()
        if self._mask is not None:
            self._mask.close()
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        self._held.clear()
        self._wake()
