"""The agent: wires the local hub, the ring, one SourceUnit per configured source and the
control link. Start in that order, stop in reverse.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from device_agents.backfill import Backfill
from device_agents.commands import run_command
from device_agents.config import AgentConfig, load_agent_config
from device_agents.link import ControlLink
from device_agents.protocol import Command, CommandResult, Heartbeat, bearer
from device_agents.ring import Ring
from device_agents.unit import SourceUnit
from media_server.hub import Hub

log = logging.getLogger(__name__)

AGENT_VERSION = "courtcast-agent 0.1.0"


class Agent:
    def __init__(
        self, config: AgentConfig, config_path: Path | None = None, *, link: bool = True
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.hub = Hub()
        self.ring = Ring(config.spool.dir, config.spool.max_bytes)
        self.units: dict[str, SourceUnit] = {}
        self.link: ControlLink | None = None
        self.backfill: Backfill | None = None
        if link:
            self.link = ControlLink(
                config.server,
                config.device_id,
                config.device_secret,
                config.heartbeat_s,
                self.heartbeat,
                self.handle,
            )
            # store-and-forward: runs every ~10 s, and at once when a publisher reconnects
            self.backfill = Backfill(
                self.ring,
                config.server,
                bearer(config.device_id, config.device_secret),
                self._stream_ids(),
                sessions=self._publish_sessions,
            )
        self.started_at = 0.0

    def _stream_ids(self) -> list[str]:
        return [
            s.stream_id
            for src in self.config.sources.values()
            for s in (src.main, src.sub)
            if s is not None
        ]

    def _publish_sessions(self) -> int:
        return sum(p.sessions for u in self.units.values() for p in u.publishers.values())

    def _unit(self, name: str) -> SourceUnit:
        cfg = self.config
        return SourceUnit(
            self.hub, self.ring, name, cfg.sources[name], cfg.media_servers, cfg.spool.segment_s
        )

    async def start(self) -> None:
        self.started_at = time.time()
        self.units = {name: self._unit(name) for name in self.config.sources}
        await asyncio.gather(*(unit.start() for unit in self.units.values()))
        if self.link is not None:
            self.link.start()
        if self.backfill is not None:
            self.backfill.start()
        log.info(
            "agent %s up: %d sources, spool %s",
            self.config.device_id,
            len(self.units),
            self.config.spool.dir,
        )

    async def stop(self) -> None:
        if self.backfill is not None:
            await self.backfill.stop()
        if self.link is not None:
            await self.link.stop()
        await asyncio.gather(*(unit.stop() for unit in self.units.values()))
        log.info("agent %s stopped", self.config.device_id)

    def heartbeat(self) -> Heartbeat:
        return Heartbeat(
            sent_at=time.time(),
            agent_version=AGENT_VERSION,
            sources=[unit.health() for unit in self.units.values()],
            spool_bytes=self.ring.size_bytes(),
            spool_limit_bytes=self.config.spool.max_bytes,
            clock_offset_s=self.link.clock.value if self.link is not None else None,
            backfill_pending=self.backfill.pending if self.backfill is not None else 0,
        )

    async def handle(self, command: Command) -> CommandResult:
        return await run_command(self, command)

    async def reload(self) -> list[str]:
        """Re-read the config file; sources added, removed or changed are (re)started,
        the others keep running. The names restarted."""
        if self.config_path is None:
            return []
        new = load_agent_config(self.config_path)
        changed = [
            n
            for n in {*self.config.sources, *new.sources}
            if self.config.sources.get(n) != new.sources.get(n)
        ]
        old_units = [self.units.pop(n) for n in changed if n in self.units]
        await asyncio.gather(*(unit.stop() for unit in old_units))
        self.config = new
        fresh = {n: self._unit(n) for n in changed if n in new.sources}
        self.units.update(fresh)
        await asyncio.gather(*(unit.start() for unit in fresh.values()))
        return sorted(changed)
