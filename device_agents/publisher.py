"""Publisher: one output stream of the agent hub pushed to the media server over RTMP,
for ever: it waits for the source, connects, sends from the cached keyframe on, and when
the link dies (EOF, reset, or nothing drained for write_timeout_s) it reconnects with a
growing wait and starts again from the next keyframe. A refused key is retried slowly.

Media servers: the agent may know several nodes of a cluster (AgentConfig.media_servers).
It stays on the one in use while it works; when that connection fails or is refused it
moves to the next one in the list (round robin), with the same growing wait between tries.
It does not go back to the first node once that one is up again: every move cuts live for
the viewers and leaves a gap for the recorder to explain, so one failover costs one cut,
not two. A refusal counts as "refused" (the slow retry) only once every server of the list
refused in a row: during a failover the new node may refuse for a moment while the dead
node still holds the stream (media_server/cluster/origins.py), and that must not cost
the slow wait.

It reads through a queued hub consumer: a slow uplink makes it skip to the next keyframe;
the source and the ring never wait for it. While the link keeps up (nothing queued, the
socket's buffer under its low-water mark), packets are written to it inside the hub's push
instead (no task wake-up per packet); the first one that finds the buffer fuller goes to
the queue, and the publisher task takes over until it is empty and drained again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.backoff import Backoff
from device_agents.rtmp_client import LinkDown, PublishRefused, RtmpPublishSession
from media_server.consumer import QueuedConsumer
from media_server.hub import Hub, Stream
from media_server.media import Item, Packet, StreamEnd, StreamStart
from media_server.rtmp.play import PlayOut

log = logging.getLogger(__name__)

QUEUE_PACKETS = 400  # ~8 s at 25 fps + audio: beyond that the uplink cannot keep up
STABLE_S = 20.0  # published this long: the next failure retries from the first wait


class Publisher:
    def __init__(
        self,
        hub: Hub,
        stream_id: str,
        rtmp_url: str | list[str],
        key: str,
        *,
        write_timeout_s: float = 5.0,
        backoff: Backoff | None = None,
        refused_backoff: Backoff | None = None,
    ) -> None:
        self.hub, self.stream_id = hub, stream_id
        self.servers = [rtmp_url] if isinstance(rtmp_url, str) else list(rtmp_url)
        if not self.servers:
            raise ValueError("a publisher needs at least one rtmp:// URL")
        self.server = 0  # index of the server in use
        self.moves = 0  # times it moved to another server
        self.key = key
        self.write_timeout_s = write_timeout_s
        self.backoff = backoff or Backoff(first_s=0.5, cap_s=5.0)  # a link back is used soon
        self.refused_backoff = refused_backoff or Backoff(first_s=15.0, cap_s=120.0)
        self.state = "stopped"
        self.problem = ""  # why it is not publishing now, for the heartbeat
        self.reconnects = 0
        self._refused_in_row = 0
        self.sessions = 0  # sessions that reached "publishing"
        self.dropped = 0  # packets the uplink was too slow for
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    @property
    def publishing(self) -> bool:
        return self.state == "publishing"

    @property
    def enabled(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self._task is None:
            self.state = "waiting for the source"
            self._task = asyncio.create_task(self._run(), name=f"publish {self.stream_id}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.state, self.problem = "stopped", ""

    def _set(self, state: str, problem: str = "") -> None:
        if state != self.state or problem != self.problem:
            log.info("publish %s: %s%s", self.stream_id, state, f": {problem}" if problem else "")
        self.state, self.problem = state, problem

    async def _run(self) -> None:
        stream = self.hub.stream(self.stream_id)

        def wake(_: Stream) -> None:
            self._wake.set()  # the source went live (or away): look again

        stream.listeners.append(wake)
        try:
            while True:
                while not (stream.live and stream.tracks):
                    self._set("waiting for the source")
                    self._wake.clear()
                    await self._wake.wait()
                wait = await self._session()
                self.reconnects += 1
                await asyncio.sleep(wait)
        finally:
            stream.listeners.remove(wake)

    async def _session(self) -> float:
        """Publish until something ends it; how long to wait before the next try."""
        name = f"{self.stream_id}?key={self.key}"
        session = RtmpPublishSession(self.rtmp_url, name, timeout_s=self.write_timeout_s)
        self._set("connecting", self.problem)
        started = asyncio.get_running_loop().time()
        try:
            await session.open()
            self.refused_backoff.reset()
            self._refused_in_row = 0
            self.sessions += 1
            self._set("publishing")
            reason = await self._pump(session)
            self._set("reconnecting", reason)
        except PublishRefused as exc:
            self._set("refused", f"publish refused: {exc}{self._at}")
            self._refused_in_row += 1
            self._move()
            if self._refused_in_row >= len(self.servers):
                return self.refused_backoff.next()
            return self.backoff.next()
        except LinkDown as exc:
            self._refused_in_row = 0
            self._set("reconnecting", f"uplink down: {exc}{self._at}")
        finally:
            await session.close()
        if asyncio.get_running_loop().time() - started > STABLE_S:
            self.backoff.reset()
        if self.problem.startswith("source"):
            return 0.0  # the source went away, not the server: stay, and go on at once
        self._move()
        return self.backoff.next()

    @property
    def rtmp_url(self) -> str:
        """The server in use (or tried next)."""
        return self.servers[self.server]

    @property
    def _where(self) -> str:
        parts = self.rtmp_url.split("/")
        return parts[2] if len(parts) > 2 else self.rtmp_url  # host:port, never the key

    @property
    def _at(self) -> str:
        """Which server a problem was met at, when there are several to tell apart."""
        return f" (at {self._where})" if len(self.servers) > 1 else ""

    def _move(self) -> None:
        """On to the next server of the list (nothing to do with one)."""
        if len(self.servers) > 1:
            self.server = (self.server + 1) % len(self.servers)
            self.moves += 1
            log.info("publish %s: trying %s next", self.stream_id, self._where)

    async def _pump(self, session: RtmpPublishSession) -> str:
        """Hub items -> FLV messages until the link or the source ends."""
        stream = self.hub.stream(self.stream_id)
        out = PlayOut(session.send)
        sub = stream.attach(_Uplink(stream, f"publish {self.stream_id}", session, out))
        session.on_lost = sub.close  # a link dying while the source is quiet ends the wait
        try:
            while True:
                item: Item | None = sub.get_nowait()
                if item is None:
                    sub.direct = True  # caught up and drained: the push writes from now on
                    try:
                        item = await sub.get()  # woken only by what the push queued
                    except EOFError:
                        raise LinkDown(session.closed_reason or "closed") from None
                    finally:
                        sub.direct = False
                while item is not None:
                    if isinstance(item, StreamEnd):
                        return f"source ended: {item.reason}"
                    out.handle(item)
                    item = sub.get_nowait()
                await session.drain(self.write_timeout_s)
        except LinkDown as exc:
            return f"uplink down: {exc}"
        finally:
            self.dropped += sub.drops
            sub.close()


class _Uplink(QueuedConsumer):
    """The publisher's consumer: the queued kind with a write-through. Packets and stream
    starts go straight to the link while `direct` (set by the publisher task when nothing
    is queued and the link is drained) and the socket buffer is under its low-water mark;
    anything else is queued for the task, in order, as the queued kind does."""

    def __init__(
        self, stream: Stream, name: str, session: RtmpPublishSession, out: PlayOut
    ) -> None:
        super().__init__(stream, name, QUEUE_PACKETS)
        self.direct = False
        self._session, self._out = session, out

    def offer(self, item: Item) -> None:
        if self.direct and isinstance(item, (Packet, StreamStart)):
            if self._session.writable():
                try:
                    self._out.handle(item)
                    return
                except LinkDown:
                    pass  # queued below: the task meets the same error and ends the session
            self.direct = False  # from here on in order through the queue
        super().offer(item)
