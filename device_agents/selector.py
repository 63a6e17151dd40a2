"""The selector: which camera feed fills an output stream (the stream id the platform
knows). `switch` points a source's main stream id at its camera's sub feed or back; the
publisher and the ring read the output stream and never notice, except as a new epoch
(a discontinuity, new sequence headers).

It re-publishes the same Packet objects into the agent hub: no copies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from media_server.hub import Hub, Publication, StreamBusy, Subscription
from media_server.media import Packet, StreamEnd, StreamStart

log = logging.getLogger(__name__)

QUEUE_PACKETS = 2000  # in-process, read at once: a skip here would be a bug elsewhere


class Selector:
    def __init__(self, hub: Hub, out_id: str, feed_id: str) -> None:
        self.hub, self.out_id, self.feed_id = hub, out_id, feed_id
        self._sub: Subscription | None = None
        self._publication: Publication | None = None
        self._epoch: int | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sub = self.hub.stream(self.feed_id).subscribe(f"selector {self.out_id}",
                                                            QUEUE_PACKETS)
        self._task = asyncio.create_task(self._run(self._sub), name=f"select {self.out_id}")

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._unpublish("source stopped")

    async def switch(self, feed_id: str) -> None:
        """Feed the output from another camera stream, from its cached GOP on."""
        if feed_id == self.feed_id and self._task is not None:
            return
        await self.stop()
        self.feed_id = feed_id
        self.start()

    async def _run(self, sub: Subscription) -> None:
        while True:
            try:
                item = await sub.get()
            except EOFError:
                return
            while item is not None:
                self._forward(item)
                item = sub.get_nowait()

    def _forward(self, item: object) -> None:
        if isinstance(item, Packet):
            if self._publication is not None:
                self._publication.push(item)
        elif isinstance(item, StreamStart):
            if self._publication is not None and item.epoch == self._epoch:
                self._publication.set_tracks(item.tracks)  # new codec config, same camera
                return
            self._unpublish("camera reconnected")
            self._epoch = item.epoch
            try:
                self._publication = self.hub.publish(self.out_id, item.tracks,
                                                     source=f"feed {self.feed_id}")
            except StreamBusy as exc:  # only if two selectors were given one output
                log.error("selector %s: %s", self.out_id, exc)
        elif isinstance(item, StreamEnd):
            self._unpublish(item.reason)

    def _unpublish(self, reason: str) -> None:
        if self._publication is not None:
            self._publication.close(reason)
            self._publication = None
