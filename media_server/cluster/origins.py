"""Where each live stream is published: its origin node holds a lease on the stream id in
Redis, renewed while the publisher lives and gone with the node. A stream id is published
on one node of the cluster at a time; relayed copies never take the lease."""

from __future__ import annotations

import logging
import time

from storage.state import StateStore

log = logging.getLogger(__name__)

SCOPE = "origin"


class OriginBusy(Exception):
    """The stream is published on another node."""

    def __init__(self, stream_id: str, node: str) -> None:
        super().__init__(f"stream {stream_id!r} is already being published on node {node}")
        self.node = node


class Origins:
    """This node's origin leases."""

    def __init__(self, state: StateStore, node: str, ttl_s: float) -> None:
        self.state = state
        self.node = node
        self.ttl_s = ttl_s
        self.held: dict[str, float] = {}  # stream id -> when taken or last renewed here
        self._warned: set[str] = set()

    async def claim(self, stream_id: str) -> None:
        """Take (or keep) the stream's lease for this node; OriginBusy if another holds it."""
        holder = await self.state.lease(SCOPE, stream_id, self.node, self.ttl_s)
        if holder != self.node:
            raise OriginBusy(stream_id, holder)
        self.held[stream_id] = time.monotonic()

    async def renew(self, live: set[str]) -> None:
        """Keep the leases of the streams published here; let go of those claimed by a
        publisher that never came (or left) once a lease time has passed."""
        now = time.monotonic()
        for stream_id in live:
            try:
                await self.claim(stream_id)
                self._warned.discard(stream_id)
            except OriginBusy as exc:  # a camera pulled on two nodes, say: said once
                if stream_id not in self._warned:
                    log.warning("%s; this node's copy is not a relay origin", exc)
                    self._warned.add(stream_id)
        for stream_id, since in list(self.held.items()):
            if stream_id not in live and now - since > self.ttl_s:
                await self.release(stream_id)

    async def release(self, stream_id: str) -> None:
        self.held.pop(stream_id, None)
        await self.state.release(SCOPE, stream_id, self.node)

    async def release_all(self) -> None:
        for stream_id in list(self.held):
            await self.release(stream_id)

    async def holder(self, stream_id: str) -> str | None:
        return await self.state.lease_holder(SCOPE, stream_id)
