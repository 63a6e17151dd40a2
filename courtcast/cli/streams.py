"""`courtcast streams list | add | rotate-key`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from core import presence
from courtcast.cli.common import UsageError, config_from, state_args, with_state
from courtcast.cli.table import Column, print_listing

if TYPE_CHECKING:
    from storage.state import StateStore

STREAM_CLASSES = ["trial", "security", "arraignment", "conference"]
COLUMNS = (
    Column("STREAM", 24),
    Column("CLASS", 12),
    Column("PUBLIC", 6),
    Column("LIVE", 5),
    Column("VIDEO", 16),
    Column("KBIT/S", 8, right=True),
)


def add_streams_commands(sub: Any) -> None:
    streams = sub.add_parser("streams", help="streams").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    lst = streams.add_parser("list", help="registered streams with their live stats")
    state_args(lst)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_streams_list)
    define = streams.add_parser("add", help="register a stream and print its publish key")
    state_args(define)
    define.add_argument("stream_id")
    define.add_argument("--class", dest="stream_class", default="trial", choices=STREAM_CLASSES)
    define.add_argument("--public", action="store_true")
    define.add_argument("--title", default="")
    define.add_argument("--source", default="", help="rtsp:// URL to pull (an IP camera)")
    define.add_argument("--court", default="")
    define.add_argument("--room", default="", help="the courtroom (sessions record its streams)")
    define.set_defaults(func=cmd_streams_add)
    rotate = streams.add_parser(
        "rotate-key", help="give a stream a new publish key (the old one stops working)"
    )
    state_args(rotate)
    rotate.add_argument("stream_id")
    rotate.set_defaults(func=cmd_streams_rotate_key)


def cmd_streams_list(args: argparse.Namespace) -> int:
    from media_server.streams import StreamRegistry

    async def work(state: StateStore) -> int:
        live = await state.present(presence.STREAM_LIVE)
        rows = [
            {**d.public_view(), "stats": live.get(d.id)} for d in await StreamRegistry(state).list()
        ]
        print_listing(rows, args.json, COLUMNS, _cells)
        return 0

    return with_state(args, work)


def _cells(row: dict[str, Any]) -> tuple[Any, ...]:
    stats = row["stats"] or {}
    video = stats.get("video") or {}
    size = f"{video.get('codec', '')} {video.get('width', '')}x{video.get('height', '')}"
    return (
        row["id"],
        row["stream_class"],
        str(row["public"]),
        "yes" if stats.get("live") else "no",
        size if video else "-",
        stats.get("bitrate_kbps", 0),
    )


def cmd_streams_add(args: argparse.Namespace) -> int:
    from core.audit import audit
    from media_server.streams import (
        StreamClass,
        StreamDefinition,
        StreamExists,
        StreamRegistry,
        check_source_url,
    )

    config = config_from(args)
    try:
        check_source_url(args.source, config.security.open or config.demo.enabled)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    async def work(state: StateStore) -> int:
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
            key = await StreamRegistry(state).create(definition)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        except StreamExists:
            raise UsageError(
                f"stream {args.stream_id} already exists; its key is unchanged "
                f"(a new one: courtcast streams rotate-key {args.stream_id})"
            ) from None
        await audit(
            state, "stream.create", "cli", stream=args.stream_id, after=definition.public_view()
        )
        print(f"stream {args.stream_id} registered; publish key: {key}")
        return 0

    return with_state(args, work)


def cmd_streams_rotate_key(args: argparse.Namespace) -> int:
    from core.audit import audit
    from media_server.streams import StreamRegistry

    async def work(state: StateStore) -> int:
        key = await StreamRegistry(state).rotate_key(args.stream_id)
        if key is None:
            raise UsageError(f"no stream {args.stream_id} (courtcast streams list)")
        await audit(state, "stream.rotate-key", "cli", stream=args.stream_id)
        print(f"stream {args.stream_id}: new publish key: {key}")
        return 0

    return with_state(args, work)
