"""The `courtcast` command (DESIGN.md §5).

Errors a user can cause (bad config, busy port, unknown role) end the process with one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from courtcast.config import Config, ConfigError, load_config

EXIT_USAGE = 2
NOT_BUILT = {
    "recorder": "the recorder role is not built yet (issue: full-process trial recording)",
    "devices": "device enrolment is not built yet (issue: device agents)",
    "agent": "the device agent is not built yet (issue: device agents)",
    "sessions": "trial sessions are not built yet (issue: full-process trial recording)",
    "recordings": "recordings are not built yet (issue: full-process trial recording)",
}


class UsageError(Exception):
    """A mistake on the command line, phrased for the user."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ConfigError, UsageError) as exc:
        print(f"courtcast: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="courtcast", description=__doc__)
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run every role in one process")
    _state_args(up)
    up.add_argument("--http-port", type=int)
    up.add_argument("--rtmp-port", type=int)
    up.add_argument("--demo", action="store_true", help="add simulated courtrooms")
    up.add_argument("--open", action="store_true",
                    help="no publish/play checks (local trials, loopback only)")
    up.add_argument("--record-all", action="store_true", help="record every live stream")
    up.set_defaults(func=cmd_up, roles=("storage", "media_server", "control_room"))

    for name, roles in (("media-server", ("storage", "media_server")),
                        ("control-room", ("storage", "control_room"))):
        role = sub.add_parser(name, help=f"run the {name} role alone (cluster)")
        _state_args(role)
        role.add_argument("--http-port", type=int)
        role.add_argument("--rtmp-port", type=int)
        role.set_defaults(func=cmd_up, roles=roles, demo=False, open=False, record_all=False)

    rec = sub.add_parser("recorder", help="run the recorder role alone (cluster)")
    _state_args(rec)
    rec.set_defaults(func=not_built("recorder"))

    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    add = users.add_parser("add", help="add a user (password from stdin when not a tty)")
    _state_args(add)
    add.add_argument("name")
    add.add_argument("--role", required=True)
    add.set_defaults(func=cmd_users_add)

    streams = sub.add_parser("streams", help="streams").add_subparsers(
        dest="action", required=True, metavar="ACTION")
    lst = streams.add_parser("list", help="registered streams with their live stats")
    _state_args(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_streams_list)
    define = streams.add_parser("add", help="register a stream and print its publish key")
    _state_args(define)
    define.add_argument("stream_id")
    define.add_argument("--class", dest="stream_class", default="trial",
                        choices=["trial", "security", "arraignment", "conference"])
    define.add_argument("--public", action="store_true")
    define.add_argument("--title", default="")
    define.add_argument("--source", default="", help="rtsp:// URL to pull (an IP camera)")
    define.set_defaults(func=cmd_streams_add)

    for name in ("devices", "agent", "sessions", "recordings"):
        stub = sub.add_parser(name, help=f"{name} (not built yet)")
        stub.add_argument("rest", nargs=argparse.REMAINDER)
        stub.set_defaults(func=not_built(name))
    return parser


def _state_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file")
    parser.add_argument("--data-dir", type=Path, help="where state and objects live")


def config_from(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    flags = {"data_dir": "node.data_dir", "http_port": "http.port", "rtmp_port": "rtmp.port"}
    for attr, key in flags.items():
        if getattr(args, attr, None) is not None:
            overrides[key] = getattr(args, attr)
    for attr, key in (("demo", "demo.enabled"), ("open", "security.open"),
                      ("record_all", "recorder.record_all")):
        if getattr(args, attr, False):
            overrides[key] = True
    return load_config(args.config, overrides)


def not_built(name: str) -> Callable[[argparse.Namespace], int]:
    def refuse(_: argparse.Namespace) -> int:
        raise UsageError(NOT_BUILT[name])
    return refuse


# -- up ------------------------------------------------------------------------------------

def cmd_up(args: argparse.Namespace) -> int:
    config = config_from(args)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_run_platform(config, tuple(args.roles)))


async def _run_platform(config: Config, roles: tuple[str, ...]) -> int:
    from courtcast.platform import Platform

    platform = Platform(config, roles)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await platform.start()
    except Exception as exc:
        await platform.stop()
        if isinstance(exc, ConfigError) or is_environment_error(exc):
            raise ConfigError(str(exc)) from None
        raise
    print_welcome(platform)
    await stop.wait()
    logging.getLogger("courtcast").info("stopping")
    await platform.stop()
    return 0


def is_environment_error(exc: Exception) -> bool:
    """Start-up failures a user fixes in the config or the machine, not bugs."""
    from storage.objects import StorageUnavailable
    from storage.redis_server import EmbeddedRedisError
    from storage.state import StateStoreUnavailable

    return isinstance(exc, (EmbeddedRedisError, StateStoreUnavailable, StorageUnavailable))


def print_welcome(platform: Any) -> None:
    config: Config = platform.config
    base = f"http://{config.http.host}:{platform.http_port}"
    lines = [f"courtcast is up: {base}/api/v1/health  (API docs: {base}/docs)"]
    media = next((r for r in platform.roles if r.name == "media_server"), None)
    if media is not None:
        lines.append(f"  publish: rtmp://{config.rtmp.host}:{media.rtmp_port}/live/STREAM?key=KEY")
        for stream_id, title in media.demo_streams():
            lines.append(f"  demo {title}: ffplay {base}/live/{stream_id}/index.m3u8")
    lines.append("  stop with Ctrl-C")
    print("\n".join(lines), flush=True)


# -- state commands -----------------------------------------------------------------------

def _with_state(args: argparse.Namespace, work: Callable[[Any], Awaitable[int]]) -> int:
    config = config_from(args)

    async def run() -> int:
        from storage.role import open_state_for_cli

        async with open_state_for_cli(config) as state:
            return await work(state)

    return asyncio.run(run())


def cmd_users_add(args: argparse.Namespace) -> int:
    from control_room.users import UserError, Users

    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name}: ")
    else:
        password = sys.stdin.readline().rstrip("\n")

    async def work(state: Any) -> int:
        try:
            await Users(state).add(args.name, args.role, password)
        except UserError as exc:
            raise UsageError(str(exc)) from None
        print(f"user {args.name} added with role {args.role}")
        return 0

    return _with_state(args, work)


def cmd_streams_list(args: argparse.Namespace) -> int:
    from control_room.api import LIVE_KIND
    from media_server.streams import StreamRegistry

    async def work(state: Any) -> int:
        live = await state.present(LIVE_KIND)
        rows = [{**d.public_view(), "stats": live.get(d.id)}
                for d in await StreamRegistry(state).list()]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'STREAM':24} {'CLASS':12} {'PUBLIC':6} {'LIVE':5} {'VIDEO':16} {'KBIT/S':>8}")
        for row in rows:
            stats = row["stats"] or {}
            video = stats.get("video") or {}
            size = f"{video.get('codec', '')} {video.get('width', '')}x{video.get('height', '')}"
            print(f"{row['id']:24} {row['stream_class']:12} {str(row['public']):6} "
                  f"{'yes' if stats.get('live') else 'no':5} {size if video else '-':16} "
                  f"{stats.get('bitrate_kbps', 0):>8}")
        return 0

    return _with_state(args, work)


def cmd_streams_add(args: argparse.Namespace) -> int:
    from media_server.streams import StreamClass, StreamDefinition, StreamRegistry

    async def work(state: Any) -> int:
        definition = StreamDefinition(id=args.stream_id, stream_class=StreamClass(args.stream_class),
                                      public=args.public, title=args.title,
                                      source_url=args.source)
        try:
            key = await StreamRegistry(state).define(definition)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"stream {args.stream_id} registered; publish key: {key}")
        return 0

    return _with_state(args, work)


if __name__ == "__main__":
    sys.exit(main())
