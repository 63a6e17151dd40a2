"""One configured source, whole: its camera feeds (main, optional sub), the selectors that
fill its output streams, a publisher and a ring recorder per output stream.

Start order: feeds, selectors, ring recorders, publishers; stop in reverse.
"""

from __future__ import annotations

import asyncio

from device_agents.config import SourceConfig
from device_agents.protocol import SourceHealth
from device_agents.publisher import Publisher
from device_agents.ring import Ring
from device_agents.ring_recorder import RingRecorder
from device_agents.selector import Selector
from device_agents.sources import Feed, source_health
from media_server.hub import Hub


class SourceUnit:
    def __init__(
        self,
        hub: Hub,
        ring: Ring,
        name: str,
        config: SourceConfig,
        rtmp_url: str | list[str],
        segment_s: float,
    ) -> None:
        self.hub, self.ring, self.name, self.config = hub, ring, name, config
        self.feeds = {"main": Feed(hub, name, "main", config.kind, config.url)}
        if config.sub_url:
            self.feeds["sub"] = Feed(hub, name, "sub", config.kind, config.sub_url)
        self.active = "main"  # which camera stream feeds the main stream id
        self.selectors = {
            config.main.stream_id: Selector(hub, config.main.stream_id, self.feeds["main"].id)
        }
        streams = [config.main]
        if config.sub is not None and "sub" in self.feeds:
            self.selectors[config.sub.stream_id] = Selector(
                hub, config.sub.stream_id, self.feeds["sub"].id
            )
            streams.append(config.sub)
        self.publishers = {
            s.stream_id: Publisher(hub, s.stream_id, rtmp_url, s.key) for s in streams
        }
        self.recorders = {
            s.stream_id: RingRecorder(hub, ring, s.stream_id, segment_s) for s in streams
        }

    @property
    def main_id(self) -> str:
        return self.config.main.stream_id

    async def start(self) -> None:
        for selector in self.selectors.values():
            selector.start()
        for recorder in self.recorders.values():
            recorder.start()
        for publisher in self.publishers.values():
            publisher.start()
        # the test pattern waits for its first encoded frame: feeds last, together
        await asyncio.gather(*(feed.start() for feed in self.feeds.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.publishers.values()))
        await asyncio.gather(*(r.stop() for r in self.recorders.values()))
        await asyncio.gather(*(s.stop() for s in self.selectors.values()))
        await asyncio.gather(*(f.stop() for f in self.feeds.values()))

    # -- commands --
    def start_publishing(self) -> None:
        for publisher in self.publishers.values():
            publisher.start()

    async def stop_publishing(self) -> None:
        """The server stops getting this source; the local ring goes on recording."""
        await asyncio.gather(*(p.stop() for p in self.publishers.values()))

    async def switch(self, which: str) -> None:
        if which not in self.feeds:
            raise ValueError(f"source {self.name!r} has no {which} stream")
        await self.selectors[self.main_id].switch(self.feeds[which].id)
        self.active = which

    async def restart(self) -> None:
        await asyncio.gather(*(f.restart() for f in self.feeds.values()))

    def health(self) -> SourceHealth:
        publisher = self.publishers[self.main_id]
        problems = [p.problem for p in self.publishers.values() if p.problem]
        feed = self.feeds[self.active]
        return source_health(
            self.name,
            feed,
            feed.stream,
            publisher.publishing,
            self.active,
            problems[0] if problems else "",
        )
