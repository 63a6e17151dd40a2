"""The `courtcast` command (DESIGN.md §5).

Errors a user can cause (bad config, busy port, unknown role) end the process with one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from core.config import ConfigError
from courtcast.cli.agent import add_agent_commands
from courtcast.cli.cluster_demo import add_cluster_demo_command
from courtcast.cli.common import EXIT_USAGE, UsageError
from courtcast.cli.courts import add_courts_commands
from courtcast.cli.devices import add_devices_commands
from courtcast.cli.recordings import add_recordings_commands
from courtcast.cli.sessions import add_sessions_commands
from courtcast.cli.streams import add_streams_commands
from courtcast.cli.up import add_up_commands
from courtcast.cli.users import add_users_commands

# in the order `courtcast --help` lists them
NOUNS = (
    add_up_commands,
    add_users_commands,
    add_courts_commands,
    add_streams_commands,
    add_sessions_commands,
    add_recordings_commands,
    add_agent_commands,
    add_devices_commands,
    add_cluster_demo_command,
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # a line per HTTP request (the agent asks for backfill gaps every 10 s) is noise
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"courtcast: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="courtcast", description=__doc__)
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_commands in NOUNS:
        add_commands(sub)
    return parser
