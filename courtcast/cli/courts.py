"""`courtcast courts add | list`: the court tree (high, intermediate and basic courts,
people's tribunals), which users are scoped to and streams and devices belong to."""

from __future__ import annotations

import argparse
import getpass
from typing import TYPE_CHECKING, Any

from courtcast.cli.common import UsageError, state_args, with_state
from courtcast.cli.table import Column, print_listing

if TYPE_CHECKING:
    from storage.state import StateStore

COLUMNS = (
    Column("COURT", 20),
    Column("LEVEL", 12),
    Column("PARENT", 20),
    Column("NAME", 24),
    Column("NAME (EN)", 32),
    Column("ROOMS"),
)


def add_courts_commands(sub: Any) -> None:
    from core.courts import LEVELS

    courts = sub.add_parser("courts", help="the court tree").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = courts.add_parser("add", help="add a court (or change one's names, level, parent)")
    state_args(add)
    add.add_argument("court_id", metavar="ID")
    add.add_argument("--name", required=True, help="its name (Chinese)")
    add.add_argument("--name-en", default="", help="its name in English")
    add.add_argument("--level", default="", choices=LEVELS)
    add.add_argument("--parent", default="", help="the id of the court above it")
    add.set_defaults(func=cmd_courts_add)
    lst = courts.add_parser("list", help="every court, each under its parent")
    state_args(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_courts_list)


def cmd_courts_add(args: argparse.Namespace) -> int:
    from core.audit import audit
    from core.courts import Court, CourtError, CourtTree

    async def work(state: StateStore) -> int:
        tree = CourtTree(state)
        court = Court(
            id=args.court_id,
            name=args.name,
            name_en=args.name_en,
            level=args.level,
            parent=args.parent,
        )
        existed = args.court_id in await tree.courts(fresh=True)
        try:
            await tree.add(court)
        except CourtError as exc:
            raise UsageError(str(exc)) from None
        action = "court.change" if existed else "court.add"
        await audit(state, action, getpass.getuser(), court=court.id, after=court.to_record())
        print(f"court {court.id} {'changed' if existed else 'added'}")
        return 0

    return with_state(args, work)


def cmd_courts_list(args: argparse.Namespace) -> int:
    from core.courts import CourtTree

    async def work(state: StateStore) -> int:
        tree = CourtTree(state)
        rooms = await tree.rooms()
        rows = [
            {**c.to_record(), "rooms": [r["name"] for r in rooms if r["court"] == c.id]}
            for c in await tree.ordered()
        ]
        print_listing(rows, args.json, COLUMNS, _cells)
        return 0

    return with_state(args, work)


def _cells(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["id"],
        row["level"] or "-",
        row["parent"] or "-",
        row["name"],
        row["name_en"] or "-",
        ", ".join(row["rooms"]) or "-",
    )
