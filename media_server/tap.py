"""Tap: the inline kind of hub consumer (media_server/consumer.py), called inside the
publisher's push.

For outputs that are plain, fast, non-blocking Python: the LL-HLS segmenter, the agent's
selector and ring recorder. Behind a queued consumer each of them costs a task wake-up per
packet (Event.set, a future, a loop turn); a tap costs one call. Nothing here may block or
await: a tap runs on the pusher's stack. Outputs that must wait on a network (RTMP play,
WebRTC, the agent's uplink) keep a queue, which is what lets a slow one skip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from media_server.consumer import Consumer
from media_server.hub import Stream
from media_server.media import Item

log = logging.getLogger(__name__)

OnItem = Callable[[Item], None]
OnError = Callable[[], None]


class Tap(Consumer):
    def __init__(
        self, stream: Stream, name: str, on_item: OnItem, on_error: OnError | None = None
    ) -> None:
        super().__init__(stream, name)
        self._on_item = on_item
        self._on_error = on_error

    def offer(self, item: Item) -> None:
        if self.closed:
            return
        try:
            self._on_item(item)
        except Exception:  # a bug in one output must not break the pusher's other outputs
            log.exception(
                "stream %s: %s failed on %s", self.stream.id, self.name, type(item).__name__
            )
            if self._on_error is not None:
                self._on_error()


def tap(stream: Stream, name: str, on_item: OnItem, on_error: OnError | None = None) -> Tap:
    """Handle the stream's items as they are pushed, from the current publication and
    its cached GOP on. on_error runs after on_item raised (which is logged): the output's
    chance to start over. on_item is called as it is, with nothing between: keep it lean."""
    return stream.attach(Tap(stream, name, on_item, on_error))
