"""The selector: which camera feed fills an output stream (the stream id the platform
knows). `switch` points a source's main stream id at its camera's sub feed or back; the
publisher and the ring read the output stream and never notice, except as a new epoch
(a discontinuity, new sequence headers).

It re-publishes the same Packet objects into the agent hub: no copies, and no queue or
task of its own (a Tap): a packet reaches the output stream within the feed's push.
"""

from __future__ import annotations

import logging

from media_server.hub import Hub, Publication, StreamBusy
from media_server.media import Item, Packet, StreamEnd, StreamStart
from media_server.tap import Tap, tap

log = logging.getLogger(__name__)


class Selector:
    def __init__(self, hub: Hub, out_id: str, feed_id: str) -> None:
        self.hub, self.out_id, self.feed_id = hub, out_id, feed_id
        self._sub: Tap | None = None
        self._publication: Publication | None = None
        self._epoch: int | None = None

    def start(self) -> None:
        self._sub = tap(self.hub.stream(self.feed_id), f"selector {self.out_id}", self._forward)

    async def stop(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        self._unpublish("source stopped")

    async def switch(self, feed_id: str) -> None:
        """Feed the output from another camera stream, from its cached GOP on."""
        if feed_id == self.feed_id and self._sub is not None:
            return
        await self.stop()
        self.feed_id = feed_id
        self.start()

    def _forward(self, item: Item) -> None:
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
                self._publication = self.hub.publish(
                    self.out_id, item.tracks, source=f"feed {self.feed_id}"
                )
            except StreamBusy as exc:  # only if two selectors were given one output
                log.error("selector %s: %s", self.out_id, exc)
        elif isinstance(item, StreamEnd):
            self._unpublish(item.reason)

    def _unpublish(self, reason: str) -> None:
        if self._publication is not None:
            self._publication.close(reason)
            self._publication = None
