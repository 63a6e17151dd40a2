"""The `courtcast` command (DESIGN.md §5).

Errors a user can cause (bad config, busy port, unknown role) end the process with one
line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import getpass
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from core import presence
from core.config import Config, ConfigError, load_config
from courtcast.cli_agent import add_agent_commands

EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake on the command line, phrased for the user."""


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

    up = sub.add_parser("up", help="run every role in one process")
    _state_args(up)
    up.add_argument("--http-port", type=int)
    up.add_argument("--rtmp-port", type=int)
    up.add_argument("--demo", action="store_true", help="add simulated courtrooms")
    up.add_argument(
        "--open", action="store_true", help="no publish/play checks (local trials, loopback only)"
    )
    up.add_argument("--record-all", action="store_true", help="record every live stream")
    up.set_defaults(func=cmd_up, roles=("storage", "media_server", "recorder", "control_room"))

    # the recorder records the hub of its own process (no relay between nodes yet), so it
    # runs with the media server; alone it serves, verifies and exports recordings
    for name, roles in (
        ("media-server", ("storage", "media_server", "recorder")),
        ("control-room", ("storage", "control_room")),
        ("recorder", ("storage", "recorder")),
    ):
        role = sub.add_parser(name, help=f"run the {name} role alone (cluster)")
        _state_args(role)
        role.add_argument("--http-port", type=int)
        role.add_argument("--rtmp-port", type=int)
        role.set_defaults(func=cmd_up, roles=roles, demo=False, open=False, record_all=False)

    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    add = users.add_parser("add", help="add a user (password from stdin when not a tty)")
    _state_args(add)
    add.add_argument("name")
    add.add_argument("--role", required=True)
    add.set_defaults(func=cmd_users_add)

    streams = sub.add_parser("streams", help="streams").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    lst = streams.add_parser("list", help="registered streams with their live stats")
    _state_args(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_streams_list)
    define = streams.add_parser("add", help="register a stream and print its publish key")
    _state_args(define)
    define.add_argument("stream_id")
    define.add_argument(
        "--class",
        dest="stream_class",
        default="trial",
        choices=["trial", "security", "arraignment", "conference"],
    )
    define.add_argument("--public", action="store_true")
    define.add_argument("--title", default="")
    define.add_argument("--source", default="", help="rtsp:// URL to pull (an IP camera)")
    define.add_argument("--court", default="")
    define.add_argument("--room", default="", help="the courtroom (sessions record its streams)")
    define.set_defaults(func=cmd_streams_add)

    _session_commands(sub)
    _recording_commands(sub)
    add_agent_commands(sub)
    _device_commands(sub)
    return parser


def _session_commands(sub: Any) -> None:
    sessions = sub.add_parser("sessions", help="trial sessions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    opening = sessions.add_parser(
        "open", help="open a session: every stream of the room is recorded until it closes"
    )
    _state_args(opening)
    opening.add_argument("--room", required=True)
    opening.add_argument("--case", required=True, help="case number")
    opening.add_argument("--title", default="")
    opening.add_argument("--public", action="store_true", help="a public trial")
    opening.set_defaults(func=cmd_sessions, verb="open")
    for verb, text in (
        ("close", "close a session (its recordings are closed and signed)"),
        ("recess", "recess: recording pauses, with the reason logged"),
        ("resume", "resume after a recess"),
    ):
        cmd = sessions.add_parser(verb, help=text)
        _state_args(cmd)
        cmd.add_argument("session_id")
        if verb == "recess":
            cmd.add_argument("--reason", required=True)
        cmd.set_defaults(func=cmd_sessions, verb=verb)
    lst = sessions.add_parser("list", help="sessions, newest first")
    _state_args(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_sessions, verb="list")


def _device_commands(sub: Any) -> None:
    devices = sub.add_parser("devices", help="device agents").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    token = devices.add_parser(
        "enrol-token",
        help="print a one-time enrolment token for a courtroom (creates the court and room if new)",
    )
    _state_args(token)
    token.add_argument("--court", required=True)
    token.add_argument("--room", required=True)
    token.add_argument(
        "--class",
        dest="stream_class",
        default="trial",
        choices=["trial", "security", "arraignment", "conference"],
    )
    token.add_argument("--ttl-s", type=int, default=86400, help="valid this long (seconds)")
    token.set_defaults(func=cmd_devices_enrol_token)
    lst = devices.add_parser("list", help="devices with their state and sources")
    _state_args(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_devices_list)


def _recording_commands(sub: Any) -> None:
    recordings = sub.add_parser("recordings", help="recordings").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    lst = recordings.add_parser("list", help="recordings, newest first (from the index)")
    _state_args(lst)
    for field in ("court", "room", "case", "date", "stream", "session"):
        lst.add_argument(f"--{field}", default="")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_recordings_list)
    verify = recordings.add_parser(
        "verify",
        help="recompute every hash, check the chain and the signature (exit 1 when not OK)",
    )
    _state_args(verify)
    verify.add_argument("recording_id")
    verify.add_argument(
        "--public-key", type=Path, help="PEM public key (default: this node's signing key)"
    )
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_recordings_verify)
    export = recordings.add_parser("export", help="remux a stretch into one MP4 (+ .sig)")
    _state_args(export)
    export.add_argument("recording_id")
    export.add_argument(
        "--from",
        dest="start",
        required=True,
        help="ISO 8601 time, UNIX seconds, or +SECONDS from the start",
    )
    export.add_argument("--to", dest="end", required=True)
    export.add_argument("-o", "--output", type=Path, required=True)
    export.set_defaults(func=cmd_recordings_export)


def _state_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML config file")
    parser.add_argument("--data-dir", type=Path, help="where state and objects live")


def config_from(args: argparse.Namespace) -> Config:
    overrides: dict[str, Any] = {}
    flags = {"data_dir": "node.data_dir", "http_port": "http.port", "rtmp_port": "rtmp.port"}
    for attr, key in flags.items():
        if getattr(args, attr, None) is not None:
            overrides[key] = getattr(args, attr)
    for attr, key in (
        ("demo", "demo.enabled"),
        ("open", "security.open"),
        ("record_all", "recorder.record_all"),
    ):
        if getattr(args, attr, False):
            overrides[key] = True
    return load_config(args.config, overrides)


# -- up ------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    config = config_from(args)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    return run_fast(_run_platform(config, tuple(args.roles)))


def run_fast(main: Coroutine[Any, Any, int]) -> int:
    """Run a server on uvloop: its loop, transports and socket reads are C, which the
    per-packet and per-request work of the media path pays for at every event."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


async def _run_platform(config: Config, roles: tuple[str, ...]) -> int:
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
            lines.append(f"  demo {title}: ffplay {base}/live/{stream_id}/index.m3u8")
    if any(r.name == "control_room" for r in platform.roles):
        lines.append(
            f"  technicians: {base}/devices  (sign in: courtcast users add NAME --role technician)"
        )
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
    from media_server.streams import StreamRegistry

    async def work(state: Any) -> int:
        live = await state.present(presence.STREAM_LIVE)
        rows = [
            {**d.public_view(), "stats": live.get(d.id)} for d in await StreamRegistry(state).list()
        ]
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(f"{'STREAM':24} {'CLASS':12} {'PUBLIC':6} {'LIVE':5} {'VIDEO':16} {'KBIT/S':>8}")
        for row in rows:
            stats = row["stats"] or {}
            video = stats.get("video") or {}
            size = f"{video.get('codec', '')} {video.get('width', '')}x{video.get('height', '')}"
            print(
                f"{row['id']:24} {row['stream_class']:12} {row['public']!s:6} "
                f"{'yes' if stats.get('live') else 'no':5} {size if video else '-':16} "
                f"{stats.get('bitrate_kbps', 0):>8}"
            )
        return 0

    return _with_state(args, work)


def cmd_streams_add(args: argparse.Namespace) -> int:
    from media_server.streams import StreamClass, StreamDefinition, StreamRegistry

    async def work(state: Any) -> int:
        definition = StreamDefinition(
            id=args.stream_id,
            stream_class=StreamClass(args.stream_class),
            public=args.public,
            title=args.title,
            source_url=args.source,
            court=args.court,
            room=args.room,
        )
        try:
            key = await StreamRegistry(state).define(definition)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        print(f"stream {args.stream_id} registered; publish key: {key}")
        return 0

    return _with_state(args, work)


def cmd_devices_enrol_token(args: argparse.Namespace) -> int:
    from control_room.devices import DeviceRegistry
    from core.audit import audit

    if args.ttl_s < 60:
        raise UsageError("--ttl-s: at least 60 seconds")

    async def work(state: Any) -> int:
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

    return _with_state(args, work)


def cmd_devices_list(args: argparse.Namespace) -> int:
    from control_room.devices import DeviceRegistry

    async def work(state: Any) -> int:
        rows = await DeviceRegistry(state).list()
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(
            f"{'COURT':16} {'ROOM':12} {'DEVICE':12} {'MODEL':20} {'STATE':10} "
            f"{'LAST SEEN (UTC)':19} SOURCES"
        )
        for r in rows:
            seen = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r["last_seen"]))
                if r["last_seen"]
                else "never"
            )
            sources = ", ".join(f"{s['name']}:{s['state']}" for s in r["sources"]) or "-"
            print(
                f"{r['court']:16} {r['room']:12} {r['id']:12} {r['model'] or '-':20} "
                f"{r['state']:10} {seen:19} {sources}"
            )
        return 0

    return _with_state(args, work)


# -- sessions and recordings ----------------------------------------------------------------


def cmd_sessions(args: argparse.Namespace) -> int:
    from recorder.sessions import SessionError, TrialSessions

    async def work(state: Any) -> int:
        sessions = TrialSessions(state)
        who = getpass.getuser()
        try:
            if args.verb == "list":
                return _print_sessions(await sessions.list(), args.json)
            if args.verb == "open":
                session = await sessions.open(args.room, args.case, args.title, args.public, who)
                print(
                    f"session {session.id} open in room {session.room} "
                    f"(case {session.case_number}); recording {', '.join(session.streams)}"
                )
            elif args.verb == "recess":
                await sessions.recess(args.session_id, args.reason, who)
                print(f"session {args.session_id} in recess: {args.reason}")
            elif args.verb == "resume":
                await sessions.resume(args.session_id, who)
                print(f"session {args.session_id} resumed")
            else:
                await sessions.close(args.session_id, who)
                print(f"session {args.session_id} closed; its recordings are being signed")
        except SessionError as exc:
            raise UsageError(str(exc)) from None
        return 0

    return _with_state(args, work)


def _print_sessions(sessions: list[Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps([s.to_record() for s in sessions], indent=2))
        return 0
    print(f"{'SESSION':20} {'STATE':7} {'ROOM':16} {'CASE':24} {'OPENED (UTC)':20}")
    for s in sessions:
        opened = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.opened_at))
        print(f"{s.id:20} {s.state:7} {s.room:16} {s.case_number:24} {opened:20}")
    return 0


def cmd_recordings_list(args: argparse.Namespace) -> int:
    from recorder.index import RecordingIndex

    async def work(state: Any) -> int:
        rows = await RecordingIndex(state).search(
            court=args.court,
            room=args.room,
            case_number=args.case,
            date=args.date,
            stream=args.stream,
            session=args.session,
        )
        if args.json:
            print(json.dumps(rows, indent=2))
            return 0
        print(
            f"{'RECORDING':44} {'STATE':9} {'CASE':20} {'ROOM':12} {'START (UTC)':20} "
            f"{'SECONDS':>8} {'GAPS':>4}"
        )
        for r in rows:
            opened = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(r["opened_at"])))
            print(
                f"{r['id']:44} {r['state']:9} {r['case_number'] or '-':20} "
                f"{r['room'] or '-':12} {opened:20} {r['duration']:>8.1f} {r['gaps']:>4}"
            )
        return 0

    return _with_state(args, work)


def _public_key(args: argparse.Namespace, config: Config) -> Any:
    from recorder.signing import KEY_FILE, SignatureError, Signer, load_public_pem

    try:
        if args.public_key is not None:
            return load_public_pem(args.public_key.read_bytes())
        path = config.data_dir / "secrets" / KEY_FILE
        return Signer.from_pem(path.read_bytes()).public
    except FileNotFoundError as exc:
        raise UsageError(
            f"no public key at {exc.filename}: pass --public-key FILE "
            "(GET /api/v1/recordings/signing-key)"
        ) from None
    except SignatureError as exc:
        raise UsageError(str(exc)) from None


def _with_objects(args: argparse.Namespace, work: Callable[[Config, Any], Awaitable[int]]) -> int:
    config = config_from(args)

    async def run() -> int:
        from storage.role import build_object_store

        store = build_object_store(config)
        try:
            return await work(config, store)
        finally:
            await store.close()

    return asyncio.run(run())


def cmd_recordings_verify(args: argparse.Namespace) -> int:
    from recorder.verify import verify_recording

    async def work(config: Config, store: Any) -> int:
        report = await verify_recording(store, args.recording_id, _public_key(args, config))
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
        return 0 if report.ok else 1

    return _with_objects(args, work)


def cmd_recordings_export(args: argparse.Namespace) -> int:
    from recorder.export import ExportError, export_clip
    from recorder.manifest import Manifest, object_prefix
    from recorder.playback import TimeError, parse_time
    from recorder.signing import Signer
    from storage.objects import ObjectNotFound

    async def work(config: Config, store: Any) -> int:
        try:
            raw = await store.get(f"{object_prefix(args.recording_id)}manifest.json")
        except ObjectNotFound:
            raise UsageError(f"no recording {args.recording_id}") from None
        manifest = Manifest.from_bytes(raw)
        try:
            start = parse_time(args.start, manifest.opened_at)
            end = parse_time(args.end, manifest.opened_at)
            result = await export_clip(
                store,
                manifest,
                start,
                end,
                args.output,
                Signer.for_data_dir(config.data_dir),
                _progress_bar,
            )
        except (TimeError, ExportError) as exc:
            raise UsageError(str(exc)) from None
        print(file=sys.stderr)
        await _audit_export(args, result)
        print(
            f"exported {result.duration_s:.1f} s from "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(result.start))} UTC to "
            f"{result.path} ({result.bytes} bytes); signature {result.signature_path}"
        )
        return 0

    return _with_objects(args, work)


def _progress_bar(done: float) -> None:
    filled = int(done * 30)
    print(
        f"\rexporting [{'#' * filled}{'.' * (30 - filled)}] {done * 100:5.1f} %",
        end="",
        file=sys.stderr,
        flush=True,
    )


async def _audit_export(args: argparse.Namespace, result: Any) -> None:
    from core.audit import audit
    from storage.role import open_state_for_cli

    async with open_state_for_cli(config_from(args)) as state:
        await audit(
            state,
            "export",
            getpass.getuser(),
            recording=args.recording_id,
            start=result.start,
            end=result.end,
            sha256=result.sha256,
            via="cli",
            output=str(result.path),
        )


if __name__ == "__main__":
    sys.exit(main())
