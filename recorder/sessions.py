"""Trial sessions, the minimal model (the control room builds its UI on it).

A session belongs to a courtroom (room), has a case number, a title, the parties (as the
clerk wrote them) and the streams of that room; it is opened (at once, or scheduled for a
time, when the recorder opens it), may recess and resume (with a reason), and is closed.
While it is open every stream of its room is recorded. A public session (approved for
broadcast) is broadcast `delay_s` behind live while open (recorder/broadcast.py); its
broadcast may be cut to a slate and resumed, which is audited and kept in its events, and
never touches the recording. It may ask for faces to be blurred in that broadcast
(`mask="faces"`); the recording stays as filmed. Kept in Redis (kind "trial-session");
every change is announced on the "sessions" channel so recorders act at once.
"""

from __future__ import annotations

import builtins
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.audit import audit
from media_server.face_mask import MASKS
from media_server.streams import StreamDefinition, StreamRegistry
from storage.state import StateStore

KIND = "trial-session"
CHANGES = "sessions"
ACTIVE = ("open", "recess")
DEFAULT_DELAY_S = 30.0  # courts abroad broadcast 10-20 s late; the issue asks 30 by default
MAX_DELAY_S = 600.0


class SessionError(Exception):
    """A session request that cannot be done, phrased for the user."""


@dataclass
class TrialSession:
    id: str
    room: str
    case_number: str
    title: str = ""  # the cause, as published
    court: str = ""
    public: bool = False  # approved for broadcast
    parties: str = ""  # the parties as the court publishes them (names masked as it sees fit)
    state: str = "open"  # scheduled | open | recess | closed
    reason: str = ""  # why it is in recess
    opened_at: float = field(default_factory=time.time)  # planned start while scheduled
    closed_at: float | None = None
    delay_s: float = DEFAULT_DELAY_S  # how far the public broadcast runs behind live
    scheduled_for: float | None = None  # the start it was scheduled for, if it was
    cut: bool = False  # the public broadcast shows the slate
    mask: str = ""  # "faces": faces blurred in the public broadcast (not in the recording)
    streams: list[str] = field(default_factory=list)
    # schedule, open, recess, resume, cut, broadcast-resume, close
    events: list[dict[str, Any]] = field(default_factory=list)

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
        self,
        room: str,
        case_number: str,
        title: str = "",
        public: bool = False,
        who: str = "",
        delay_s: float = DEFAULT_DELAY_S,
        at: float | None = None,
        mask: str = "",
        parties: str = "",
    ) -> TrialSession:
        """Open a session now, or schedule it for `at` (UNIX seconds) if that is later."""
        if not room or not case_number:
            raise SessionError("a session needs a room and a case number")
        if not 0 <= delay_s <= MAX_DELAY_S:
            raise SessionError(f"the broadcast delay must be 0 to {MAX_DELAY_S:.0f} seconds")
        if mask and mask not in MASKS:
            raise SessionError(f"mask {mask!r}: the broadcast can mask {', '.join(MASKS)}")
        now = time.time()
        scheduled = at is not None and at > now
        if not scheduled:
            await self._check_room_free(room)
        streams = room_streams(await StreamRegistry(self.state).list(), room)
        if not streams:
            raise no_streams(room)
        start = at if scheduled and at is not None else now
        day = datetime.fromtimestamp(start, UTC).strftime("%Y%m%d")
        session = TrialSession(
            id=f"s-{day}-{secrets.token_hex(3)}",
            room=room,
            case_number=case_number,
            title=title,
            court=next((d.court for d in streams if d.court), ""),
            public=public,
            parties=parties,
            state="scheduled" if scheduled else "open",
            opened_at=start,
            delay_s=float(delay_s),
            mask=mask,
            scheduled_for=start if scheduled else None,
            streams=[d.id for d in streams],
            events=[{"event": "schedule" if scheduled else "open", "at": now, "who": who}],
        )
        await self._save(session)
        return session

    async def _check_room_free(self, room: str) -> None:
        for other in await self.state.find_records(KIND, "room", room):
            if other.get("state") in ACTIVE:
                raise SessionError(
                    f"room {room} already has session {other['id']} open; close it first"
                )

    async def open_due(self, now: float | None = None) -> builtins.list[TrialSession]:
        """Open the scheduled sessions whose time has come (the recorder calls this every
        few seconds); one whose room is still busy waits for it. Returns those opened."""
        now = time.time() if now is None else now
        opened = []
        for session in await self.list("scheduled"):
            if session.opened_at > now:
                continue
            async with self.state.lock(f"{KIND}:{session.id}", timeout_s=10, wait_s=10):
                current = await self.get(session.id)
                if current.state != "scheduled":
                    continue
                try:
                    await self._check_room_free(current.room)
                except SessionError:
                    continue
                current.state, current.opened_at = "open", now
                current.events.append({"event": "open", "at": now, "who": "schedule"})
                await self._save(current)
                opened.append(current)
        return opened

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
        return await self._change(session_id, "closed", (*ACTIVE, "scheduled"), who, "")

    def check_cut(self, session: TrialSession, cut: bool) -> None:
        """Whether the broadcast of session may be cut (cut=True) or resumed now."""
        if not session.public:
            raise SessionError(f"session {session.id} is not broadcast; cannot cut it")
        if session.state not in ACTIVE:
            raise SessionError(f"session {session.id} is {session.state}; cannot cut it")
        if session.cut == cut:
            now = "cut" if cut else "not cut"
            raise SessionError(f"the broadcast of session {session.id} is already {now}")

    async def cut(self, session_id: str, who: str = "", at: float | None = None) -> TrialSession:
        """The public broadcast shows the slate (at: when the media server cut it)."""
        return await self._set_cut(session_id, True, who, at)

    async def resume_broadcast(self, session_id: str, who: str = "") -> TrialSession:
        """The public broadcast shows the trial again, still delay_s behind live."""
        return await self._set_cut(session_id, False, who, None)

    async def _set_cut(
        self, session_id: str, cut: bool, who: str, at: float | None
    ) -> TrialSession:
        session = await self.get(session_id)
        self.check_cut(session, cut)
        at = time.time() if at is None else at
        event = "cut" if cut else "broadcast-resume"
        session.cut = cut
        session.events.append({"event": event, "at": at, "who": who})
        await self._save(session)
        await audit(
            self.state,
            f"session.{event}",  # as the other session changes (recorder/http.py)
            who,
            session=session_id,
            case_number=session.case_number,
            room=session.room,
            court=session.court,
        )
        return session

    async def _change(
        self, session_id: str, to: str, allowed_from: tuple[str, ...], who: str, reason: str
    ) -> TrialSession:
        session = await self.get(session_id)
        event = {"open": "resume", "recess": "recess", "closed": "close"}[to]
        if session.state == "scheduled" and to == "closed":
            event = "cancel"  # a scheduled session that never opened
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
