"""`courtcast up` and the single-role commands: run the platform until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from core.config import Config, ConfigError, check_secrets
from courtcast.cli.common import config_from, state_args

if TYPE_CHECKING:
    from control_room.first_run import FirstRun

# Alone, a media server records its own hub. In a cluster, `courtcast recorder` processes
# record (each pulls the streams it records through the on-demand relay and claims the
# recordings with leases, recorder/fleet.py) and a media server's recorder serves,
# verifies and exports recordings only.
SINGLE_ROLES = (
    ("media-server", ("storage", "media_server", "recorder")),
    ("control-room", ("storage", "control_room")),
    ("recorder", ("storage", "recorder")),
)


def add_up_commands(sub: Any) -> None:
    up = sub.add_parser("up", help="run every role in one process")
    state_args(up)
    up.add_argument("--http-port", type=int)
    up.add_argument("--rtmp-port", type=int)
    up.add_argument("--demo", action="store_true", help="add simulated courtrooms")
    up.add_argument(
        "--open", action="store_true", help="no publish/play checks (local trials, loopback only)"
    )
    up.add_argument("--record-all", action="store_true", help="record every live stream")
    up.set_defaults(func=cmd_up, roles=("storage", "media_server", "recorder", "control_room"))
    for name, roles in SINGLE_ROLES:
        role = sub.add_parser(name, help=f"run the {name} role alone (cluster)")
        state_args(role)
        role.add_argument("--http-port", type=int)
        role.add_argument("--rtmp-port", type=int)
        role.set_defaults(func=cmd_up, roles=roles, demo=False, open=False, record_all=False)


def cmd_up(args: argparse.Namespace) -> int:
    config = config_from(args)
    check_secrets(config)  # before anything connects or listens
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return run_fast(_run_platform(config, tuple(args.roles)))


def run_fast(main: Coroutine[Any, Any, int]) -> int:
    """Run a server on uvloop: its loop, transports and socket reads are C, which the
    per-packet and per-request work of the media path pays for at every event."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _run_platform(config: Config, roles: tuple[str, ...]) -> int:
    from courtcast import heap_snapshots
    from courtcast.platform import Platform
    from media_server import native

    for problem in native.problems():  # runs correctly, but not the code or speed expected
        logging.getLogger("courtcast").warning("%s", problem)
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
    heap_snapshots.install(config.data_dir)
    # the start-up heap (modules, the app and its routes, pydantic models) lives as long as
    # the process: keep it out of the collections the media path's garbage triggers
    gc.freeze()
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
            # the live stream is never public (a trial is broadcast only through a public
            # session's delayed rendition): the console gets a short-lived play token
            token = "" if config.security.open else f"?token={media.tokens.make(stream_id)}"
            lines.append(f"  demo {title}: ffplay {base}/live/{stream_id}/index.m3u8{token}")
    control = next((r for r in platform.roles if r.name == "control_room"), None)
    if control is not None:
        lines += pages_and_sign_in(base, control.first_run)
    lines.append("  stop with Ctrl-C")
    print("\n".join(lines), flush=True)


def pages_and_sign_in(base: str, first: FirstRun) -> list[str]:
    """The staff pages and how to sign in: the demo operator's one-time password on a
    demo run, the command for a first admin when there are no users."""
    from control_room.first_run import DEMO_ROLE, FIRST_ADMIN_HINT

    lines = [
        f"  console:  {base}/control",
        f"  wall:     {base}/wall/main",
        f"  portal:   {base}/  (trials live, upcoming and replays; no sign-in)",
        f"  devices:  {base}/devices",
    ]
    if first.demo_user:
        lines.append(
            f"  sign in as {first.demo_user} with password {first.demo_password} "
            f"({DEMO_ROLE}, whole province; a new password each demo run)"
        )
    elif first.no_users:
        lines.append(f"  no users yet: add the first admin with `{FIRST_ADMIN_HINT}`")
    return lines
