"""`courtcast users add`."""

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
    add.set_defaults(func=cmd_users_add)


def cmd_users_add(args: argparse.Namespace) -> int:
    from control_room.users import UserError, Users

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")

    async def work(state: StateStore) -> int:
        try:
            await Users(state).add(args.name, args.role, password)
        except UserError as exc:
            raise UsageError(str(exc)) from None
        print(f"user {args.name} added with role {args.role}")
        return 0

    return with_state(args, work)
