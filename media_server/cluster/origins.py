"""Where each live stream is published: its origin node holds a lease on the stream id in
Redis, renewed while the publisher lives and gone with the node. A stream id is published
on one node of the cluster at a time; relayed copies never take the lease.

A node that dies holds its leases until they run out (lease_s), but a publisher moving
over from it (an agent failing over, issue 18) need not wait that long: once the holder's
heartbeat is gone from the node directory (cluster.node_timeout_s, shorter than lease_s)
the lease is taken at once. A live holder keeps it, and a second publisher is refused.
A publisher arriving while another node holds the stream is held until the verdict: the
holder's next heartbeat (alive: refused, within one heartbeat_s) or its heartbeat running
out (dead: let in at once), so an agent failing over is let in the moment the dead node
counts as dead rather than at its next try some seconds later."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from storage.state import StateStore

log = logging.getLogger(__name__)

SCOPE = "origin"
VERDICT_POLL_S = 0.1


class OriginBusy(Exception):
    """The stream is published on another node."""

    def __init__(self, stream_id: str, node: str) -> None:
        super().__init__(f"stream {stream_id!r} is already being published on node {node}")
        self.node = node


class Origins:
    """This node's origin leases."""

    def __init__(
        self,
        state: StateStore,
        node: str,
        ttl_s: float,
        silent_for: Callable[[str], Awaitable[float | None]] | None = None,
        node_timeout_s: float = 3.0,
    ) -> None:
        self.state = state
        self.node = node
        self.ttl_s = ttl_s
        # since a node's last heartbeat, None once it is gone (NodeDirectory.silent_for);
        # without it a dead node's leases are waited out
        self.silent_for = silent_for
        self.node_timeout_s = node_timeout_s
        self.taken_over = 0  # leases taken from a dead node before they ran out
        self.held: dict[str, float] = {}  # stream id -> when taken or last renewed here
        self._warned: set[str] = set()

    async def claim(self, stream_id: str, *, wait: bool = False) -> None:
        """Take (or keep) the stream's lease for this node; OriginBusy if another holds it.
        wait: a publisher at the door, who waits for the holder's verdict (never the
        heartbeat's renewals: this node's own beat must not wait)."""
        holder = await self.state.lease(SCOPE, stream_id, self.node, self.ttl_s)
        if holder != self.node and await self._dead(holder, wait):
            holder = await self._take_over(stream_id, holder)
        if holder != self.node:
            raise OriginBusy(stream_id, holder)
        self.held[stream_id] = time.monotonic()

    async def _dead(self, holder: str, wait: bool) -> bool:
        """Whether the holder's heartbeat is gone. With wait, the holder is watched until it
        beats again (alive) or its heartbeat runs out (dead)."""
        if self.silent_for is None:
            return False
        silent = await self.silent_for(holder)
        deadline = time.monotonic() + self.node_timeout_s  # the heartbeat runs out before
        while wait and silent is not None and time.monotonic() < deadline:
            await asyncio.sleep(VERDICT_POLL_S)
            before, silent = silent, await self.silent_for(holder)
            if silent is not None and silent < before:
                return False  # a new beat: alive
        return silent is None

    async def _take_over(self, stream_id: str, dead: str) -> str:
        """The dead node's lease ends now (only if it is still the dead node's: release
        compares the holder), and this node takes it like any free one."""
        await self.state.release(SCOPE, stream_id, dead)
        holder = await self.state.lease(SCOPE, stream_id, self.node, self.ttl_s)
        if holder == self.node:
            self.taken_over += 1
            log.warning(
                "stream %s: taken over from node %s, whose heartbeat is gone", stream_id, dead
            )
        return holder

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
