"""`courtcast devices enrol-token | list`: what a technician does before and after an agent
enrols (`courtcast agent enroll` spends the token)."""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING, Any

from courtcast.cli.common import UsageError, state_args, with_state
from courtcast.cli.streams import STREAM_CLASSES
from courtcast.cli.table import Column, print_listing, utc

if TYPE_CHECKING:
    from storage.state import StateStore

COLUMNS = (
    Column("COURT", 16),
    Column("ROOM", 12),
    Column("DEVICE", 12),
    Column("MODEL", 20),
    Column("STATE", 10),
    Column("LAST SEEN (UTC)", 19),
    Column("SOURCES"),
)


def add_devices_commands(sub: Any) -> None:
    devices = sub.add_parser("devices", help="device agents").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    token = devices.add_parser(
        "enrol-token",
        help="print a one-time enrolment token for a courtroom (creates the court and room if new)",
    )
    state_args(token)
    token.add_argument("--court", required=True)
    token.add_argument("--room", required=True)
    token.add_argument("--class", dest="stream_class", default="trial", choices=STREAM_CLASSES)
    token.add_argument("--ttl-s", type=int, default=86400, help="valid this long (seconds)")
    token.set_defaults(func=cmd_devices_enrol_token)
    lst = devices.add_parser("list", help="devices with their state and sources")
    state_args(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_devices_list)


def cmd_devices_enrol_token(args: argparse.Namespace) -> int:
    from control_room.devices import DeviceRegistry
    from core.audit import audit

    if args.ttl_s < 60:
        raise UsageError("--ttl-s: at least 60 seconds")

    async def work(state: StateStore) -> int:
        who = getpass.getuser()
        try:
            token = await DeviceRegistry(state).make_enrol_token(
                args.court, args.room, args.stream_class, args.ttl_s, who
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        await audit(
            state,
            "device.enrol-token",
            who,
            court=args.court,
            room=args.room,
            stream_class=args.stream_class,
            via="cli",
        )
        print(token)
        return 0

    return with_state(args, work)


def cmd_devices_list(args: argparse.Namespace) -> int:
    from control_room.devices import DeviceRegistry

    async def work(state: StateStore) -> int:
        rows = await DeviceRegistry(state).list()
        print_listing(rows, args.json, COLUMNS, _cells)
        return 0

    return with_state(args, work)


def _cells(device: dict[str, Any]) -> tuple[Any, ...]:
    seen = utc(device["last_seen"]) if device["last_seen"] else "never"
    sources = ", ".join(f"{s['name']}:{s['state']}" for s in device["sources"]) or "-"
    return (
        device["court"],
        device["room"],
        device["id"],
        device["model"] or "-",
        device["state"],
        seen,
        sources,
    )
