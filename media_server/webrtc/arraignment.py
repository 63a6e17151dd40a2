"""Remote arraignment rooms: a courtroom and a detention centre see and hear each other.

A room has two seats. Each seat publishes its camera over WHIP to its own private stream
and plays the other seat's stream over WHEP. A clerk creates the room and hands each side
a one-time join code; joining spends the code and gives the seat a token, which is the
Bearer credential for that seat's WHIP publish and WHEP play (and nothing else). Anyone
else reaches the room's streams only through the node's normal play authorization
(operators); public URLs never do, since the control room registers them as private.

Single node, in memory: a restart ends every room (the clerk issues new codes).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Literal

Side = Literal["court", "detention"]
SIDES: tuple[Side, Side] = ("court", "detention")
ROOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CODE_DIGITS = 8


class RoomError(Exception):
    """Refused; `status` is the HTTP answer, the message says what to do."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def room_stream(room_id: str, side: Side) -> str:
    return f"arraignment-{room_id}-{side}"


def other(side: Side) -> Side:
    return "detention" if side == "court" else "court"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class Seat:
    side: Side
    label: str
    code_digest: str = ""  # the unspent join code, hashed; "" once spent
    token_digest: str = ""  # the joined seat's token, hashed; "" when empty
    joined_at: float = 0.0


@dataclass
class Room:
    id: str
    seats: dict[Side, Seat] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    def seat_of(self, token: str | None) -> Seat | None:
        if not token:
            return None
        digest = _digest(token)
        for seat in self.seats.values():
            if seat.token_digest and hmac.compare_digest(seat.token_digest, digest):
                return seat
        return None


@dataclass(frozen=True)
class Joined:
    """What a seat gets on joining: its token and the two stream ids."""

    room: str
    side: Side
    label: str
    other_label: str
    token: str
    publish: str
    play: str


class ArraignmentRooms:
    def __init__(self) -> None:
        self._rooms: dict[str, Room] = {}

    def create(self, room_id: str, court_label: str = "Courtroom",
               detention_label: str = "Detention centre") -> dict[Side, str]:
        """Open a room; returns the one-time join code of each side (shown once)."""
        if not ROOM_ID.match(room_id):
            raise RoomError(400, f"room id {room_id!r}: use letters, digits, '-' and '_'")
        if room_id in self._rooms:
            raise RoomError(409, f"room {room_id!r} already exists")
        room = Room(room_id)
        codes: dict[Side, str] = {}
        for side, label in zip(SIDES, (court_label, detention_label), strict=True):
            codes[side] = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
            room.seats[side] = Seat(side, label, code_digest=_digest(codes[side]))
        self._rooms[room_id] = room
        return codes

    def reissue(self, room_id: str, side: Side) -> str:
        """A new join code for one side (the old seat token stops working)."""
        seat = self._room(room_id).seats[side]
        code = "".join(secrets.choice("0123456789") for _ in range(CODE_DIGITS))
        seat.code_digest, seat.token_digest = _digest(code), ""
        return code

    def join(self, room_id: str, code: str) -> Joined:
        room = self._room(room_id)
        digest = _digest(code.strip())
        for seat in room.seats.values():
            if seat.code_digest and hmac.compare_digest(seat.code_digest, digest):
                token = secrets.token_urlsafe(24)
                seat.code_digest, seat.token_digest = "", _digest(token)
                seat.joined_at = time.time()
                return Joined(room_id, seat.side, seat.label, room.seats[other(seat.side)].label,
                              token, room_stream(room_id, seat.side),
                              room_stream(room_id, other(seat.side)))
        raise RoomError(403, "this join code is not valid for the room: it was mistyped or has "
                             "been used already; ask the clerk for a new one")

    def leave(self, room_id: str, token: str | None) -> Seat:
        seat = self._room(room_id).seat_of(token)
        if seat is None:
            raise RoomError(403, "not a seat of this room")
        seat.token_digest = ""
        return seat

    def close(self, room_id: str) -> None:
        self._rooms.pop(room_id, None)

    def may_publish(self, stream_id: str, token: str | None) -> bool:
        seat = self._seat_for(stream_id, token)
        return seat is not None and room_stream(self._room_of(stream_id), seat.side) == stream_id

    def may_play(self, stream_id: str, token: str | None) -> bool:
        seat = self._seat_for(stream_id, token)
        if seat is None:
            return False
        return room_stream(self._room_of(stream_id), other(seat.side)) == stream_id

    def is_room_stream(self, stream_id: str) -> bool:
        return bool(self._room_of(stream_id))

    def _seat_for(self, stream_id: str, token: str | None) -> Seat | None:
        room = self._rooms.get(self._room_of(stream_id))
        return room.seat_of(token) if room is not None else None

    def _room_of(self, stream_id: str) -> str:
        for side in SIDES:
            suffix = f"-{side}"
            if stream_id.startswith("arraignment-") and stream_id.endswith(suffix):
                room_id = stream_id[len("arraignment-"):-len(suffix)]
                if room_id in self._rooms:
                    return room_id
        return ""

    def _room(self, room_id: str) -> Room:
        room = self._rooms.get(room_id)
        if room is None:
            raise RoomError(404, f"no arraignment room {room_id!r} is open")
        return room
