"""Remote arraignment rooms: a courtroom and a detention centre (optionally a lawyer and an
interpreter) see and hear each other.

Each seat publishes its camera over WHIP to its own private stream
`arraignment-{room}-{seat}` and plays the other seats over WHEP. An admin or operator
creates the room and hands each seat a one-time join code; joining spends the code and
gives the seat a token, the Bearer credential for that seat's WHIP publish and its WHEP
play of the other seats (and nothing else). Anyone else reaches the room's streams only
through the node's play authorization (operators watching from the command centre).

Rooms live in a RoomStore: the state store (Redis) in production, so a restart or another
node sees the same rooms; memory for tests. Codes and tokens are kept as SHA-256 digests.
A join code has 12 digits and expires CODE_TTL_S after it is issued; wrong codes are
limited per room by the HTTP layer (arraignment_http.JOIN_LIMIT).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from storage.state import StateStore

SEATS: tuple[str, ...] = ("court", "detention", "lawyer", "interpreter")
REQUIRED_SEATS = ("court", "detention")
DEFAULT_LABELS = {
    "court": "Courtroom",
    "detention": "Detention centre",
    "lawyer": "Lawyer",
    "interpreter": "Interpreter",
}
ROOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
STREAM_PREFIX = "arraignment-"
CODE_DIGITS = 12  # 10^12: out of reach under the per-room attempt limit
CODE_TTL_S = 2 * 3600.0  # handed out shortly before the hearing; re-issue for a later one
RECORD_KIND = "arraignment-room"


class RoomError(Exception):
    """Refused; `status` is the HTTP answer, the message says what to do."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def room_stream(room_id: str, seat: str) -> str:
    return f"{STREAM_PREFIX}{room_id}-{seat}"


def parse_room_stream(stream_id: str) -> tuple[str, str] | None:
    """(room, seat) of a room stream id, None for any other stream."""
    if not stream_id.startswith(STREAM_PREFIX):
        return None
    for seat in SEATS:
        suffix = f"-{seat}"
        room_id = stream_id[len(STREAM_PREFIX) : -len(suffix)]
        if stream_id.endswith(suffix) and ROOM_ID.match(room_id):
            return room_id, seat
    return None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_code() -> str:
    return "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))


@dataclass
class Seat:
    seat: str
    label: str
    code_digest: str = ""  # the unspent join code, hashed; "" once spent
    code_expires: float = 0.0  # wall-clock time the unspent code stops working
    token_digest: str = ""  # the joined seat's token, hashed; "" when empty
    joined_at: float = 0.0

    @property
    def side(self) -> str:  # the name the page and older callers use
        return self.seat


@dataclass
class Room:
    id: str
    seats: dict[str, Seat] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    created_by: str = ""

    def seat_of(self, token: str | None) -> Seat | None:
        if not token:
            return None
        digest = _digest(token)
        for seat in self.seats.values():
            if seat.token_digest and hmac.compare_digest(seat.token_digest, digest):
                return seat
        return None

    def primary_other(self, seat: str) -> str:
        """Whom a seat mainly watches: court and detention each other, the rest the court."""
        return "detention" if seat == "court" else "court"

    def to_record(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "created_by": self.created_by,
            "seats": {name: asdict(s) for name, s in self.seats.items()},
        }

    @classmethod
    def from_record(cls, room_id: str, record: dict[str, Any]) -> Room:
        seats = {name: Seat(**s) for name, s in record.get("seats", {}).items()}
        return cls(
            room_id, seats, float(record.get("created", 0.0)), str(record.get("created_by", ""))
        )

    def public_view(self) -> dict[str, Any]:
        """What the control API lists: no digests, only whether codes/seats are in use."""
        return {
            "room": self.id,
            "created": self.created,
            "created_by": self.created_by,
            "seats": {
                name: {
                    "label": s.label,
                    "stream": room_stream(self.id, name),
                    "code_pending": bool(s.code_digest),
                    "joined": bool(s.token_digest),
                    "joined_at": s.joined_at,
                }
                for name, s in self.seats.items()
            },
        }


@dataclass(frozen=True)
class Joined:
    """What a seat gets on joining: its token, its stream and the streams it plays."""

    room: str
    side: str
    label: str
    other_label: str
    token: str
    publish: str
    play: str
    plays: tuple[str, ...]


class RoomStore(Protocol):
    async def get(self, room_id: str) -> dict[str, Any] | None: ...
    async def put(self, room_id: str, record: dict[str, Any]) -> None: ...
    async def delete(self, room_id: str) -> bool: ...
    async def list(self) -> list[tuple[str, dict[str, Any]]]: ...


class MemoryRoomStore:
    """Rooms of one process (tests, single-node trials): lost on restart."""

    def __init__(self) -> None:
        self._records: dict[str, dict[str, Any]] = {}

    async def get(self, room_id: str) -> dict[str, Any] | None:
        return self._records.get(room_id)

    async def put(self, room_id: str, record: dict[str, Any]) -> None:
        self._records[room_id] = record

    async def delete(self, room_id: str) -> bool:
        return self._records.pop(room_id, None) is not None

    async def list(self) -> list[tuple[str, dict[str, Any]]]:
        return sorted(self._records.items())


class StateRoomStore:
    """Rooms as state-store records (kind "arraignment-room"): survive restarts, shared by
    every node. Read-modify-write per change: two clerks changing one room at the same
    instant may lose one change (a join code re-issued twice), never a secret."""

    def __init__(self, state: StateStore) -> None:
        self._state = state

    async def get(self, room_id: str) -> dict[str, Any] | None:
        return await self._state.get_record(RECORD_KIND, room_id)

    async def put(self, room_id: str, record: dict[str, Any]) -> None:
        await self._state.put_record(RECORD_KIND, room_id, record)

    async def delete(self, room_id: str) -> bool:
        return await self._state.delete_record(RECORD_KIND, room_id)

    async def list(self) -> list[tuple[str, dict[str, Any]]]:
        return [(r["id"], r) for r in await self._state.list_records(RECORD_KIND)]


class ArraignmentRooms:
    def __init__(self, store: RoomStore | None = None, code_ttl_s: float = CODE_TTL_S) -> None:
        self.store: RoomStore = store or MemoryRoomStore()
        self.code_ttl_s = code_ttl_s

    def _give_code(self, seat: Seat) -> str:
        code = _new_code()
        seat.code_digest, seat.code_expires = _digest(code), time.time() + self.code_ttl_s
        return code

    async def create(
        self, room_id: str, labels: dict[str, str] | None = None, created_by: str = ""
    ) -> dict[str, str]:
        """Open a room with court, detention and any optional seats named in labels;
        returns each seat's one-time join code (shown once, stored hashed)."""
        if not ROOM_ID.match(room_id):
            raise RoomError(400, f"room id {room_id!r}: use letters, digits, '-' and '_'")
        wanted = {**{s: DEFAULT_LABELS[s] for s in REQUIRED_SEATS}, **(labels or {})}
        unknown = set(wanted) - set(SEATS)
        if unknown:
            raise RoomError(400, f"unknown seats {sorted(unknown)}; seats are {list(SEATS)}")
        if await self.store.get(room_id) is not None:
            raise RoomError(409, f"room {room_id!r} already exists")
        room = Room(room_id, created_by=created_by)
        codes: dict[str, str] = {}
        for seat in (s for s in SEATS if s in wanted):
            room.seats[seat] = Seat(seat, wanted[seat] or DEFAULT_LABELS[seat])
            codes[seat] = self._give_code(room.seats[seat])
        await self.store.put(room_id, room.to_record())
        return codes

    async def reissue(self, room_id: str, seat: str) -> str:
        """A new join code for one seat (its current token stops working)."""
        room = await self.get(room_id)
        if seat not in room.seats:
            raise RoomError(404, f"room {room_id!r} has no {seat!r} seat")
        code = self._give_code(room.seats[seat])
        room.seats[seat].token_digest = ""
        await self.store.put(room_id, room.to_record())
        return code

    async def join(self, room_id: str, code: str) -> Joined:
        room = await self.get(room_id)
        digest = _digest("".join(code.split()).replace("-", ""))  # as read out: "1234 5678"
        for seat in room.seats.values():
            if seat.code_digest and hmac.compare_digest(seat.code_digest, digest):
                if time.time() >= seat.code_expires:
                    raise RoomError(403, "this join code has expired: ask the clerk for a new one")
                token = secrets.token_urlsafe(24)
                seat.code_digest, seat.token_digest = "", _digest(token)
                seat.joined_at = time.time()
                await self.store.put(room_id, room.to_record())
                return self._joined(room, seat, token)
        raise RoomError(
            403,
            "this join code is not valid for the room: it was mistyped or has "
            "been used already; ask the clerk for a new one",
        )

    def _joined(self, room: Room, seat: Seat, token: str) -> Joined:
        main = room.primary_other(seat.seat)
        others = (main, *(s for s in room.seats if s not in (seat.seat, main)))
        return Joined(
            room.id,
            seat.seat,
            seat.label,
            room.seats[main].label,
            token,
            room_stream(room.id, seat.seat),
            room_stream(room.id, main),
            tuple(room_stream(room.id, s) for s in others),
        )

    async def leave(self, room_id: str, token: str | None) -> Seat:
        room = await self.get(room_id)
        seat = room.seat_of(token)
        if seat is None:
            raise RoomError(403, "not a seat of this room")
        seat.token_digest = ""
        await self.store.put(room_id, room.to_record())
        return seat

    async def close(self, room_id: str) -> bool:
        return await self.store.delete(room_id)

    async def list(self) -> list[Room]:
        return [Room.from_record(rid, rec) for rid, rec in await self.store.list()]

    async def get(self, room_id: str) -> Room:
        record = await self.store.get(room_id) if ROOM_ID.match(room_id) else None
        if record is None:
            raise RoomError(404, f"no arraignment room {room_id!r} is open")
        return Room.from_record(room_id, record)

    async def may_publish(self, stream_id: str, token: str | None) -> bool:
        """A seat token publishes its own seat's stream only."""
        found = await self._seat_for(stream_id, token)
        return found is not None and found[1].seat == found[0]

    async def may_play(self, stream_id: str, token: str | None) -> bool:
        """A seat token plays every other seat of its room, never its own stream."""
        found = await self._seat_for(stream_id, token)
        return found is not None and found[1].seat != found[0]

    async def _seat_for(self, stream_id: str, token: str | None) -> tuple[str, Seat] | None:
        """(the stream's seat, the token's seat) when both belong to the same room."""
        parsed = parse_room_stream(stream_id)
        if parsed is None or not token:
            return None
        record = await self.store.get(parsed[0])
        if record is None:
            return None
        room = Room.from_record(parsed[0], record)
        seat = room.seat_of(token)
        if seat is None or parsed[1] not in room.seats:
            return None
        return parsed[1], seat
