"""HTTP API of the recorder: recordings (list, manifest, verify, HLS playback, export),
trial sessions (open or schedule, recess, resume, close; cut and resume their broadcast)
and the public list of broadcast sessions.

Who may do what (core.rights): manage_sessions opens and closes sessions and exports;
read_recordings lists, plays and verifies recordings; cut_broadcasts cuts a public
broadcast to its slate and resumes it; anyone may list public sessions and fetch the
signing key. The public replays a public trial only through /public/{id}/replay/
(recorder/replay_http.py), which leaves out what the broadcast cut: the recording itself,
cuts included, is evidence and plays for signed-in roles only. `security.open` (local
trials) allows all. A scoped user sees the recordings and sessions of its court's subtree
only (core.scope); others answer as unknown ones. Exports, session changes and playback of
a recording are audited, with who and from where.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations.
import base64
import math
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from starlette.background import BackgroundTask

from core.audit import FirstSeen, audit
from core.courts import CourtTree
from core.identity import caller_guards, peer_of, public, session_resolver
from core.rights import Caller, may
from core.scope import sees
from media_server.streams import StreamRegistry
from recorder.broadcast import broadcast_stream, public_playlist
from recorder.export import ExportError, export_clip
from recorder.manifest import Manifest
from recorder.manifest_store import EvidenceError, read_manifest, signed_bytes
from recorder.playback import TimeError, parse_time
from recorder.playback import playlist as make_playlist
from recorder.replay import expired, hidden_windows, replay_url
from recorder.sessions import (
    ACTIVE,
    DEFAULT_DELAY_S,
    SessionError,
    TrialSession,
    no_streams,
    room_streams,
)
from recorder.signing import public_pem
from recorder.timeline import timeline
from recorder.verify import verify_recording
from storage.objects import ObjectNotFound
from storage.recording_keys import is_media_name, object_key, recording_prefix

if TYPE_CHECKING:
    from recorder.role import RecorderRole


class SessionIn(BaseModel):
    room: str
    case_number: str
    title: str = ""
    parties: str = ""  # who is before the court, free text
    public: bool = False  # approved for broadcast
    delay: float = DEFAULT_DELAY_S  # seconds the public broadcast runs behind live
    at: datetime | None = None  # scheduled start (ISO 8601 with a time zone)
    mask: Literal["", "faces"] = ""  # "faces": faces blurred in the public broadcast


FINISHED_LISTED = 100  # the newest finished public sessions the public list shows


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class RecessIn(BaseModel):
    reason: str


def make_recorder_router(role: "RecorderRole") -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    state, objects = role.storage.state, role.storage.objects
    open_mode = role.config.security.open

    current_caller, require = caller_guards(session_resolver(state), open_mode)

    courts = CourtTree(state)
    playbacks = FirstSeen()

    def allowed(caller: Caller | None, right: str) -> bool:
        return open_mode or may(caller, right)

    async def scoped(caller: Caller | None, court: Any) -> bool:
        return open_mode or await sees(caller, str(court or ""), courts)

    async def readable(rid: str, caller: Caller | None) -> dict[str, Any]:
        """The index record, if this caller may play it: signed in, with the right, and
        the recording's court in its scope (else 404, as unknown)."""
        record = await role.index.get(rid)
        if record is None:
            raise HTTPException(404, f"no recording {rid}")
        if caller is not None and not await scoped(caller, record.get("court")):
            raise HTTPException(404, f"no recording {rid}")  # as unknown: whatever the role
        if not allowed(caller, "read_recordings"):  # the public replays /public/{id}/replay/
            raise HTTPException(
                401 if caller is None else 403, "recordings are evidence: sign in first"
            )
        return record

    async def manifest_of(rid: str) -> Manifest:
        try:
            return await read_manifest(objects, rid)
        except ObjectNotFound:
            raise HTTPException(404, f"recording {rid} has no manifest yet") from None

    Anyone = Annotated[Caller | None, Depends(current_caller)]

    # -- recordings ---------------------------------------------------------------------

    @router.get(
        "/recordings/signing-key",
        tags=["recordings"],
        dependencies=[public("the public key, for anyone who checks a recording")],
    )
    async def signing_key() -> PlainTextResponse:
        return PlainTextResponse(
            public_pem(role.signer.public), headers={"X-Key-Id": role.signer.key_id}
        )

    @router.get("/recordings", tags=["recordings"])
    async def list_recordings(
        caller: Anyone,
        court: str = "",
        room: str = "",
        case_number: str = "",
        date: str = "",
        stream: str = "",
        session: str = "",
    ) -> dict[str, Any]:
        try:
            found = await role.index.search(
                court=court,
                room=room,
                case_number=case_number,
                date=date,
                stream=stream,
                session=session,
            )
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        if not allowed(caller, "read_recordings"):
            raise HTTPException(401 if caller is None else 403, "sign in to list recordings")
        found = [r for r in found if await scoped(caller, r.get("court"))]
        return {"recordings": found}

    @router.get("/recordings/{rid}", tags=["recordings"])
    async def get_recording(rid: str, caller: Anyone) -> dict[str, Any]:
        record = await readable(rid, caller)
        return {**record, "manifest": (await manifest_of(rid)).to_dict()}

    @router.get("/recordings/{rid}/timeline", tags=["recordings"])
    async def get_timeline(rid: str, caller: Anyone) -> dict[str, Any]:
        """Recorded stretches and gaps (with causes) on the wall clock, for a timeline."""
        await readable(rid, caller)
        return timeline(await manifest_of(rid))

    @router.get("/recordings/{rid}/verify", tags=["recordings"])
    async def verify(
        rid: str, caller: Annotated[Caller | None, require("read_recordings")]
    ) -> dict[str, Any]:
        # a recording whose manifest is gone is a failed verification (evidence removed);
        # an id nobody ever recorded is just not found
        record = await role.index.get(rid)
        if record is None and not await objects.list(recording_prefix(rid)):
            raise HTTPException(404, f"no recording {rid}")
        if not await scoped(caller, record.get("court") if record else ""):
            raise HTTPException(404, f"no recording {rid}")
        indexed = str(record.get("state", "")) if record else ""
        return (await verify_recording(objects, rid, role.signer.public, indexed)).to_dict()

    @router.get("/recordings/{rid}/index.m3u8", tags=["recordings"])
    async def playlist(
        rid: str,
        request: Request,
        caller: Anyone,
        start: Annotated[str | None, Query(alias="from")] = None,
        end: Annotated[str | None, Query(alias="to")] = None,
        snapshot: bool = False,
    ) -> Response:
        record = await readable(rid, caller)
        manifest = await manifest_of(rid)
        try:
            lo = parse_time(start, manifest.opened_at) if start else None
            hi = parse_time(end, manifest.opened_at) if end else None
        except TimeError as exc:
            raise HTTPException(400, str(exc)) from None
        token = request.query_params.get("token")
        query = urlencode({"token": token}) if token else ""  # echoed: encoded, never raw
        text = make_playlist(manifest, lo, hi, query, snapshot)
        if not record.get("public"):
            await audit_playback(request, rid, record, caller)
        return Response(
            text, media_type="application/vnd.apple.mpegurl", headers={"Cache-Control": "no-cache"}
        )

    async def audit_playback(
        request: Request, rid: str, record: dict[str, Any], caller: Caller | None
    ) -> None:
        """A viewer's first playlist request (an open recording's playlist is reloaded)."""
        who = caller.name if caller else "open-mode"
        if playbacks.first(rid, who, peer_of(request)):
            await audit(
                state,
                "recording.play",
                who,
                recording=rid,
                stream=record.get("stream", ""),
                court=record.get("court", ""),
                peer=peer_of(request),
            )

    @router.get("/recordings/{rid}/export.mp4", tags=["recordings"])
    async def export(
        rid: str,
        request: Request,
        caller: Annotated[Caller | None, require("manage_sessions")],
        start: Annotated[str, Query(alias="from")],
        end: Annotated[str, Query(alias="to")],
    ) -> FileResponse:
        record = await role.index.get(rid)
        if record is not None and not await scoped(caller, record.get("court")):
            raise HTTPException(404, f"recording {rid} has no manifest yet")
        if record is None and not await scoped(caller, ""):
            raise HTTPException(404, f"recording {rid} has no manifest yet")
        try:  # a clip is signed only from a manifest that still matches its signature
            manifest = Manifest.from_bytes(await signed_bytes(objects, rid, role.signer.public))
        except LookupError:
            raise HTTPException(404, f"recording {rid} has no manifest yet") from None
        except EvidenceError as exc:
            raise HTTPException(409, f"recording {rid} is not exported: {exc}") from None
        tmp = tempfile.TemporaryDirectory(prefix="courtcast-export-")
        out = Path(tmp.name) / f"{rid}.mp4"
        try:
            result = await export_clip(
                objects,
                manifest,
                parse_time(start, manifest.opened_at),
                parse_time(end, manifest.opened_at),
                out,
                role.signer,
            )
        except (TimeError, ExportError) as exc:
            tmp.cleanup()
            raise HTTPException(400, str(exc)) from None
        await audit(
            state,
            "export",
            caller.name if caller else "open-mode",
            recording=rid,
            start=result.start,
            end=result.end,
            sha256=result.sha256,
            via="http",
            court=(record or {}).get("court", ""),
            peer=peer_of(request),
        )
        signature = base64.b64encode(result.signature_path.read_bytes()).decode()
        return FileResponse(
            out,
            media_type="video/mp4",
            filename=out.name,
            headers={"X-Courtcast-Signature": signature},
            background=BackgroundTask(tmp.cleanup),
        )

    @router.get("/recordings/{rid}/{name}", tags=["recordings"])
    async def media(rid: str, name: str, caller: Anyone) -> Response:
        if not is_media_name(name):
            raise HTTPException(404, f"no object {name} in a recording")
        await readable(rid, caller)
        try:
            data = await objects.get(object_key(rid, name))
        except ObjectNotFound:
            raise HTTPException(404, f"recording {rid} has no {name}") from None
        return Response(
            data, media_type="video/mp4", headers={"Cache-Control": "max-age=86400, immutable"}
        )

    # -- trial sessions -----------------------------------------------------------------

    def view(session: TrialSession) -> dict[str, Any]:
        return session.to_record()

    async def acting(work: Any) -> dict[str, Any]:
        try:
            return view(await work)
        except SessionError as exc:
            raise HTTPException(
                409
                if "already" in str(exc) or "cannot" in str(exc)
                else 404
                if str(exc).startswith("no session")
                else 400,
                str(exc),
            ) from None

    def who(caller: Caller | None) -> str:
        return caller.name if caller else "open-mode"

    async def session_in_scope(sid: str, caller: Caller | None) -> TrialSession:
        """The session if its court is in the caller's scope; else 404, as unknown."""
        try:
            session = await role.sessions.get(sid)
        except SessionError as exc:
            raise HTTPException(404, str(exc)) from None
        if not await scoped(caller, session.court):
            raise HTTPException(404, f"no session {sid}")
        return session

    async def audited(request: Request, caller: Caller | None, work: Any) -> dict[str, Any]:
        """A session change, done and put in the audit trail (who, from where)."""
        body = await acting(work)
        event = body["events"][-1]["event"] if body.get("events") else "change"
        await audit(
            state,
            f"session.{event}",
            caller.name if caller else "open-mode",
            session=body["id"],
            case_number=body.get("case_number", ""),
            room=body.get("room", ""),
            court=body.get("court", ""),
            peer=peer_of(request),
        )
        return body

    @router.post("/sessions", tags=["sessions"], status_code=201)
    async def open_session(
        body: SessionIn,
        request: Request,
        caller: Annotated[Caller | None, require("manage_sessions")],
    ) -> dict[str, Any]:
        if body.at is not None and body.at.tzinfo is None:
            raise HTTPException(400, "at: give the time zone (e.g. 2026-12-07T09:00+08:00)")
        try:
            at = body.at.timestamp() if body.at is not None else None
        except (OverflowError, OSError, ValueError):
            raise HTTPException(400, "at: not a time this server can schedule") from None
        # a room with a camera of a court out of scope answers as a room with none
        streams = room_streams(await StreamRegistry(state).list(), body.room)
        if not all([await scoped(caller, d.court) for d in streams]):
            raise HTTPException(400, str(no_streams(body.room)))
        opened = await audited(
            request,
            caller,
            role.sessions.open(
                body.room,
                body.case_number,
                body.title,
                body.public,
                who(caller),
                body.delay,
                at,
                body.mask,
                body.parties,
            ),
        )
        await role.sync_broadcasts()
        return opened

    @router.get("/sessions", tags=["sessions"])
    async def list_sessions(
        caller: Annotated[Caller | None, require("read_recordings")],
        state_: Annotated[str | None, Query(alias="state")] = None,
    ) -> dict[str, Any]:
        found = await role.sessions.list(state_)
        return {"sessions": [view(s) for s in found if await scoped(caller, s.court)]}

    @router.get("/sessions/rooms", tags=["sessions"])
    async def session_rooms(
        caller: Annotated[Caller | None, require("manage_sessions")],
    ) -> dict[str, Any]:
        """The courtrooms this caller may open a session in: each with cameras, all of
        them in the caller's scope (as POST /sessions checks), and its active session."""
        by_room: dict[str, list[Any]] = {}
        for d in await StreamRegistry(state).list():
            if d.room and d.enabled:
                by_room.setdefault(d.room, []).append(d)
        busy = {s.room: s.id for s in await role.sessions.active()}
        rooms = [
            {
                "room": room,
                "court": next((d.court for d in found if d.court), ""),
                "streams": sorted(d.id for d in found),
                "session": busy.get(room),
            }
            for room, found in sorted(by_room.items())
            if all([await scoped(caller, d.court) for d in found])
        ]
        return {"rooms": rooms}

    @router.get("/sessions/{sid}", tags=["sessions"])
    async def get_session(
        sid: str, caller: Annotated[Caller | None, require("read_recordings")]
    ) -> dict[str, Any]:
        body = view(await session_in_scope(sid, caller))
        recordings = await role.index.search(session=sid)
        body["recordings"] = recordings
        # every camera of the courtroom on one clock: each playlist carries program
        # date-times, so players aligned on them (or seeking with ?from=) show one moment
        body["playback"] = [
            {
                "stream": r["stream"],
                "recording": r["id"],
                "playlist": f"/api/v1/recordings/{r['id']}/index.m3u8",
                "opened_at": r["opened_at"],
                "closed_at": r["closed_at"],
            }
            for r in sorted(recordings, key=lambda r: r["stream"])
        ]
        return body

    @router.post("/sessions/{sid}/recess", tags=["sessions"])
    async def recess(
        sid: str,
        body: RecessIn,
        request: Request,
        caller: Annotated[Caller | None, require("manage_sessions")],
    ) -> dict[str, Any]:
        await session_in_scope(sid, caller)
        changed = await audited(
            request, caller, role.sessions.recess(sid, body.reason, who(caller))
        )
        await role.sync_broadcasts()
        return changed

    @router.post("/sessions/{sid}/cut", tags=["sessions"])
    async def cut(
        sid: str, caller: Annotated[Caller | None, require("cut_broadcasts")]
    ) -> dict[str, Any]:
        """The public broadcast shows the slate within a segment; nothing captured in
        the delay window or until /resume reaches the public. Audited."""
        session = await session_in_scope(sid, caller)
        try:
            role.sessions.check_cut(session, True)
        except SessionError as exc:
            raise HTTPException(409, str(exc)) from None
        if role.broadcasts is not None:
            role.broadcasts.cut_now(sid)  # first: the stored time is after the cut
        return await acting(role.sessions.cut(sid, who(caller)))

    @router.post("/sessions/{sid}/resume", tags=["sessions"])
    async def resume(
        sid: str, request: Request, caller: Annotated[Caller | None, Depends(current_caller)]
    ) -> dict[str, Any]:
        """Resume what is paused: a cut broadcast (cut_broadcasts; still delayed) and a
        recess (manage_sessions)."""
        if caller is None and not open_mode:
            raise HTTPException(401, "sign in first")
        session = await session_in_scope(sid, caller)
        if not session.cut and session.state != "recess":
            raise HTTPException(409, f"session {sid} is neither cut nor in recess")
        for paused, right in (
            (session.cut, "cut_broadcasts"),
            (session.state == "recess", "manage_sessions"),
        ):
            if paused and not allowed(caller, right):
                raise HTTPException(403, f"needs the right {right}")
        if session.cut:
            changed = await acting(role.sessions.resume_broadcast(sid, who(caller)))
        if session.state == "recess":
            changed = await audited(request, caller, role.sessions.resume(sid, who(caller)))
        await role.sync_broadcasts()
        return changed

    @router.post("/sessions/{sid}/close", tags=["sessions"])
    async def close(
        sid: str, request: Request, caller: Annotated[Caller | None, require("manage_sessions")]
    ) -> dict[str, Any]:
        await session_in_scope(sid, caller)
        closed = await audited(request, caller, role.sessions.close(sid, who(caller)))
        await role.sync_broadcasts()  # the public rendition ends now: viewers cut off
        return closed

    # -- the public list ----------------------------------------------------------------

    async def public_view(session: TrialSession, cameras: set[str]) -> dict[str, Any] | None:
        """What the public list says of a session (with `status`), None if not listed."""
        if not session.public:
            return None
        item = public_item(session)
        if session.state in ACTIVE and session.room in cameras:
            item["status"] = "live"
            item["hls"] = public_playlist(session.id)
            item["state"] = session.state
            item["delay"] = session.delay_s
            # the page shows "broadcast paused" over the slate: now, and for what plays
            # from a paused stretch (its program date-times fall in one of these)
            item["paused"] = session.cut or session.state == "recess"
            item["paused_periods"] = periods(session)
            if role.broadcasts is not None:
                item["viewers"] = role.broadcasts.viewers(session.id)
        elif session.state == "scheduled":
            item["status"] = "upcoming"
        elif session.state == "closed":
            item["status"] = "finished"
            item["end"] = iso(session.closed_at) if session.closed_at else None
            if await replay_public(session):
                item["hls"] = replay_url(session.id)
        else:
            return None
        return item

    async def replay_public(session: TrialSession) -> bool:
        if expired(session, role.config.recorder.public_replay_days, time.time()):
            return False
        return any(r.get("public") for r in await role.index.search(session=session.id))

    async def broadcast_rooms() -> set[str]:
        definitions = await role.registry.list()
        return {d.room for d in definitions if broadcast_stream(definitions, d.room)}

    @router.get(
        "/public/sessions",
        tags=["public"],
        dependencies=[public("the public portal: sessions approved for broadcast")],
    )
    async def public_sessions() -> Response:
        """Sessions approved for broadcast: live (open or in recess, with a camera that
        may be broadcast), upcoming (scheduled) and finished (`hls`: its replay, or null
        when there is none or it is past its public retention). Nothing else is listed."""
        cameras = await broadcast_rooms()
        body: dict[str, list[dict[str, Any]]] = {"live": [], "upcoming": [], "finished": []}
        for session in await role.sessions.list():
            if session.state == "closed" and len(body["finished"]) >= FINISHED_LISTED:
                continue
            item = await public_view(session, cameras)
            if item is not None:
                body[item["status"]].append(item)
        body["upcoming"].sort(key=lambda i: str(i["start"]))
        return JSONResponse(body, headers={"Cache-Control": "public, max-age=5"})

    @router.get(
        "/public/sessions/{sid}",
        tags=["public"],
        dependencies=[public("the public portal: one session approved for broadcast")],
    )
    async def public_session(sid: str) -> Response:
        """One item of the list, with its `status` (live, upcoming, finished); 404 for
        anything the list would not show."""
        try:
            session = await role.sessions.get(sid)
        except SessionError:
            raise HTTPException(404, "Not Found") from None
        item = await public_view(session, await broadcast_rooms())
        if item is None:
            raise HTTPException(404, "Not Found")
        return JSONResponse(item, headers={"Cache-Control": "public, max-age=2"})

    return router


def periods(session: TrialSession) -> list[dict[str, str | None]]:
    """The session's paused stretches in capture time (recorder/replay.py), as ISO times."""
    return [
        {"from": iso_ms(lo), "to": None if math.isinf(hi) else iso_ms(hi)}
        for lo, hi in hidden_windows(session)
    ]


def iso_ms(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def public_item(session: TrialSession) -> dict[str, Any]:
    """What the public may know of a session approved for broadcast."""
    return {
        "id": session.id,
        "case": session.case_number,
        "title": session.title,
        "parties": session.parties,
        "court": session.court,
        "room": session.room,
        "start": iso(session.opened_at),
        "hls": None,
    }
