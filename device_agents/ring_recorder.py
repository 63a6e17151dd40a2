"""Records one output stream of the agent hub into the ring, all the time, whatever the
uplink does: hub items -> the Segmenter (keyframe-aligned fMP4, wall-clock in prft) ->
closed segments written in a worker thread, in order.

The segmenter is fed by a Tap, inside the hub's push (it is pure CPU and never waits) and
tells of each closed segment, which is queued for writing; only the disk writes leave the
event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from device_agents.ring import Ring
from media_server.hls.segmenter import Change, Segment, Segmenter
from media_server.hub import Hub
from media_server.media import Item
from media_server.tap import Tap, tap

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Write:
    init: bytes
    segment: Segment


class RingRecorder:
    def __init__(self, hub: Hub, ring: Ring, stream_id: str, segment_s: float = 2.0) -> None:
        self.hub, self.ring, self.stream_id = hub, ring, stream_id
        # parts as long as segments: one moof per segment, the ring needs no LL-HLS parts
        self.segmenter = Segmenter(
            segment_s, part_target_s=segment_s * 4, window_segments=4, prft=True
        )
        self.segmenter.listen(self._on_change)
        self.segments = 0
        self.errors = 0
        self._writes: deque[_Write] = deque()
        self._wrote = asyncio.Event()
        self._sub: Tap | None = None
        self._writer: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sub = tap(self.hub.stream(self.stream_id), f"ring {self.stream_id}", self._feed)
        self._writer = asyncio.create_task(self._write_loop(), name=f"ring w {self.stream_id}")

    async def stop(self, timeout_s: float = 2.0) -> None:
        """Close the open segment and write what is queued (within timeout_s)."""
        if self._sub is not None:
            self._sub.close()
        self.segmenter.end_run()  # the open segment closes, and is queued
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while self._writes:
                    self._wrote.clear()
                    await self._wrote.wait()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    def _feed(self, item: Item) -> None:
        try:
            self.segmenter.feed(item)
        except Exception:  # one bad packet must not stop local recording
            log.exception(
                "ring %s: segmenter failed; a new run starts at the next keyframe", self.stream_id
            )
            self.segmenter.end_run()

    def _on_change(self, change: Change, segment: Segment | None) -> None:
        """Queue each closed segment with the init it needs (the segmenter keeps the init
        of every segment in its window)."""
        if change is Change.segment and segment is not None:
            self._writes.append(_Write(self.segmenter.inits[segment.init_id], segment))
            self._wrote.set()

    async def _write_loop(self) -> None:
        while True:
            while not self._writes:
                self._wrote.clear()
                await self._wrote.wait()
            job = self._writes[0]
            try:
                await asyncio.to_thread(self._store, job)
                self.segments += 1
            except OSError as exc:  # a full or failing disk: keep trying the next ones
                self.errors += 1
                log.error("ring %s: cannot write a segment: %s", self.stream_id, exc)
            self._writes.popleft()
            self._wrote.set()

    def _store(self, job: _Write) -> None:
        seg = job.segment
        name = self.ring.add_init(self.stream_id, job.init)
        self.ring.add_segment(
            self.stream_id, name, seg.wallclock, seg.duration, seg.start, seg.data()
        )
