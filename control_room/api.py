"""Control-plane HTTP API (/api/v1): sign-in and streams.

Live statistics come from the `stream-live` presence entries every media node refreshes in
Redis, so this API answers the same whichever node (or how many) it runs on.
"""

# No `from __future__ import annotations` here: FastAPI must see the dependency closures
# (current_caller, require) in the route annotations at definition time.
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from control_room.sign_in import TooManyAttempts
from control_room.users import SESSION_TTL_S
from core import presence
from core.audit import audit
from core.courts import CourtTree
from core.identity import (
    SESSION_COOKIE,
    caller_guards,
    peer_of,
    public,
    session_resolver,
    session_token,
)
from core.rights import PROVINCE, Caller, may
from core.scope import sees
from media_server.access import PlayTokens
from media_server.streams import (
    StreamClass,
    StreamDefinition,
    StreamExists,
    StreamRegistry,
    check_source_url,
)
from recorder.sessions import TrialSessions

if TYPE_CHECKING:
    from control_room.role import ControlRoomRole


class SignIn(BaseModel):
    name: str
    password: str


def _well_formed(url: str) -> str:
    """FFmpeg gets the source URL as it is: a control character (a CR LF that adds an RTSP
    header) or a host and port it cannot read is refused here, not retried forever."""
    if any(not c.isprintable() for c in url):
        raise ValueError("source_url has a control character (newline, tab, ...)")
    try:
        _ = urlsplit(url).port  # reads the host and port: a bad one is a ValueError
    except ValueError as exc:
        raise ValueError(f"source_url is not a well-formed URL: {exc}") from None
    return url


# one field for POST (StreamIn) and PATCH (StreamChange): a check added here covers both
SourceUrl = Annotated[str, Field(max_length=2048), AfterValidator(_well_formed)]


class StreamIn(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    stream_class: StreamClass = StreamClass.trial
    public: bool = False
    title: str = ""
    court: str = ""
    room: str = ""
    source_url: SourceUrl = ""


class StreamChange(BaseModel):
    """PATCH /api/v1/streams/{id}: the fields to change; absent or null ones stay."""

    model_config = ConfigDict(extra="forbid")
    stream_class: StreamClass | None = None
    public: bool | None = None
    title: str | None = None
    court: str | None = None
    room: str | None = None
    source_url: SourceUrl | None = None
    enabled: bool | None = None


# who may watch a stream and which sessions record it: admin only, never mid-session
ACCESS_FIELDS = frozenset({"public", "stream_class", "court", "room"})


def _who(caller: Caller | None) -> str:
    return caller.name if caller is not None else "open-mode"


def build_api_router(role: "ControlRoomRole") -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    users = role.users
    state = role.storage.state
    registry = StreamRegistry(state)
    sessions = TrialSessions(state)
    courts = CourtTree(state)

    current_caller, require = caller_guards(session_resolver(role.storage.state))

    async def visible(caller: Caller | None, definition: StreamDefinition) -> bool:
        """Public streams are everyone's; a private one only its court's scope's (in open
        mode, local trials with nobody to sign in as, every stream is the caller's)."""
        if role.config.security.open or definition.is_public:
            return True
        return await sees(caller, definition.court, courts)

    async def in_scope(caller: Caller | None, stream_id: str) -> StreamDefinition:
        """The definition of a stream this caller's scope holds; else 404, as unknown."""
        definition = await registry.get(stream_id)
        if definition is None or not await sees(caller, definition.court, courts):
            raise HTTPException(404, f"stream {stream_id!r} not found")
        return definition

    async def court_for(caller: Caller | None, court: str) -> str:
        """Where a scoped caller puts a stream: a court of its subtree (its own when none
        is named); a court it cannot see answers as one that does not exist."""
        if caller is None or caller.scope == PROVINCE:
            return court
        if not court:
            return caller.scope
        found = await courts.resolve(court)
        if found is None or not await sees(caller, found, courts):
            raise HTTPException(404, f"court {court!r} not found")
        return found

    @router.post(
        "/login",
        tags=["users"],
        responses={429: {"description": "held: Retry-After"}},
        dependencies=[public("sign-in itself: limited per user and per address")],
    )
    async def login(body: SignIn, request: Request, response: Response) -> dict[str, str]:
        peer = peer_of(request)
        try:
            token = await role.sign_in_desk.sign_in(body.name, body.password, peer)
        except TooManyAttempts as exc:
            headers = {"Retry-After": str(exc.retry_after_s)}
            raise HTTPException(429, str(exc), headers=headers) from None
        if token is None:
            raise HTTPException(401, "wrong user name or password")
        # Secure when the browser came over HTTPS (directly, or through the TLS proxy)
        secure = request.url.scheme == "https"
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=SESSION_TTL_S,
            httponly=True,
            secure=secure,
            samesite="strict",
        )
        return {"token": token}

    @router.post("/logout", tags=["users"], dependencies=[public("ends the caller's own session")])
    async def logout(request: Request, response: Response) -> dict[str, str]:
        token = session_token(request)
        if token:
            await users.sign_out(token)
        response.delete_cookie(SESSION_COOKIE)
        return {"status": "signed out"}

    @router.get("/me", tags=["users"])
    async def me(caller: Annotated[Caller | None, Depends(current_caller)]) -> dict[str, str]:
        if caller is None:
            return {"role": "public"}
        return {"name": caller.name, "role": caller.role, "court": caller.scope}

    @router.get("/streams", tags=["streams"])
    async def list_streams(
        caller: Annotated[Caller | None, Depends(current_caller)],
    ) -> list[dict[str, Any]]:
        live = await role.storage.state.present(presence.STREAM_LIVE)
        out = []
        for definition in await registry.list():
            if not await visible(caller, definition):
                continue  # nobody learns that a private stream outside their scope exists
            out.append({**definition.public_view(), "stats": live.get(definition.id)})
        return out

    @router.get("/streams/{stream_id}", tags=["streams"])
    async def get_stream(
        stream_id: str,
        caller: Annotated[Caller | None, Depends(current_caller)],
    ) -> dict[str, Any]:
        definition = await registry.get(stream_id)
        if definition is None or not await visible(caller, definition):
            raise HTTPException(404, f"stream {stream_id!r} not found")
        live = await role.storage.state.present(presence.STREAM_LIVE)
        return {**definition.public_view(), "stats": live.get(stream_id)}

    @router.post("/streams", tags=["streams"], status_code=201)
    async def define_stream(
        body: StreamIn,
        request: Request,
        caller: Annotated[Caller | None, require("define_streams")],
    ) -> dict[str, Any]:
        _check_source(body.source_url)
        definition = StreamDefinition(**body.model_dump())
        definition.court = await court_for(caller, body.court)
        try:
            key = await registry.create(definition)
        except ValueError as exc:  # a court or room name the tree cannot take
            raise HTTPException(422, str(exc)) from None
        except StreamExists:
            raise HTTPException(
                409,
                f"stream {body.id!r} already exists: change it with PATCH "
                f"/api/v1/streams/{body.id}, its key with POST .../rotate-key",
            ) from None
        view = definition.public_view()
        await audit(
            state,
            "stream.create",
            _who(caller),
            stream=body.id,
            after=view,
            court=definition.court,
            peer=peer_of(request),
        )
        return {**view, "key": key}

    @router.patch("/streams/{stream_id}", tags=["streams"])
    async def change_stream(
        stream_id: str,
        body: StreamChange,
        request: Request,
        caller: Annotated[Caller | None, require("define_streams")],
    ) -> dict[str, Any]:
        changes = body.model_dump(exclude_none=True)
        _check_source(changes.get("source_url"))
        current = await in_scope(caller, stream_id)
        if "court" in changes:
            changes["court"] = await court_for(caller, changes["court"])
        record = current.to_record()
        touched = sorted(k for k in ACCESS_FIELDS & changes.keys() if changes[k] != record[k])
        if touched:
            await _may_change_access(caller, stream_id, touched)
        try:
            changed = await registry.update(stream_id, changes)
        except ValueError as exc:  # a court or room name the tree cannot take
            raise HTTPException(422, str(exc)) from None
        if changed is None:
            raise HTTPException(404, f"stream {stream_id!r} not found")
        before, after = changed
        if after:
            await audit(
                state,
                "stream.update",
                _who(caller),
                stream=stream_id,
                before=before,
                after=after,
                court=str(after.get("court", current.court)),
                peer=peer_of(request),
            )
        definition = await registry.get(stream_id)
        if definition is None:  # deleted meanwhile
            raise HTTPException(404, f"stream {stream_id!r} not found")
        return definition.public_view()

    def _check_source(url: str | None) -> None:
        """422 for a source that is not rtsp:// or rtsps:// (files too in open mode)."""
        try:
            check_source_url(url, role.config.security.open)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    async def _may_change_access(caller: Caller | None, stream_id: str, fields: list[str]) -> None:
        """403 without the right; 409 while a session records the stream (a hearing's
        cameras do not change hands, or become public, halfway through)."""
        what = ", ".join(fields)
        if caller is not None and not may(caller, "change_stream_access"):
            raise HTTPException(403, f"role {caller.role} may not change {what} of a stream")
        for session in await sessions.active():
            if stream_id in session.streams:
                raise HTTPException(
                    409,
                    f"stream {stream_id!r} is recorded by session {session.id} "
                    f"({session.state}): change its {what} after the session is closed",
                )

    @router.post("/streams/{stream_id}/rotate-key", tags=["streams"])
    async def rotate_key(
        stream_id: str,
        request: Request,
        caller: Annotated[Caller | None, require("define_streams")],
    ) -> dict[str, str]:
        definition = await in_scope(caller, stream_id)
        key = await registry.rotate_key(stream_id)
        if key is None:
            raise HTTPException(404, f"stream {stream_id!r} not found")
        await audit(
            state,
            "stream.rotate-key",
            _who(caller),
            stream=stream_id,
            court=definition.court,
            peer=peer_of(request),
        )
        return {"id": stream_id, "key": key}

    @router.get("/streams/{stream_id}/play-url", tags=["streams"])
    async def play_url(
        stream_id: str,
        request: Request,
        caller: Annotated[Caller, require("mint_play_urls")],
    ) -> dict[str, str]:
        # the token carries this decision (role and scope) to egresses that have no
        # session to ask, RTMP play among them; it names its holder for the audit trail
        definition = await in_scope(caller, stream_id)
        tokens: PlayTokens = role.play_tokens
        token = tokens.make(stream_id, holder=caller.name)
        await audit(
            state,
            "stream.play-url",
            caller.name,
            stream=stream_id,
            court=definition.court,
            peer=peer_of(request),
        )
        return {
            "hls": f"/live/{stream_id}/index.m3u8?token={token}",
            "token": token,
            "expires_in_s": str(tokens.ttl_s),
        }

    return router
