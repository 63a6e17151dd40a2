"""The court tree: courts (high, intermediate, basic, people's tribunals) each under a
parent, courtrooms under courts; streams and devices name their court and room.

Kept in the state store as records: `court/{id}` (name, name_en, level, parent) and
`room/{court}/{name}` (name, court), the shapes the device registry wrote before the tree
existed, so its courts and rooms are tree nodes as they are. Free text from the CLI and
the API (`--court "High Court"`) resolves to a court by id or by name, and is created
(id = the text) when nothing matches, as enrolment always did.

The scope check (core.scope) walks parents on every private play request, so the tree
read for it is a snapshot cached for CACHE_S: a court added elsewhere is seen within that.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

COURT = "court"
ROOM = "room"
LEVELS = ("high", "intermediate", "basic", "tribunal")
CACHE_S = 2.0
MAX_DEPTH = 16  # a province has four levels; a longer chain is a cycle written by hand


class RecordStore(Protocol):
    """What the tree needs of the state store (storage.state.StateStore has it)."""

    async def get_record(self, kind: str, id: str, /) -> Mapping[str, Any] | None: ...

    async def put_record(self, kind: str, id: str, mapping: Mapping[str, Any], /) -> None: ...

    async def list_records(self, kind: str, /) -> list[Any]: ...


class CourtError(ValueError):
    """A court that cannot be added as asked, phrased for the user."""


@dataclass
class Court:
    id: str
    name: str
    name_en: str = ""
    level: str = ""
    parent: str = ""
    created: float = field(default_factory=time.time)

    @classmethod
    def from_record(cls, id: str, record: Mapping[str, Any]) -> Court:
        return cls(
            id=id,
            name=str(record.get("name") or id),
            name_en=str(record.get("name_en") or ""),
            level=str(record.get("level") or ""),
            parent=str(record.get("parent") or ""),
            created=float(record.get("created") or 0),
        )

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


def check_court_id(court_id: str) -> None:
    if not court_id or len(court_id) > 64 or any(c in court_id for c in ":/"):
        raise CourtError(f"court id {court_id!r}: 1-64 characters, without ':' or '/'")
    if not court_id.isprintable() or court_id != court_id.strip():
        raise CourtError(f"court id {court_id!r}: no control characters or outer spaces")


class CourtTree:
    def __init__(self, store: RecordStore) -> None:
        self._store = store
        self._snapshot: tuple[float, dict[str, Court]] | None = None

    async def add(self, court: Court) -> Court:
        """Add a court, or change an existing one's names, level and parent."""
        check_court_id(court.id)
        if not court.name.strip():
            raise CourtError("a court needs a name")
        if court.level and court.level not in LEVELS:
            raise CourtError(f"level {court.level!r} is not one of {', '.join(LEVELS)}")
        courts = await self.courts(fresh=True)
        if court.parent:
            if court.parent not in courts:
                raise CourtError(f"no parent court {court.parent!r}: add it first")
            if court.id in self.lineage(court.parent, courts):
                raise CourtError(f"court {court.id!r} cannot be under its own subtree")
        if court.id in courts:
            court.created = courts[court.id].created
        await self._store.put_record(COURT, court.id, court.to_record())
        self._snapshot = None
        return court

    async def courts(self, fresh: bool = False) -> dict[str, Court]:
        """Every court by id (a snapshot at most CACHE_S old unless `fresh`)."""
        now = time.monotonic()
        if not fresh and self._snapshot is not None and now - self._snapshot[0] < CACHE_S:
            return self._snapshot[1]
        records = await self._store.list_records(COURT)
        courts = {}
        for record in records:
            court_id = str(record.get("id") or record.get("name") or "")
            if court_id:
                courts[court_id] = Court.from_record(court_id, record)
        self._snapshot = (now, courts)
        return courts

    async def ordered(self) -> list[Court]:
        """Every court, each after its parent (depth first, by id)."""
        courts = await self.courts(fresh=True)
        children: dict[str, list[Court]] = {}
        for court in courts.values():
            parent = court.parent if court.parent in courts else ""
            children.setdefault(parent, []).append(court)
        out: list[Court] = []

        def walk(parent: str) -> None:
            for child in sorted(children.get(parent, []), key=lambda c: c.id):
                out.append(child)
                walk(child.id)

        walk("")
        return out

    async def rooms(self) -> list[dict[str, Any]]:
        records = await self._store.list_records(ROOM)
        return sorted(
            ({"court": str(r.get("court", "")), "name": str(r.get("name", ""))} for r in records),
            key=lambda r: (r["court"], r["name"]),
        )

    @staticmethod
    def find(text: str, courts: Mapping[str, Court]) -> str | None:
        """The id of the court `text` names: its id, else its zh or en name."""
        if text in courts:
            return text
        for court in courts.values():
            if text in (court.name, court.name_en):
                return court.id
        return None

    async def resolve(self, text: str) -> str | None:
        """The id of the court `text` names, or None (read fresh: not on a hot path)."""
        return self.find(text.strip(), await self.courts(fresh=True))

    async def ensure(self, text: str) -> str:
        """The id of the court `text` names, created (id and name = text) when missing."""
        text = text.strip()
        found = self.find(text, await self.courts(fresh=True))
        if found is not None:
            return found
        check_court_id(text)
        await self._store.put_record(COURT, text, Court(id=text, name=text).to_record())
        self._snapshot = None
        return text

    async def ensure_room(self, court_id: str, room: str) -> None:
        room = room.strip()
        if not room:
            return
        if "/" in room or ":" in room:
            raise CourtError(f"room {room!r}: without ':' or '/'")
        room_id = f"{court_id}/{room}"
        if await self._store.get_record(ROOM, room_id) is None:
            record = {"name": room, "court": court_id, "created": time.time()}
            await self._store.put_record(ROOM, room_id, record)

    @staticmethod
    def lineage(court_id: str, courts: Mapping[str, Court]) -> list[str]:
        """The court and its ancestors, nearest first."""
        chain: list[str] = []
        current: str = court_id
        while current in courts and current not in chain and len(chain) < MAX_DEPTH:
            chain.append(current)
            current = courts[current].parent
        return chain

    async def within(self, court: str, top: str) -> bool:
        """Is the court named `court` (id or name) in the subtree of court `top`?"""
        courts = await self.courts()
        found = self.find(court, courts) if court else None
        return found is not None and top in self.lineage(found, courts)
