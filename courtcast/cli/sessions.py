"""`courtcast sessions open | close | recess | resume | cut | list`: trial sessions, which
record every stream of their room while open and, when approved for broadcast (--public),
broadcast it to the public --delay seconds behind live (--mask faces: faces blurred in that
broadcast, never in the recording). --at schedules the opening."""

from __future__ import annotations

import argparse
import getpass
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from courtcast.cli.common import UsageError, state_args, with_state
from courtcast.cli.table import Column, print_table, utc

if TYPE_CHECKING:
    from recorder.sessions import TrialSession, TrialSessions
    from storage.state import StateStore

COLUMNS = (
    Column("SESSION", 20),
    Column("STATE", 7),
    Column("ROOM", 16),
    Column("CASE", 24),
    Column("OPENED (UTC)", 20),
)
VERBS = (
    ("close", "close a session (its recordings are closed and signed)"),
    ("recess", "recess: recording pauses, with the reason logged"),
    ("resume", "resume after a recess, or a cut broadcast (still delayed)"),
    ("cut", "cut the public broadcast to its slate (audited)"),
)


def add_sessions_commands(sub: Any) -> None:
    sessions = sub.add_parser("sessions", help="trial sessions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    opening = sessions.add_parser(
        "open", help="open a session: every stream of the room is recorded until it closes"
    )
    state_args(opening)
    opening.add_argument("--room", required=True)
    opening.add_argument("--case", required=True, help="case number")
    opening.add_argument("--title", default="", help="the cause, as published")
    opening.add_argument("--parties", default="", help="the parties, as published")
    opening.add_argument("--public", action="store_true", help="approved for broadcast")
    opening.add_argument(
        "--delay",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds the public broadcast runs behind live (default 30)",
    )
    opening.add_argument(
        "--mask",
        choices=("faces",),
        default="",
        help="blur faces in the public broadcast (the recording is kept as filmed)",
    )
    opening.add_argument(
        "--at",
        type=iso_time,
        metavar="ISO-TIME",
        help="schedule the opening, e.g. 2026-12-07T09:00+08:00",
    )
    opening.set_defaults(func=cmd_sessions, verb="open")
    for verb, text in VERBS:
        cmd = sessions.add_parser(verb, help=text)
        state_args(cmd)
        cmd.add_argument("session_id")
        if verb == "recess":
            cmd.add_argument("--reason", required=True)
        cmd.set_defaults(func=cmd_sessions, verb=verb)
    lst = sessions.add_parser("list", help="sessions, newest first")
    state_args(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_sessions, verb="list")


def iso_time(text: str) -> float:
    """An ISO 8601 time with its zone, as UNIX seconds (argparse's type)."""
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if at.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time zone, e.g. {text}+08:00 or {text}Z")
    return at.timestamp()


def cmd_sessions(args: argparse.Namespace) -> int:
    from recorder.sessions import SessionError, TrialSessions

    async def work(state: StateStore) -> int:
        sessions = TrialSessions(state)
        who = getpass.getuser()
        try:
            if args.verb == "list":
                _print_sessions(await sessions.list(), args.json)
            else:
                await _change(sessions, args, who)
        except SessionError as exc:
            raise UsageError(str(exc)) from None
        if args.verb != "list":  # a session change from the CLI is in the trail too
            from core.audit import audit

            what = {k: getattr(args, k) for k in ("session_id", "room", "case") if hasattr(args, k)}
            await audit(state, f"session.{args.verb}", who, via="cli", **what)
        return 0

    return with_state(args, work)


async def _change(sessions: TrialSessions, args: argparse.Namespace, who: str) -> None:
    if args.verb == "open":
        session = await sessions.open(
            args.room,
            args.case,
            args.title,
            args.public,
            who,
            args.delay,
            args.at,
            args.mask,
            args.parties,
        )
        if session.state == "scheduled":
            when = utc(session.opened_at)
            print(f"session {session.id} scheduled in room {session.room} for {when} UTC")
        else:
            print(
                f"session {session.id} open in room {session.room} "
                f"(case {session.case_number}); recording {', '.join(session.streams)}"
            )
        if session.public:
            masked = ", faces blurred" if session.mask else ""
            print(
                f"broadcast {session.delay_s:.0f} s behind live{masked}: "
                f"/public/{session.id}/index.m3u8"
            )
    elif args.verb == "cut":
        await sessions.cut(args.session_id, who)
        print(f"session {args.session_id}: broadcast cut, the public sees the slate")
    elif args.verb == "recess":
        await sessions.recess(args.session_id, args.reason, who)
        print(f"session {args.session_id} in recess: {args.reason}")
    elif args.verb == "resume":
        session = await sessions.get(args.session_id)
        if session.cut:
            await sessions.resume_broadcast(args.session_id, who)
            print(f"session {args.session_id}: broadcast resumed, {session.delay_s:.0f} s late")
        if session.state == "recess" or not session.cut:
            await sessions.resume(args.session_id, who)
            print(f"session {args.session_id} resumed")
    else:
        await sessions.close(args.session_id, who)
        print(f"session {args.session_id} closed; its recordings are being signed")


def _print_sessions(sessions: list[TrialSession], as_json: bool) -> None:
    if as_json:
        print(json.dumps([s.to_record() for s in sessions], indent=2))
        return
    print_table(
        COLUMNS, ((s.id, s.state, s.room, s.case_number, utc(s.opened_at)) for s in sessions)
    )
