"""A recorder process of a fleet (DESIGN.md §9, `courtcast recorder` in a cluster): a hub of
its own, with no listeners, filled by on-demand relays from the media nodes holding the
streams' origins; and the Redis leases (recorder/leases.py) that say which recordings this
process writes.

Its recordings are what its relays exist for: every consumer of its hub holds a relay
(no background consumers here), so a relay starts when a recording asks for its stream and
ends `relay_idle_s` after the last recording of the stream closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from core.config import ClusterConfig
from media_server.cluster.link import NodeTokens
from media_server.cluster.nodes import NodeDirectory
from media_server.cluster.origins import Origins
from media_server.cluster.relay import Relays
from media_server.hub import Hub
from recorder.leases import Grant, RecordingLeases
from storage.state import StateStore

log = logging.getLogger(__name__)

REAP_S = 0.25  # how often idle relays are looked for
WANT_S = 1.0  # how often the streams being recorded are asked for (a publisher came back)

Lost = Callable[[Grant], Awaitable[None]]


class RecorderFleet:
    def __init__(
        self,
        config: ClusterConfig,
        state: StateStore,
        node: str,
        data_dir: Path,
        secret: str | None,
    ) -> None:
        self.config = config
        self.hub = Hub()
        # the directory is only read (a recorder is not a media node: it never heartbeats)
        directory = NodeDirectory(state, node, "", "", config.lease_s)
        self.relays = Relays(
            self.hub,
            node,
            Origins(state, node, config.lease_s),
            directory,
            NodeTokens.for_node(data_dir, secret),
            config.relay_idle_s,
            config.relay_wait_s,
            background=(),
        )
        # one holder per process run: a restarted recorder does not inherit its grants
        self.leases = RecordingLeases(state, f"{node}.{secrets.token_hex(4)}", config.lease_s)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, lost: Lost, streams: Callable[[], Iterable[str]]) -> None:
        """Renew the leases (lost: called with each grant lost), keep the relays of the
        streams being recorded (streams: their ids), drop idle ones."""
        self._tasks += [
            asyncio.create_task(self._renew_loop(lost), name="recording leases"),
            asyncio.create_task(self._want_loop(streams), name="recorder relays"),
            asyncio.create_task(self._reap_loop(), name="recorder relay reaper"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.relays.close()

    async def want(self, stream_ids: Iterable[str]) -> None:
        """Pull these streams here (each once), waiting at most relay_wait_s for them."""
        await asyncio.gather(*(self.relays.want(s) for s in set(stream_ids)))

    async def _renew_loop(self, lost: Lost) -> None:
        while True:
            await asyncio.sleep(self.config.lease_s / 3)
            try:
                await self.leases.announce()
            except Exception:  # Redis away: renew() below decides what is lost
                log.warning("recorder presence not renewed", exc_info=True)
            for grant in await self.leases.renew():
                try:
                    await lost(grant)
                except Exception:
                    log.exception("recording lease %s: stopping its writer failed", grant.value)

    async def _want_loop(self, streams: Callable[[], Iterable[str]]) -> None:
        while True:
            await asyncio.sleep(WANT_S)
            with contextlib.suppress(Exception):  # Redis away: the next round asks again
                await self.want(streams())

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(REAP_S)
            await self.relays.reap()
