"""Trial sessions, the minimal model (the control room builds its UI on it).

A session belongs to a courtroom (room), has a case number, a title and the streams of
that room; it is opened, may recess and resume (with a reason), and is closed. While it is
open every stream of its room is recorded. Kept in Redis (kind "trial-session"); every
change is announced on the "sessions" channel so recorders act at once.
"""

from __future__ import annotations

import builtins
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from media_server.streams import StreamDefinition, StreamRegistry
from storage.state import StateStore

KIND = "trial-session"
CHANGES = "sessions"
ACTIVE = ("open", "recess")


class SessionError(Exception):
    """A session request that cannot be done, phrased for the user."""


@dataclass
class TrialSession:
    id: str
    room: str
    case_number: str
    title: str = ""
    court: str = ""
    public: bool = False
    state: str = "open"  # open | recess | closed
    reason: str = ""  # why it is in recess
    opened_at: float = field(default_factory=time.time)
    closed_at: float | None = None
    streams: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)  # open, recess, resume, close

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TrialSession:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


def room_streams(definitions: list[StreamDefinition], room: str) -> list[StreamDefinition]:
    return [d for d in definitions if d.room == room and d.enabled]


def no_streams(room: str) -> SessionError:
    return SessionError(
        f"room {room} has no streams: register its cameras with "
        f"`courtcast streams add ID` and room {room}"
    )


class TrialSessions:
    def __init__(self, state: StateStore) -> None:
        self.state = state
        for name in ("room", "state", "case_number"):
            state.declare_index(KIND, name)

    async def open(
        self, room: str, case_number: str, title: str = "", public: bool = False, who: str = ""
    ) -> TrialSession:
        if not room or not case_number:
            raise SessionError("a session needs a room and a case number")
        for other in await self.state.find_records(KIND, "room", room):
            if other.get("state") in ACTIVE:
                raise SessionError(
                    f"room {room} already has session {other['id']} open; close it first"
                )
        streams = room_streams(await StreamRegistry(self.state).list(), room)
        if not streams:
            raise no_streams(room)
        now = time.time()
        day = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d")
        session = TrialSession(
            id=f"s-{day}-{secrets.token_hex(3)}",
            room=room,
            case_number=case_number,
            title=title,
            court=next((d.court for d in streams if d.court), ""),
            public=public,
            opened_at=now,
            streams=[d.id for d in streams],
            events=[{"event": "open", "at": now, "who": who}],
        )
        await self._save(session)
        return session

    async def get(self, session_id: str) -> TrialSession:
        record = await self.state.get_record(KIND, session_id)
        if record is None:
            raise SessionError(f"no session {session_id}")
        return TrialSession.from_record(record)

    async def list(self, state: str | None = None) -> list[TrialSession]:
        records = (
            await self.state.find_records(KIND, "state", state)
            if state
            else await self.state.list_records(KIND)
        )
        sessions = [TrialSession.from_record(r) for r in records]
        return sorted(sessions, key=lambda s: s.opened_at, reverse=True)

    async def active(self) -> builtins.list[TrialSession]:  # `list` is a method here
        return [s for s in await self.list() if s.active]

    async def recess(self, session_id: str, reason: str, who: str = "") -> TrialSession:
        if not reason:
            raise SessionError("a recess needs a reason (the court rule asks it be logged)")
        return await self._change(session_id, "recess", ("open",), who, reason)

    async def resume(self, session_id: str, who: str = "") -> TrialSession:
        return await self._change(session_id, "open", ("recess",), who, "")

    async def close(self, session_id: str, who: str = "") -> TrialSession:
        return await self._change(session_id, "closed", ACTIVE, who, "")

    async def _change(
        self, session_id: str, to: str, allowed_from: tuple[str, ...], who: str, reason: str
    ) -> TrialSession:
        session = await self.get(session_id)
        event = {"open": "resume", "recess": "recess", "closed": "close"}[to]
        if session.state not in allowed_from:
            raise SessionError(f"session {session_id} is {session.state}; cannot {event} it")
        now = time.time()
        session.state, session.reason = to, reason
        if to == "closed":
            session.closed_at = now
        session.events.append({"event": event, "at": now, "who": who, "reason": reason})
        await self._save(session)
        return session

    async def _save(self, session: TrialSession) -> None:
        await self.state.put_record(KIND, session.id, session.to_record())
        await self.state.publish(CHANGES, {"id": session.id, "state": session.state})
