"""Trials in the demo courtrooms (`courtcast up --demo`), so the public portal has
something to show on a first run (issue 16, item 6): every demo room holds a public
session with the default broadcast delay; one of them goes into recess and resumes every
few minutes; one room first holds a short session whose broadcast is cut for a while and
which then closes, so there is a finished trial to replay (without the cut); and one trial
is scheduled, so the portal has an upcoming one.

A restart with the same data dir finds what it made before (sessions opened by "demo")
and only adds what is missing. Nothing here is special to the demo but its timetable: it
acts through TrialSessions and the recorder's broadcasts as the API does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from core.tasks import cancel_and_wait
from media_server.demo import DemoRoom
from recorder.role import RecorderRole
from recorder.sessions import DEFAULT_DELAY_S, SessionError, TrialSession

log = logging.getLogger(__name__)

WHO = "demo"


@dataclass(frozen=True)
class DemoCase:
    case_number: str
    title: str  # the cause
    parties: str


CASES = (
    DemoCase(
        "(2026)豫民终1088号",
        "买卖合同纠纷 / Sales contract dispute",
        "原告 张某 / 被告 某商贸有限公司",
    ),
    DemoCase("(2026)豫01刑初215号", "盗窃罪 / Theft", "公诉机关 某区人民检察院 / 被告人 李某"),
    DemoCase(
        "(2026)豫0105民初3321号", "民间借贷纠纷 / Private lending dispute", "原告 王某 / 被告 赵某"
    ),
    DemoCase(
        "(2026)豫0105行初47号",
        "行政许可 / Administrative licence",
        "原告 某科技公司 / 被告 某区市场监督管理局",
    ),
)
REPLAY_CASE = DemoCase(
    "(2026)豫0105民初3190号",
    "物业服务合同纠纷 / Property service dispute",
    "原告 某物业公司 / 被告 陈某",
)
UPCOMING_CASE = DemoCase(
    "(2026)豫01民初902号",
    "著作权侵权纠纷 / Copyright infringement",
    "原告 某出版社 / 被告 某网络公司",
)


@dataclass(frozen=True)
class Timetable:
    """Seconds. The replay session: open, cut at cut_at, resume at resume_at, close at
    close_at (from its opening), broadcast replay_delay_s behind live. The recess room:
    every recess_every_s a recess of recess_s."""

    replay_delay_s: float = 10.0
    cut_at: float = 25.0
    resume_at: float = 35.0
    close_at: float = 50.0
    recess_every_s: float = 180.0
    recess_s: float = 40.0
    upcoming_in_s: float = 3 * 3600.0


class DemoTrials:
    def __init__(
        self, recorder: RecorderRole, rooms: list[DemoRoom], timetable: Timetable | None = None
    ) -> None:
        self.recorder = recorder
        self.sessions = recorder.sessions
        self.rooms = [r.room for r in rooms]
        self.timetable = timetable or Timetable()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        if not self.rooms:
            return
        replay_room = self.rooms[-1]
        for index, room in enumerate(self.rooms):
            if room != replay_room:
                await self._ensure_open(room, CASES[index % len(CASES)])
        await self._ensure_upcoming()
        await self.recorder.sync_broadcasts()
        self._tasks.append(asyncio.create_task(self._replay_then_live(replay_room), name="demo"))
        recess_room = self.rooms[min(1, len(self.rooms) - 1)]
        self._tasks.append(asyncio.create_task(self._recesses(recess_room), name="demo-recess"))

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks.clear()

    async def _mine(self) -> list[TrialSession]:
        return [
            s
            for s in await self.sessions.list()
            if s.public and s.events and s.events[0].get("who") == WHO
        ]

    async def _ensure_open(
        self, room: str, case: DemoCase, delay_s: float = DEFAULT_DELAY_S
    ) -> TrialSession:
        for session in await self.sessions.active():
            if session.room == room:
                return session
        session = await self._open(room, case, delay_s)
        log.info("demo: public session %s open in %s", session.id, room)
        return session

    async def _open(
        self, room: str, case: DemoCase, delay_s: float, at: float | None = None
    ) -> TrialSession:
        """A public session for the case, by keyword: open() has grown parameters."""
        return await self.sessions.open(
            room,
            case.case_number,
            title=case.title,
            public=True,
            who=WHO,
            delay_s=delay_s,
            at=at,
            parties=case.parties,
        )

    async def _ensure_upcoming(self) -> None:
        now = time.time()
        for session in await self._mine():
            if session.state == "scheduled":
                if session.opened_at > now:
                    return
                await self.sessions.close(session.id, WHO)  # overdue: its room stayed busy
        at = now + self.timetable.upcoming_in_s
        case = UPCOMING_CASE
        await self._open(self.rooms[0], case, DEFAULT_DELAY_S, at)

    async def _replay_then_live(self, room: str) -> None:
        """One short session with a cut, closed (the replay), unless one was made before;
        then a live session in the room like the others."""
        try:
            done = any(
                s.state == "closed" and s.case_number == REPLAY_CASE.case_number
                for s in await self._mine()
            )
            if not done:
                await self._replay_session(room)
            await self._ensure_open(room, CASES[(len(self.rooms) - 1) % len(CASES)])
            await self.recorder.sync_broadcasts()
        except (SessionError, ConnectionError) as exc:
            log.warning("demo: %s", exc)

    async def _replay_session(self, room: str) -> None:
        plan = self.timetable
        for session in await self.sessions.active():
            if session.room == room:  # a session left open by an earlier run
                await self.sessions.close(session.id, WHO)
        case = REPLAY_CASE
        session = await self._open(room, case, plan.replay_delay_s)
        await self.recorder.sync_broadcasts()
        started = time.monotonic()

        async def until(at: float) -> None:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))

        await until(plan.cut_at)
        if self.recorder.broadcasts is not None:
            self.recorder.broadcasts.cut_now(session.id)
        await self.sessions.cut(session.id, WHO)
        await until(plan.resume_at)
        await self.sessions.resume_broadcast(session.id, WHO)
        await self.recorder.sync_broadcasts()
        await until(plan.close_at)
        await self.sessions.close(session.id, WHO)
        await self.recorder.sync_broadcasts()
        log.info("demo: session %s closed, its replay is on the portal", session.id)

    async def _recesses(self, room: str) -> None:
        plan = self.timetable
        while True:
            await asyncio.sleep(plan.recess_every_s)
            with contextlib.suppress(SessionError, ConnectionError):
                session = next((s for s in await self.sessions.active() if s.room == room), None)
                if session is None or session.state != "open":
                    continue
                await self.sessions.recess(session.id, "休庭 / recess (demo)", WHO)
                await self.recorder.sync_broadcasts()
                await asyncio.sleep(plan.recess_s)
                await self.sessions.resume(session.id, WHO)
                await self.recorder.sync_broadcasts()
