"""Which streams a signed-in caller may put on a wall or follow: those of its court scope
(core.scope), and in open mode (local trials, nobody to sign in as) every one. Walls show a
tile the caller cannot see as empty, and refuse it in a change exactly like an unknown
stream (404), so a scoped operator learns nothing of other courts' cameras."""

from __future__ import annotations

from typing import Any

from control_room.walls import Wall
from core.courts import CourtTree
from core.rights import Caller
from core.scope import sees
from media_server.streams import StreamDefinition, StreamRegistry
from storage.state import StateStore


class StreamScope:
    def __init__(self, state: StateStore, open_mode: bool = False) -> None:
        self.registry = StreamRegistry(state)
        self.tree = CourtTree(state)
        self.open_mode = open_mode

    async def sees_definition(self, caller: Caller | None, definition: StreamDefinition) -> bool:
        return self.open_mode or await sees(caller, definition.court, self.tree)

    async def find(self, caller: Caller | None, stream_id: str) -> StreamDefinition | None:
        """The stream's definition if the caller may see it; None if unknown or not."""
        definition = await self.registry.get(stream_id)
        if definition is None or not await self.sees_definition(caller, definition):
            return None
        return definition

    async def visible(self, caller: Caller | None) -> list[StreamDefinition]:
        return [d for d in await self.registry.list() if await self.sees_definition(caller, d)]

    async def wall_view(self, caller: Caller | None, wall: Wall) -> dict[str, Any]:
        """The wall as this caller may see it: tiles out of its scope are null."""
        view = wall.view()
        seen: dict[str, bool] = {}
        for stream_id in {t for t in wall.tiles if t}:
            seen[stream_id] = await self.find(caller, stream_id) is not None
        view["tiles"] = [t if t and seen[t] else None for t in wall.tiles]
        return view
