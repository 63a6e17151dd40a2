"""Alert rules (issue 17, item 3): an alert of chosen types on chosen streams (or on the
streams of a court's subtree) puts that camera on a named wall's tile for `hold_s` seconds;
then the tile's previous stream comes back, unless someone changed the wall meanwhile.

Every control room hears each alert's start on the live channel; the first to count the
(alert, rule) pair in the state store acts (an atomic counter, forgotten after an hour), so a
cluster pushes once. The hold (what the tile showed before, the version the push made, when it
ends) is kept beside the wall and read and written under the wall's lock: a second push on a
held tile keeps the first one's "before", and a restore acts only while the wall is still at
its push's version.
Every control room looks for ended holds every SWEEP_S, so a hold ends on time even when the
control room that pushed it has died (no timer lives in one process); the wall's lock makes
the restore happen once. Pushes and restores are audited as `wall.rule`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from control_room.walls import Wall, WallError, WallStore, check_wall_name
from core.audit import audit
from core.courts import CourtTree
from media_server.analysis.alerts import LIVE_CHANNEL
from media_server.analysis.settings import TYPES
from storage.state import StateStore

log = logging.getLogger(__name__)

KIND = "alert-rule"
HOLD_KIND = "wall-hold"  # record id "<wall>/<tile>": the rule's push now on that tile
CLAIM_SCOPE = "alert-rule-claim"
CLAIM_S = 3600.0  # an alert's start is heard once; the claim outlives any redelivery
RULE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TILE = 24  # the largest layout (5x5) has 25 tiles
SWEEP_S = 0.5  # how late past its end a hold may be restored


class AlertRule(BaseModel):
    """What a rule matches (types; streams or a court) and where it puts the camera."""

    model_config = ConfigDict(extra="forbid")
    types: list[str] = Field(min_length=1, description=f"alert types: {', '.join(TYPES)}")
    streams: list[str] | None = Field(default=None, min_length=1, max_length=200)
    court: str | None = Field(default=None, description="a court id or name: its subtree")
    wall: str
    tile: int = Field(ge=0, le=MAX_TILE, description="index of the wall's tile, from 0")
    hold_s: float = Field(default=30.0, gt=0, le=86400)

    @field_validator("types")
    @classmethod
    def known_types(cls, types: list[str]) -> list[str]:
        unknown = sorted(set(types) - set(TYPES))
        if unknown:
            raise ValueError(f"unknown alert types {unknown}; known: {', '.join(TYPES)}")
        return sorted(set(types))

    @field_validator("wall")
    @classmethod
    def wall_name(cls, wall: str) -> str:
        try:
            check_wall_name(wall)
        except WallError as exc:
            raise ValueError(str(exc)) from None
        return wall

    @model_validator(mode="after")
    def one_target(self) -> AlertRule:
        if (self.streams is None) == (self.court is None):
            raise ValueError("give either `streams` (stream ids) or `court`, not both")
        return self


def check_rule_name(name: str) -> None:
    if not RULE_NAME.match(name):
        raise ValueError(f"rule name {name!r}: letters, digits, '_', '.', '-' (64 at most)")


class RuleStore:
    """The rules, by name, in the state store."""

    def __init__(self, state: StateStore) -> None:
        self._state = state

    async def get(self, name: str) -> AlertRule | None:
        record = await self._state.get_record(KIND, name)
        return _rule_of(record) if record else None

    async def all(self) -> dict[str, AlertRule]:
        records = await self._state.list_records(KIND)
        return {str(r["id"]): _rule_of(r) for r in records}

    async def views(self) -> list[dict[str, Any]]:
        """Every rule as the API shows it: its name, its fields, who last set it and when."""
        records = sorted(await self._state.list_records(KIND), key=lambda r: str(r["id"]))
        return [{"name": str(r["id"]), **_rule_of(r).model_dump(), **_stamp(r)} for r in records]

    async def put(self, name: str, rule: AlertRule, who: str) -> None:
        check_rule_name(name)
        record = {**rule.model_dump(), "updated_by": who, "updated_at": round(time.time(), 3)}
        await self._state.put_record(KIND, name, record)

    async def delete(self, name: str) -> bool:
        return await self._state.delete_record(KIND, name)


def _rule_of(record: dict[str, Any]) -> AlertRule:
    fields = ("types", "streams", "court", "wall", "tile", "hold_s")
    return AlertRule.model_validate({k: record[k] for k in fields if k in record})


def _stamp(record: dict[str, Any]) -> dict[str, Any]:
    return {"updated_by": record.get("updated_by", ""), "updated_at": record.get("updated_at")}


class RuleEngine:
    """Follows the live alerts and carries out the rules they match."""

    def __init__(self, state: StateStore, walls: WallStore, tree: CourtTree) -> None:
        self._state = state
        self._walls = walls
        self._tree = tree
        self.rules = RuleStore(state)
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow(), name="alert-rules"),
            asyncio.create_task(self._sweep(), name="alert-rule-holds"),
        ]

    async def stop(self) -> None:
        tasks = [*self._tasks, *self._pending]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _follow(self) -> None:
        async with self._state.subscribe(LIVE_CHANNEL) as alerts:
            async for message in alerts:
                alert = message.get("alert")
                if message.get("phase") == "start" and isinstance(alert, dict):
                    self._spawn(self._on_start(alert))

    def _spawn(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _on_start(self, alert: dict[str, Any]) -> None:
        try:
            for name, rule in sorted((await self.rules.all()).items()):
                if not await self.matches(rule, alert):
                    continue
                claim = f"{alert.get('id')}/{name}"
                if await self._state.count_hit(CLAIM_SCOPE, claim, CLAIM_S) == 1:
                    await self._push(name, rule, alert)
        except Exception:  # Redis away, a wall refused: this alert's push is lost, not the rest
            log.warning("alert rules: alert %s not acted on", alert.get("id"), exc_info=True)

    async def matches(self, rule: AlertRule, alert: dict[str, Any]) -> bool:
        if alert.get("type") not in rule.types:
            return False
        if rule.streams is not None:
            return alert.get("stream") in rule.streams
        court = str(alert.get("court") or "")
        return bool(court) and await self._tree.within(court, str(rule.court))

    async def _push(self, name: str, rule: AlertRule, alert: dict[str, Any]) -> None:
        stream, key = str(alert["stream"]), f"{rule.wall}/{rule.tile}"
        before: list[str | None] = []

        async def change(wall: Wall) -> bool:
            if rule.tile >= len(wall.tiles):
                log.warning("rule %s: wall %s has no tile %d", name, wall.name, rule.tile)
                return False
            hold = await self._state.get_record(HOLD_KIND, key)
            held = hold is not None and hold.get("version") == wall.version
            if wall.tiles[rule.tile] == stream and not held:
                return False  # someone put it there already: theirs, not ours to restore
            before.append(hold["previous"] if hold is not None and held else wall.tiles[rule.tile])
            wall.tiles[rule.tile] = stream
            record = {"version": wall.version + 1, "previous": before[0], "stream": stream}
            ends = round(time.time() + rule.hold_s, 3)
            await self._state.put_record(
                HOLD_KIND, key, {**record, "rule": name, "until": ends, "alert": _brief(alert)}
            )
            return True

        wall = await self._walls.edit(rule.wall, change, f"rule:{name}")
        if wall is None:
            return
        await self._audit("push", name, rule.wall, rule.tile, alert, wall, before=before[0])

    async def _sweep(self) -> None:
        """Restore every hold that has ended, whoever pushed it."""
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                holds = await self._state.list_records(HOLD_KIND)
                now = time.time()
                for hold in holds:
                    if float(hold.get("until", 0.0)) <= now:
                        await self._restore(str(hold["id"]), hold)
            except Exception:  # Redis away: the next sweep
                log.warning("alert rules: holds not swept", exc_info=True)

    async def _restore(self, key: str, seen: dict[str, Any]) -> None:
        """Put back the stream the push on `key` ("<wall>/<tile>") replaced, unless a later
        push holds the tile or someone changed the wall since."""
        wall_name, _, tile_text = key.rpartition("/")
        tile, pushed, name = int(tile_text), seen.get("version"), str(seen.get("rule", ""))
        ended: list[dict[str, Any]] = []

        async def change(wall: Wall) -> bool:
            hold = await self._state.get_record(HOLD_KIND, key)
            if hold is None or hold.get("version") != pushed:
                return False  # restored already, or a later push holds the tile now
            await self._state.delete_record(HOLD_KIND, key)
            if wall.version != pushed or tile >= len(wall.tiles):
                return False  # changed by someone meanwhile: their wall stands
            ended.append(hold)
            wall.tiles[tile] = hold.get("previous")
            return True

        wall = await self._walls.edit(wall_name, change, f"rule:{name}")
        if wall is not None and ended:
            hold = ended[0]
            alert = dict(hold.get("alert") or {})
            await self._audit(
                "restore", name, wall_name, tile, alert, wall, restored=hold.get("previous")
            )

    async def _audit(
        self,
        phase: str,
        name: str,
        wall_name: str,
        tile: int,
        alert: dict[str, Any],
        wall: Wall,
        **details: Any,
    ) -> None:
        await audit(
            self._state,
            "wall.rule",
            f"rule:{name}",
            phase=phase,
            rule=name,
            alert=alert.get("id"),
            type=alert.get("type"),
            stream=alert.get("stream"),
            wall=wall_name,
            tile=tile,
            version=wall.version,
            tiles=wall.tiles,
            court=alert.get("court", ""),
            **details,
        )


def _brief(alert: dict[str, Any]) -> dict[str, Any]:
    """What the restore's audit entry tells of the alert."""
    return {k: alert.get(k) for k in ("id", "type", "stream", "court")}
