"""Routes of the public replay (recorder/replay.py says what it holds):
/public/{session_id}/replay/index.m3u8 and /public/{session_id}/replay/{object}.

No sign-in: a session approved for broadcast, closed, within its public retention, plays
for anyone; anything else (a guessed id, a private or open session, an expired replay, a
segment of a cut stretch) is the same 404 the live public routes answer. Cache headers as
theirs, for a cache in front: media `immutable` with a strong ETag; the playlist fresh for
a while (a few seconds while the recording is still being closed).

The live public routes (/public/{name}/index.m3u8, ...) are served ahead of the app by the
media server; these have one more path level, so they never match those and come here.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations.
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from core.identity import public
from recorder.broadcast import broadcast_stream
from recorder.replay import Replay, expired, hidden_windows, make_replay
from recorder.sessions import SessionError, TrialSession
from storage.objects import ObjectNotFound
from storage.recording_keys import object_key

if TYPE_CHECKING:
    from recorder.role import RecorderRole

PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
MEDIA_CACHE = "public, max-age=86400, immutable"
CLOSED_PLAYLIST_CACHE = "public, max-age=60"
CLOSING_PLAYLIST_CACHE = "public, max-age=2"  # the recording is being uploaded and signed
NO_STORE = {"Cache-Control": "no-store"}
REMEMBERED_S = 10.0  # a replay is worked out once per this, not per segment request


def not_found() -> HTTPException:
    return HTTPException(404, "Not Found", headers=NO_STORE)


class Replays:
    """The replay of each finished public session, worked out on demand; its segment list
    is remembered a few seconds (every media request needs it), its session is read each
    time."""

    def __init__(self, role: "RecorderRole") -> None:
        self.role = role
        self._known: dict[str, tuple[float, Replay]] = {}

    async def session(self, session_id: str) -> TrialSession | None:
        """The session, if its replay is public now."""
        try:
            session = await self.role.sessions.get(session_id)
        except SessionError:
            return None
        keep_days = self.role.config.recorder.public_replay_days
        if not session.public or session.state != "closed":
            return None
        if expired(session, keep_days, time.time()):
            return None
        return session

    async def get(self, session_id: str) -> Replay | None:
        """The replay, if public now (asked each time: retention ends it at once)."""
        session = await self.session(session_id)
        if session is None:
            self._known.pop(session_id, None)
            return None
        found = self._known.get(session_id)
        if found is not None and time.monotonic() - found[0] < REMEMBERED_S:
            return found[1]
        replay = await self._make(session)
        if replay is None:
            return None
        if len(self._known) > 1000:  # bounded whatever is asked for
            self._known.clear()
        self._known[session_id] = (time.monotonic(), replay)
        return replay

    async def _make(self, session: TrialSession) -> Replay | None:
        from recorder.manifest_store import read_manifest

        recordings = [
            r for r in await self.role.index.search(session=session.id) if r.get("public")
        ]
        if not recordings:
            return None
        camera = broadcast_stream(await self.role.registry.list(), session.room)
        streams = sorted({str(r["stream"]) for r in recordings})
        stream = camera.id if camera is not None and camera.id in streams else streams[0]
        first = min(
            (r for r in recordings if r["stream"] == stream),
            key=lambda r: float(r.get("opened_at") or 0),
        )
        try:
            manifest = await read_manifest(self.role.storage.objects, str(first["id"]))
        except (ObjectNotFound, ValueError):
            return None
        return make_replay(manifest, hidden_windows(session))


def make_replay_router(role: "RecorderRole", replays: Replays) -> APIRouter:
    router = APIRouter(
        tags=["public"], dependencies=[public("public replays: finished public sessions only")]
    )

    def answer(request: Request, body: bytes, etag: str, cache: str, media_type: str) -> Response:
        headers = {"Cache-Control": cache, "ETag": etag}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)

    @router.get("/public/{session_id}/replay/index.m3u8")
    async def replay_playlist(session_id: str, request: Request) -> Response:
        replay = await replays.get(session_id)
        if replay is None or not replay.segments:
            raise not_found()
        text = replay.playlist().encode()
        etag = f'"{replay.recording_id}/{len(replay.segments)}/{replay.closed:d}"'
        cache = CLOSED_PLAYLIST_CACHE if replay.closed else CLOSING_PLAYLIST_CACHE
        return answer(request, text, etag, cache, PLAYLIST_TYPE)

    @router.get("/public/{session_id}/replay/{name}")
    async def replay_media(session_id: str, name: str, request: Request) -> Response:
        replay = await replays.get(session_id)
        etag = replay.names.get(name) if replay is not None else None
        if replay is None or etag is None:  # a cut stretch's segment is no name here
            raise not_found()
        try:
            data = await role.storage.objects.get(object_key(replay.recording_id, name))
        except ObjectNotFound:
            raise not_found() from None
        return answer(request, data, etag, MEDIA_CACHE, "video/mp4")

    return router
