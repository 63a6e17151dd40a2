"""Walls and operators' saved layouts, kept in the state store (Redis).

A wall is a big screen of the command centre, named by the people who use it ("big",
"main"); the wall named `@<user>` is that operator's console, so dispatching to another
operator is writing their wall. A wall holds a layout (how the screen is split) and one
stream id (or nothing) per tile. Each change bumps its `version`; the page showing the wall
says which version it has applied (`acked_version`), so a console can show a dispatch as
pending until the wall has it. Every process sees every change: the store publishes the
wall's name on CHANGES after each write.

Saved layouts are an operator's own: `{layout, tiles}` under a name, per user.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from storage.state import StateStore

KIND = "wall"
LAYOUT_KIND = "wall-layout"  # saved layouts; record id "<user>/<name>"
CHANGES = "walls"  # pub/sub channel: {"name": wall} after every change
# layout -> tiles: one big screen, n x n grids, and one big tile beside five small ones
LAYOUTS = {"1": 1, "2x2": 4, "3x3": 9, "4x4": 16, "5x5": 25, "1+5": 6}
WALL_NAME = re.compile(r"^@?[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LAYOUT_NAME = re.compile(r"^[^/\x00-\x1f]{1,64}$")
CONSOLE_PREFIX = "@"


class WallError(ValueError):
    """A wall or layout the store refuses; the message says what is wrong."""


def console_of(user: str) -> str:
    """The wall name of a user's console."""
    return CONSOLE_PREFIX + user


def check_tiles(layout: str, tiles: list[str | None]) -> None:
    """A layout we know, and exactly one entry (stream id or None) per tile of it."""
    if layout not in LAYOUTS:
        raise WallError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if len(tiles) != LAYOUTS[layout]:
        raise WallError(
            f"layout {layout} has {LAYOUTS[layout]} tiles, the request gives {len(tiles)}"
        )


def check_wall_name(name: str) -> None:
    if not WALL_NAME.match(name):
        raise WallError(
            f"wall name {name!r}: letters, digits, '_', '.', '-' (64 at most), "
            "or '@' and a user name for an operator's console"
        )


@dataclass
class Wall:
    name: str
    layout: str = "2x2"
    tiles: list[str | None] = field(default_factory=lambda: [None] * 4)
    version: int = 0
    acked_version: int = 0
    updated_by: str = ""
    updated_at: float = 0.0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Wall:
        return cls(
            name=str(record["id"]),
            layout=str(record.get("layout", "2x2")),
            tiles=[str(t) if t else None for t in record.get("tiles", [])],
            version=int(record.get("version", 0)),
            acked_version=int(record.get("acked_version", 0)),
            updated_by=str(record.get("updated_by", "")),
            updated_at=float(record.get("updated_at", 0.0)),
        )

    def view(self) -> dict[str, Any]:
        """The wall as the API and the websocket show it (before masking)."""
        return asdict(self)


class WallStore:
    """Walls and saved layouts. Writes of one wall are serialised by a lock every process
    sees, so two operators dispatching at once get two versions, never one lost."""

    def __init__(self, state: StateStore) -> None:
        self._state = state
        state.declare_index(LAYOUT_KIND, "user")

    async def get(self, name: str) -> Wall | None:
        record = await self._state.get_record(KIND, name)
        return Wall.from_record(record) if record else None

    async def all(self) -> list[Wall]:
        return [Wall.from_record(r) for r in await self._state.list_records(KIND)]

    async def put(self, name: str, layout: str, tiles: list[str | None], who: str) -> Wall:
        """Set the wall's layout and tiles (creating the wall); the new version."""
        check_wall_name(name)
        check_tiles(layout, tiles)
        async with self._state.lock(f"wall-{name}", timeout_s=5, wait_s=5):
            wall = await self.get(name) or Wall(name=name)
            wall.layout, wall.tiles = layout, list(tiles)
            wall.version += 1
            wall.updated_by, wall.updated_at = who, round(time.time(), 3)
            await self._save(wall)
        await self._state.publish(CHANGES, {"name": name})
        return wall

    async def ack(self, name: str, version: int) -> Wall | None:
        """The wall's page has applied `version`: kept unless it is older than what was
        acknowledged already, or newer than the wall (a confused page)."""
        async with self._state.lock(f"wall-{name}", timeout_s=5, wait_s=5):
            wall = await self.get(name)
            if wall is None or not wall.acked_version < version <= wall.version:
                return wall
            wall.acked_version = version
            await self._save(wall)
        await self._state.publish(CHANGES, {"name": name})
        return wall

    async def _save(self, wall: Wall) -> None:
        record = wall.view()
        del record["name"]
        await self._state.put_record(KIND, wall.name, record)

    # -- saved layouts, each operator's own --

    async def layouts(self, user: str) -> list[dict[str, Any]]:
        return [
            {"name": r["name"], "layout": r["layout"], "tiles": r["tiles"]}
            for r in await self._state.find_records(LAYOUT_KIND, "user", user)
        ]

    async def save_layout(self, user: str, name: str, layout: str, tiles: list[str | None]) -> None:
        if not LAYOUT_NAME.match(name):
            raise WallError("a layout name has 1 to 64 characters, no '/' or control characters")
        check_tiles(layout, tiles)
        record = {"user": user, "name": name, "layout": layout, "tiles": list(tiles)}
        await self._state.put_record(LAYOUT_KIND, f"{user}/{name}", record)

    async def delete_layout(self, user: str, name: str) -> bool:
        return await self._state.delete_record(LAYOUT_KIND, f"{user}/{name}")
