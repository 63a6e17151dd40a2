"""`courtcast users add | set-role | disable` (a role change or a disable ends the user's
sessions on every control room)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING, Any

from courtcast.cli.common import UsageError, state_args, with_state

if TYPE_CHECKING:
    from storage.state import StateStore


def add_users_commands(sub: Any) -> None:
    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = users.add_parser("add", help="add a user (password from stdin when not a tty)")
    state_args(add)
    add.add_argument("name")
    add.add_argument("--role", required=True)
    add.add_argument(
        "--court", default="", help="scope the user to this court's subtree (none: the province)"
    )
    add.set_defaults(func=cmd_users_add)
    set_role = users.add_parser("set-role", help="change a user's role (ends its sessions)")
    state_args(set_role)
    set_role.add_argument("name")
    set_role.add_argument("--role", required=True)
    set_role.set_defaults(func=cmd_users_change)
    disable = users.add_parser("disable", help="refuse a user's sign-in (ends its sessions)")
    state_args(disable)
    disable.add_argument("name")
    disable.set_defaults(func=cmd_users_change, role=None)


def cmd_users_add(args: argparse.Namespace) -> int:
    from control_room.users import UserError, Users

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")

    async def work(state: StateStore) -> int:
        try:
            await Users(state).add(args.name, args.role, password, args.court)
        except UserError as exc:
            raise UsageError(str(exc)) from None
        scope = f"court {args.court}'s subtree" if args.court else "the province"
        print(f"user {args.name} added with role {args.role}, scoped to {scope}")
        return 0

    return with_state(args, work)


def cmd_users_change(args: argparse.Namespace) -> int:
    from control_room.users import UserError, Users

    async def work(state: StateStore) -> int:
        try:
            if args.role is None:
                await Users(state).disable(args.name)
                print(f"user {args.name} disabled; its sessions ended")
            else:
                await Users(state).set_role(args.name, args.role)
                print(f"user {args.name} now has role {args.role}; its sessions ended")
        except UserError as exc:
            raise UsageError(str(exc)) from None
        return 0

    return with_state(args, work)
