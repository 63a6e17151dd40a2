"""The hub's consumer contract, and its queued kind.

A consumer is one reader of one stream as the hub sees it. `Stream.attach` hands it the
live publication's start and cached GOP, then the hub calls `offer(item)` with every item,
inside the publisher's push: offer must never block or await. `close()` detaches it.

Two stock kinds:
- `QueuedConsumer` (here): a bounded queue read by a task. One that falls behind loses its
  backlog, skips to the next keyframe and the loss is counted; it never makes the
  publisher or anyone else wait. For outputs that wait on a network.
- `Tap` (media_server/tap.py): handles each item within offer, with no queue and no task
  wake-up. For plain, fast, non-blocking Python (the LL-HLS segmenter).

The attributes below are what /metrics and the ingest read of every consumer.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from typing import TYPE_CHECKING

from media_server.media import Item, Packet, Skipped, StreamEnd, StreamStart, video_track

if TYPE_CHECKING:
    from media_server.hub import Stream

log = logging.getLogger(__name__)

# markers a fallen-behind queue keeps: a reader that never reads must not grow it with them
MAX_MARKERS = 8


class Consumer(ABC):
    """One reader of a stream; a kind says what offer() does with an item."""

    def __init__(self, stream: Stream, name: str) -> None:
        self.stream = stream
        self.name = name
        self.viewers = 1  # the readers it stands for (a WebRTC fan-out: all its viewers)
        # shows frames as they come (WebRTC): the ingest must not hold bytes back for it
        self.realtime = False
        self.drops = 0  # packets it lost, also counted in the stream's stats
        self.closed = False

    @abstractmethod
    def offer(self, item: Item) -> None:
        """Called by the publisher's push: handle or keep the item, never block."""

    @property
    def queued(self) -> int:
        """Packets offered and not yet read."""
        return 0

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.unsubscribe(self)


class QueuedConsumer(Consumer):
    """A bounded queue the publisher never waits on, read by a task with get()."""

    def __init__(self, stream: Stream, name: str, max_packets: int) -> None:
        super().__init__(stream, name)
        self.max_packets = max_packets
        self._queue: deque[Item] = deque()
        self._packets = 0
        self._skipping = False
        self._wakeup = asyncio.Event()

    # -- publisher side (sync, never blocks) --
    def offer(self, item: Item) -> None:
        if self.closed:
            return
        if isinstance(item, Packet):
            if self._skipping:
                if not (item.keyframe and self._is_video(item)):
                    self._drop(1)
                    return
                self._skipping = False
            if self._packets >= self.max_packets:
                self._fall_behind()
                if not (item.keyframe and self._is_video(item)):
                    self._drop(1)
                    return
                self._skipping = False
            self._packets += 1
        self._queue.append(item)
        self._wakeup.set()

    def _drop(self, count: int) -> None:
        self.drops += count
        self.stream.stats.drops += count

    def _is_video(self, packet: Packet) -> bool:
        tracks = self.stream.tracks
        return packet.track < len(tracks) and tracks[packet.track].is_video

    def _fall_behind(self) -> None:
        """Drop the backlog, keep markers, resume at the next video keyframe."""
        lost = self._packets
        earlier = sum(i.count for i in self._queue if isinstance(i, Skipped))
        markers = [i for i in self._queue if isinstance(i, (StreamStart, StreamEnd))]
        self._queue = deque(markers[-MAX_MARKERS:])
        self._queue.append(Skipped(earlier + lost))
        self._drop(lost)
        self._packets = 0
        self._skipping = video_track(self.stream.tracks) is not None
        log.info(
            "stream %s: subscriber %s fell behind, skipped %d packets",
            self.stream.id,
            self.name,
            lost,
        )

    # -- reader side --
    async def get(self) -> Item:
        """Next item, waiting for one. Raises EOFError once closed and drained."""
        while not self._queue:
            if self.closed:
                raise EOFError(self.name)
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._pop()

    def get_nowait(self) -> Item | None:
        return self._pop() if self._queue else None

    def _pop(self) -> Item:
        item = self._queue.popleft()
        if isinstance(item, Packet):
            self._packets -= 1
        return item

    @property
    def queued(self) -> int:
        return self._packets

    def close(self) -> None:
        self._wakeup.set()  # a reader waiting in get() sees the end
        super().close()

    def __aiter__(self) -> QueuedConsumer:
        return self

    async def __anext__(self) -> Item:
        try:
            return await self.get()
        except EOFError:
            raise StopAsyncIteration from None
