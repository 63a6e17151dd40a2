"""`courtcast agent ...`: the device agent's commands (enroll, run)."""

from __future__ import annotations

import argparse
from typing import Any


def add_agent_commands(sub: Any) -> None:
    agent = sub.add_parser("agent", help="the device agent (not built yet)")
    agent.add_argument("rest", nargs=argparse.REMAINDER)
    agent.set_defaults(func=_not_built)


def _not_built(args: argparse.Namespace) -> int:
    from courtcast.cli import UsageError

    raise UsageError("the device agent is not built yet (issue: device agents)")
