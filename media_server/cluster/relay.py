"""On-demand relays: a node asked for a stream published on another node (the origin) pulls
it once over the packet link (link.py) and publishes it into its own hub, where every local
viewer, LL-HLS, WHEP or RTMP, takes it like any other stream. The origin's first frames are
the publication's start and its cached GOP, so the first viewer here starts at once. The
relay ends when nobody here has consumed the stream for `idle_s`.

A relayed copy never takes the origin lease and is never served to a third node, so relays
cannot loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import httpx

from media_server.cluster.link import Decoder, LinkError, NodeTokens, encode_into
from media_server.cluster.nodes import NodeDirectory
from media_server.cluster.origins import Origins
from media_server.consumer import QueuedConsumer
from media_server.hub import Hub, Publication, Stream, StreamBusy
from media_server.media import Item, Packet, StreamEnd, StreamStart

log = logging.getLogger(__name__)

SOURCE = "relay from "  # how a relayed publication names its source
PATH = "/cluster/v1/relay/"
QUEUE_PACKETS = 1200  # the origin's queue for one pulling node (~16 s at 30 fps + audio)
READ_TIMEOUT_S = 10.0  # a live origin sends every frame; this long silent: the link is dead
RETRY_S = 1.0  # after a relay failed, viewers' requests do not start another sooner


# Consumers a media node attaches to a stream whether anyone asked or not (the recorder's
# continuous recordings, security analysis): they neither start a relay nor hold one, or a
# relay once opened for a viewer would never end. A recorder process of a fleet has a hub
# of its own, where its recordings are what the relays are for: it gives no background.
BACKGROUND = ("recorder ", "analysis")


def is_relay(stream: Stream) -> bool:
    publication = stream.publication
    return publication is not None and publication.source.startswith(SOURCE)


async def origin_items(sub: QueuedConsumer) -> AsyncIterator[bytes]:
    """The origin side: what one pulling node is sent, batched as the queue allows."""
    try:
        while True:
            item = await sub.get()
            frames: list[bytes] = []
            encode_into(item, frames)
            while not isinstance(item, StreamEnd) and (more := sub.get_nowait()) is not None:
                item = more
                encode_into(item, frames)
            yield b"".join(frames)
            if isinstance(item, StreamEnd):
                return
    except EOFError:
        return
    finally:
        sub.close()


class Relay:
    """One pulled stream on this node."""

    def __init__(self, hub: Hub, stream_id: str, origin: str, url: str, auth: str) -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.origin = origin
        self.url = f"{url.rstrip('/')}{PATH}{stream_id}"
        self._auth = auth
        self.wanted = time.monotonic()  # a local consumer was last seen (or asked) then
        self.publication: Publication | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=f"relay {self.stream_id}")

    async def run(self) -> None:
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_S)
        try:
            async with (
                httpx.AsyncClient(timeout=timeout) as client,
                client.stream("GET", self.url, headers={"Authorization": self._auth}) as answer,
            ):
                if answer.status_code != 200:
                    body = (await answer.aread()).decode(errors="replace")[:200]
                    log.warning(
                        "relay %s from %s refused: %s %s",
                        self.stream_id,
                        self.origin,
                        answer.status_code,
                        body,
                    )
                    return
                log.info("relay %s: pulling from %s", self.stream_id, self.origin)
                decoder = Decoder()
                async for chunk in answer.aiter_raw():
                    for item in decoder.feed(chunk):
                        self._take(item)
        except (httpx.HTTPError, OSError, LinkError, StreamBusy) as exc:
            log.warning("relay %s from %s ended: %s", self.stream_id, self.origin, exc)
        finally:
            self._end("relay ended")

    def _take(self, item: Item) -> None:
        if isinstance(item, Packet):
            if self.publication is not None:
                self.publication.push(item)
        elif isinstance(item, StreamStart):
            self._end("origin restarted")  # a new epoch there: a discontinuity here too
            source = f"{SOURCE}{self.origin}"
            self.publication = self.hub.publish(self.stream_id, item.tracks, source)
        elif isinstance(item, StreamEnd):
            self._end(item.reason)

    def _end(self, reason: str) -> None:
        if self.publication is not None:
            self.publication.close(reason)
            self.publication = None

    @property
    def live(self) -> bool:
        return self.publication is not None and self.publication.alive

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        self._end("relay dropped: nobody watching")


class Relays:
    """This node's relays: at most one per stream, whatever the number of local viewers."""

    def __init__(
        self,
        hub: Hub,
        node: str,
        origins: Origins,
        directory: NodeDirectory,
        tokens: NodeTokens,
        idle_s: float,
        wait_s: float,
        background: tuple[str, ...] = BACKGROUND,
    ) -> None:
        self.hub = hub
        self.background = background
        self.node = node
        self.origins = origins
        self.directory = directory
        self.tokens = tokens
        self.idle_s = idle_s
        self.wait_s = wait_s
        self.active: dict[str, Relay] = {}
        self.opened = 0  # relays started since this node started (stats)
        self._failed: dict[str, float] = {}  # stream id -> when its last relay failed

    async def want(self, stream_id: str) -> None:
        """A consumer here asks for the stream: if it is live on another node, pull it (once)
        and wait until it is live here, at most wait_s."""
        relay = self.active.get(stream_id)
        if relay is not None:
            relay.wanted = time.monotonic()
        else:
            stream = self.hub.find(stream_id)
            if stream is not None and stream.live:  # published here: the hot path
                return
            if time.monotonic() - self._failed.get(stream_id, -RETRY_S) < RETRY_S:
                return
            relay = await self._open(stream_id)
            if relay is None:
                return
        await self._wait_live(relay)

    async def _open(self, stream_id: str) -> Relay | None:
        origin = await self.origins.holder(stream_id)
        if origin is None or origin == self.node:
            log.debug("relay %s: live on no other node", stream_id)
            return None
        url = await self.directory.url_of(origin)
        if url is None or stream_id in self.active:  # gone, or opened while we asked
            if url is None:
                log.info("relay %s: its origin %s is not in the node directory", stream_id, origin)
            return self.active.get(stream_id)
        auth = f"Bearer {self.tokens.make(stream_id, self.node)}"
        relay = self.active[stream_id] = Relay(self.hub, stream_id, origin, url, auth)
        relay.start()
        assert relay.task is not None
        relay.task.add_done_callback(lambda _: self._ended(relay))
        self.opened += 1
        return relay

    def _ended(self, relay: Relay) -> None:
        if self.active.get(relay.stream_id) is relay:
            del self.active[relay.stream_id]
            self._failed[relay.stream_id] = time.monotonic()

    async def _wait_live(self, relay: Relay) -> None:
        deadline = time.monotonic() + self.wait_s
        while not relay.live and time.monotonic() < deadline:
            if relay.task is None or relay.task.done():
                return
            await asyncio.sleep(0.02)

    async def reap(self) -> None:
        """Drop the relays nobody here has consumed for idle_s."""
        now = time.monotonic()
        for stream_id, relay in list(self.active.items()):
            stream = self.hub.find(stream_id)
            subs = stream.subscribers if stream is not None else []
            if any(not sub.name.startswith(self.background) for sub in subs):
                relay.wanted = now
            elif now - relay.wanted >= self.idle_s:
                log.info("relay %s: no consumer here for %.0f s, dropped", stream_id, self.idle_s)
                del self.active[stream_id]
                await relay.stop()
        await self._retry_waiting(now)

    async def _retry_waiting(self, now: float) -> None:
        """A consumer here waits on a stream neither published nor relayed here (an RTMP
        player that came before the publisher, or whose relay could not open or ended):
        pull the stream for it once some node has it, trying at most every RETRY_S."""
        for stream in self.hub.streams():
            if stream.live or stream.id in self.active:
                continue
            if not any(not sub.name.startswith(self.background) for sub in stream.subscribers):
                continue
            if now - self._failed.get(stream.id, -RETRY_S) < RETRY_S:
                continue
            self._failed[stream.id] = now
            await self._open(stream.id)

    async def close(self) -> None:
        relays, self.active = list(self.active.values()), {}
        for relay in relays:
            with contextlib.suppress(Exception):
                await relay.stop()
