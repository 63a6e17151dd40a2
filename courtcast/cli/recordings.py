"""`courtcast recordings list | verify | export | verify-export | signing-key`: the index,
and a recording's objects read straight from the object store (no running node needed).
verify-export needs nothing of the node: a clip, its .sig and the court's public key."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.config import Config
from courtcast.cli.common import UsageError, config_from, state_args, with_objects, with_state
from courtcast.cli.table import Column, print_listing, utc

if TYPE_CHECKING:
    from recorder.export import ExportResult
    from storage.objects import ObjectStore
    from storage.state import StateStore

COLUMNS = (
    Column("RECORDING", 44),
    Column("STATE", 9),
    Column("CASE", 20),
    Column("ROOM", 12),
    Column("START (UTC)", 20),
    Column("SECONDS", 8, right=True, spec=".1f"),
    Column("GAPS", 4, right=True),
)
SEARCH_FIELDS = ("court", "room", "case", "date", "stream", "session")


def add_recordings_commands(sub: Any) -> None:
    recordings = sub.add_parser("recordings", help="recordings").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    lst = recordings.add_parser("list", help="recordings, newest first (from the index)")
    state_args(lst)
    for field in SEARCH_FIELDS:
        lst.add_argument(f"--{field}", default="")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_recordings_list)
    verify = recordings.add_parser(
        "verify",
        help="recompute every hash, check the chain and the signature (exit 1 when not OK)",
    )
    state_args(verify)
    verify.add_argument("recording_id")
    verify.add_argument(
        "--public-key", type=Path, help="PEM public key (default: this node's signing key)"
    )
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func=cmd_recordings_verify)
    export = recordings.add_parser("export", help="remux a stretch into one MP4 (+ .sig)")
    state_args(export)
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
    check = recordings.add_parser(
        "verify-export",
        help="check an exported clip against its .sig and the court's public key "
        "(no data dir needed; exit 1 when not OK)",
    )
    check.add_argument("clip", type=Path)
    check.add_argument("--signature", type=Path, help="the sidecar (default: CLIP.sig)")
    check.add_argument(
        "--public-key", type=Path, help="PEM public key (default: this node's signing key)"
    )
    state_args(check)
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=cmd_recordings_verify_export)
    key = recordings.add_parser(
        "signing-key", help="the public key that verifies recordings and exports (PEM)"
    )
    state_args(key)
    key.add_argument("-o", "--output", type=Path, help="write it to this file (default: print)")
    key.set_defaults(func=cmd_recordings_signing_key)


def cmd_recordings_list(args: argparse.Namespace) -> int:
    from recorder.index import RecordingIndex

    async def work(state: StateStore) -> int:
        rows = await RecordingIndex(state).search(
            court=args.court,
            room=args.room,
            case_number=args.case,
            date=args.date,
            stream=args.stream,
            session=args.session,
        )
        print_listing(rows, args.json, COLUMNS, _cells)
        return 0

    return with_state(args, work)


def _cells(record: dict[str, Any]) -> tuple[Any, ...]:
    return (
        record["id"],
        record["state"],
        record["case_number"] or "-",
        record["room"] or "-",
        utc(float(record["opened_at"])),
        record["duration"],
        record["gaps"],
    )


def cmd_recordings_verify(args: argparse.Namespace) -> int:
    from recorder.index import RecordingIndex
    from recorder.verify import verify_recording
    from storage.role import open_state_for_cli

    async def work(config: Config, store: ObjectStore) -> int:
        public = _public_key(args, config)
        # the index's word on the state: a closed recording whose manifest was re-opened
        # (so unsigned) fails
        async with open_state_for_cli(config.storage_section()) as state:
            record = await RecordingIndex(state).get(args.recording_id)
        indexed = str(record.get("state", "")) if record else ""
        report = await verify_recording(store, args.recording_id, public, indexed)
        print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
        return 0 if report.ok else 1

    return with_objects(args, work)


def _public_key(args: argparse.Namespace, config: Config | None) -> Any:
    """--public-key, else (given a node's config) the node's own key."""
    from recorder.signing import KEY_FILE, SignatureError, Signer, load_public_pem

    where = "(GET /api/v1/recordings/signing-key, or `courtcast recordings signing-key`)"
    try:
        if args.public_key is not None:
            return load_public_pem(args.public_key.read_bytes())
        if config is None:
            raise UsageError(f"pass --public-key FILE: the court's public key {where}")
        path = config.recorder.signing_key_file or config.data_dir / "secrets" / KEY_FILE
        return Signer.from_file(path).public
    except FileNotFoundError as exc:
        raise UsageError(
            f"no public key at {exc.filename}: pass --public-key FILE {where}"
        ) from None
    except SignatureError as exc:
        raise UsageError(f"{exc}: pass --public-key FILE {where}") from None


def cmd_recordings_verify_export(args: argparse.Namespace) -> int:
    from recorder.export import verify_export
    from recorder.signing import SignatureError

    given_node = args.config is not None or args.data_dir is not None
    public = _public_key(args, config_from(args) if given_node else None)
    sig = args.signature or args.clip.with_name(args.clip.name + ".sig")
    try:
        sig_bytes = sig.read_bytes()
        statement = verify_export(public, args.clip, sig_bytes)
    except FileNotFoundError as exc:
        raise UsageError(f"no file {exc.filename}") from None
    except SignatureError as exc:
        print(json.dumps({"ok": False, "why": str(exc)}) if args.json else f"NOT OK: {exc}")
        return 1
    if args.json:
        print(json.dumps({"ok": True, "statement": statement}, indent=2, ensure_ascii=False))
    else:
        gaps = statement.get("gaps") or []
        print(
            f"OK: {args.clip} is recording {statement['recording_id']} "
            f"(case {statement.get('case_number') or '-'}) from {statement['from']} to "
            f"{statement['to']}, {len(statement.get('segments') or [])} segments, "
            f"{len(gaps)} gap(s) inside, signed by key {json.loads(sig_bytes)['key_id']}"
        )
    return 0


def cmd_recordings_signing_key(args: argparse.Namespace) -> int:
    from recorder.signing import SignatureError, Signer, public_pem

    config = config_from(args)
    try:
        pem = public_pem(Signer.for_recorder(config.recorder, config.data_dir).public)
    except SignatureError as exc:
        raise UsageError(str(exc)) from None
    if args.output is None:
        print(pem, end="")
    else:
        args.output.write_text(pem)
    return 0


def cmd_recordings_export(args: argparse.Namespace) -> int:
    from recorder.export import ExportError, export_clip
    from recorder.manifest import Manifest
    from recorder.manifest_store import EvidenceError, signed_bytes
    from recorder.playback import TimeError, parse_time
    from recorder.signing import SignatureError, Signer

    async def work(config: Config, store: ObjectStore) -> int:
        try:
            signer = Signer.for_recorder(config.recorder, config.data_dir)
            manifest = Manifest.from_bytes(
                await signed_bytes(store, args.recording_id, signer.public)
            )
        except LookupError:
            raise UsageError(f"no recording {args.recording_id}") from None
        except (SignatureError, EvidenceError) as exc:
            raise UsageError(f"recording {args.recording_id} is not exported: {exc}") from None
        try:
            start = parse_time(args.start, manifest.opened_at)
            end = parse_time(args.end, manifest.opened_at)
            result = await export_clip(
                store,
                manifest,
                start,
                end,
                args.output,
                signer,
                _progress_bar,
            )
        except (TimeError, ExportError) as exc:
            raise UsageError(str(exc)) from None
        print(file=sys.stderr)
        await _audit_export(args, result)
        print(
            f"exported {result.duration_s:.1f} s from {utc(result.start)} UTC to "
            f"{result.path} ({result.bytes} bytes); signature {result.signature_path}"
        )
        return 0

    return with_objects(args, work)


def _progress_bar(done: float) -> None:
    filled = int(done * 30)
    print(
        f"\rexporting [{'#' * filled}{'.' * (30 - filled)}] {done * 100:5.1f} %",
        end="",
        file=sys.stderr,
        flush=True,
    )


async def _audit_export(args: argparse.Namespace, result: ExportResult) -> None:
    from core.audit import audit
    from storage.role import open_state_for_cli

    async with open_state_for_cli(config_from(args).storage_section()) as state:
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
