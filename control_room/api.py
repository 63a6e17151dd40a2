"""Control-plane HTTP API (/api/v1): sign-in and streams.

Live statistics come from the `stream-live` presence entries every media node refreshes in
Redis, so this API answers the same whichever node (or how many) it runs on.
"""

# No `from __future__ import annotations` here: FastAPI must see the dependency closures
# (current_caller, require) in the route annotations at definition time.
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from control_room.sign_in import TooManyAttempts
from control_room.users import SESSION_TTL_S
from core import presence
from core.identity import SESSION_COOKIE, caller_guards, session_resolver, session_token
from core.rights import Caller
from media_server.access import PlayTokens
from media_server.streams import StreamClass, StreamDefinition, StreamRegistry

if TYPE_CHECKING:
    from control_room.role import ControlRoomRole


class SignIn(BaseModel):
    name: str
    password: str


class StreamIn(BaseModel):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
    stream_class: StreamClass = StreamClass.trial
    public: bool = False
    title: str = ""
    court: str = ""
    room: str = ""
    source_url: str = ""


def build_api_router(role: "ControlRoomRole") -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    users = role.users
    registry = StreamRegistry(role.storage.state)

    current_caller, require = caller_guards(session_resolver(role.storage.state))

    @router.post("/login", tags=["users"], responses={429: {"description": "held: Retry-After"}})
    async def login(body: SignIn, request: Request, response: Response) -> dict[str, str]:
        peer = request.client.host if request.client else "?"
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

    @router.post("/logout", tags=["users"])
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
        return {"name": caller.name, "role": caller.role}

    @router.get("/streams", tags=["streams"])
    async def list_streams(
        caller: Annotated[Caller | None, Depends(current_caller)],
    ) -> list[dict[str, Any]]:
        live = await role.storage.state.present(presence.STREAM_LIVE)
        staff = caller is not None
        out = []
        for definition in await registry.list():
            if not staff and not definition.is_public:
                continue  # the public never learns that a private stream exists
            out.append({**definition.public_view(), "stats": live.get(definition.id)})
        return out

    @router.get("/streams/{stream_id}", tags=["streams"])
    async def get_stream(
        stream_id: str,
        caller: Annotated[Caller | None, Depends(current_caller)],
    ) -> dict[str, Any]:
        definition = await registry.get(stream_id)
        if definition is None or (caller is None and not definition.is_public):
            raise HTTPException(404, f"stream {stream_id!r} not found")
        live = await role.storage.state.present(presence.STREAM_LIVE)
        return {**definition.public_view(), "stats": live.get(stream_id)}

    @router.post("/streams", tags=["streams"], status_code=201)
    async def define_stream(
        body: StreamIn,
        _: Annotated[Caller, require("define_streams")],
    ) -> dict[str, Any]:
        definition = StreamDefinition(**body.model_dump())
        key = await registry.define(definition)
        return {**definition.public_view(), "key": key}

    @router.get("/streams/{stream_id}/play-url", tags=["streams"])
    async def play_url(
        stream_id: str,
        _: Annotated[Caller, require("mint_play_urls")],
    ) -> dict[str, str]:
        if await registry.get(stream_id) is None:
            raise HTTPException(404, f"stream {stream_id!r} not found")
        tokens: PlayTokens = role.play_tokens
        token = tokens.make(stream_id)
        return {
            "hls": f"/live/{stream_id}/index.m3u8?token={token}",
            "token": token,
            "expires_in_s": str(tokens.ttl_s),
        }

    return router
