"""Streams' live and recording state as news between roles: the media server says when a
publication starts and ends, the recorder when it starts and stops recording a stream, and
the control room (control_room/events.py) passes it on to signed-in browsers.

News goes over one pub/sub channel of the state store, so the path is the same whether the
roles share a process or not. Pub/sub queues nothing, so the same facts are also kept as
presence (media server: `stream-live`; recorder: `stream-recording`), which is what a new
listener starts from and what catches a node that died without a word.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

CHANNEL = "stream-events"


def live_news(stream_id: str, live: bool, at: float) -> dict[str, Any]:
    """A publication of stream_id started (live) or ended; `at` is the sender's clock."""
    return {"id": stream_id, "live": live, "at": at}


def recording_news(stream_id: str, recording: bool, at: float) -> dict[str, Any]:
    """The recorder started or stopped writing stream_id."""
    return {"id": stream_id, "recording": recording, "at": at}


Publish = Callable[[str, Mapping[str, Any]], Awaitable[int]]


class NewsSender:
    """Sends news in order from code that cannot await (the hub's callbacks): `say()` queues,
    `run()` (a task) publishes. Bounded: while Redis is away news is dropped, not hoarded;
    the presence entries tell listeners what they missed."""

    def __init__(self, publish: Publish, limit: int = 1000) -> None:
        self._publish = publish
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(limit)
        self.dropped = 0

    def say(self, news: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait(news)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        while True:
            news = await self._queue.get()
            try:
                await self._publish(CHANNEL, news)
            except Exception:  # Redis away: presence says it later
                self.dropped += 1
                log.debug("stream news not sent: %s", news, exc_info=True)
