"""The cluster side of a media node: its heartbeat in the node directory, the origin leases
of the streams published here, the link other nodes pull them over, and the relays it
pulls itself. The media-server role calls check_publish before a publisher is let in and
want before a viewer is served."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse

from core.config import ClusterConfig
from core.identity import public
from media_server.cluster.link import NodeTokens
from media_server.cluster.nodes import NodeDirectory
from media_server.cluster.origins import Origins
from media_server.cluster.relay import PATH, QUEUE_PACKETS, Relays, is_relay, origin_items
from media_server.hub import Hub
from storage.state import StateStore

log = logging.getLogger(__name__)

REAP_S = 0.25  # how often idle relays are looked for
STOP_S = 2.0  # a stop waits this long to hand its leases back, then lets them run out


class Cluster:
    def __init__(
        self,
        config: ClusterConfig,
        hub: Hub,
        state: StateStore,
        directory: NodeDirectory,
        tokens: NodeTokens,
        pulled: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.config = config
        self.pulled = pulled  # the cameras this node pulls: origins here, live or not yet
        self.hub = hub
        self.node = directory.name
        self.directory = directory
        self.tokens = tokens
        self.origins = Origins(
            state,
            self.node,
            config.lease_s,
            directory.silent_for,
            config.node_timeout_s,
        )
        self.relays = Relays(
            hub,
            self.node,
            self.origins,
            directory,
            tokens,
            config.relay_idle_s,
            config.relay_wait_s,
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.hub.on_unpublish.append(self._unpublished)
        await self._beat()
        self._tasks.append(asyncio.create_task(self._heartbeat(), name="cluster heartbeat"))
        self._tasks.append(asyncio.create_task(self._reaper(), name="relay reaper"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.relays.close()
        with contextlib.suppress(Exception):  # Redis away: the leases run out instead
            await asyncio.wait_for(self._leave(), STOP_S)

    async def _leave(self) -> None:
        await self.origins.release_all()
        await self.directory.leave()

    async def check_publish(self, stream_id: str, wait: bool = True) -> None:
        """Raises OriginBusy while another node holds the stream; with wait, once the
        holder's verdict is in (origins.py): a publisher at the door."""
        await self.origins.claim(stream_id, wait=wait)

    async def want(self, stream_id: str) -> None:
        await self.relays.want(stream_id)

    def stats(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "origins": sorted(self.origins.held),
            "relays": {sid: relay.origin for sid, relay in self.relays.active.items()},
            "relays_opened": self.relays.opened,
            "origins_taken_over": self.origins.taken_over,
        }

    def _local_origins(self) -> set[str]:
        live = {s.id for s in self.hub.streams() if s.live and not is_relay(s)}
        return live | set(self.pulled())

    async def _beat(self) -> None:
        live = self._local_origins()
        await self.origins.renew(live)
        streams = self.hub.streams()
        load = {
            "streams": len(live),
            "relays": len(self.relays.active),
            "subscribers": sum(len(s.subscribers) for s in streams),
        }
        await self.directory.heartbeat(load)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                await self._beat()
            except Exception:  # Redis away: the next beat tries again
                log.warning("cluster heartbeat failed", exc_info=True)

    async def _reaper(self) -> None:
        while True:
            await asyncio.sleep(REAP_S)
            await self.relays.reap()

    def _unpublished(self, stream_id: str) -> None:
        if stream_id in self.origins.held:
            task = asyncio.create_task(self._release(stream_id), name="origin release")
            self._tasks.append(task)
            task.add_done_callback(self._tasks.remove)

    async def _release(self, stream_id: str) -> None:
        await asyncio.sleep(0)  # a takeover publishes again in the same turn
        stream = self.hub.find(stream_id)
        if (stream is None or not stream.live) and stream_id not in set(self.pulled()):
            with contextlib.suppress(Exception):
                await self.origins.release(stream_id)

    def router(self) -> APIRouter:
        """The origin side of the link: another node pulls a stream published here."""
        router = APIRouter()
        hub, tokens = self.hub, self.tokens

        @router.get(PATH + "{stream_id}", dependencies=[public("a node token (cluster/link.py)")])
        async def relay(stream_id: str, request: Request) -> StreamingResponse:
            token = request.headers.get("authorization", "").removeprefix("Bearer ")
            node = tokens.check(stream_id, token)
            if node is None:
                raise HTTPException(401, "a valid node token is needed")
            stream = hub.find(stream_id)
            if stream is None or not stream.live:
                raise HTTPException(404, f"stream {stream_id!r} is not live on this node")
            if is_relay(stream):  # relays never loop: only the origin serves a stream
                raise HTTPException(409, f"stream {stream_id!r} is itself relayed here")
            sub = hub.subscribe(stream_id, f"relay to {node}", QUEUE_PACKETS)
            log.info("stream %s: relayed to node %s", stream_id, node)
            return StreamingResponse(origin_items(sub), media_type="application/octet-stream")

        return router
