"""Walls over HTTP: `/api/v1/walls` (list, get, put: DESIGN.md §5), each operator's saved
layouts (`/api/v1/layouts`), and the wall's big-screen page `/wall/{name}`.

Changing a wall is audited: `wall.change` when an operator changes its own console
(`@<name>`), `wall.dispatch` when the target is another wall or another operator's console.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations.
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from control_room.stream_scope import StreamScope
from control_room.walls import CONSOLE_PREFIX, WallError, WallStore, console_of
from core.audit import audit
from core.identity import caller_guards, peer_of, public, session_resolver
from core.rights import Caller
from core.web.pages import Page

if TYPE_CHECKING:
    from control_room.role import ControlRoomRole


class WallIn(BaseModel):
    layout: str = Field(description="1, 2x2, 3x3, 4x4, 5x5 or 1+5")
    tiles: list[str | None] = Field(max_length=25, description="stream id or null, per tile")


def _who(caller: Caller | None) -> str:
    return caller.name if caller is not None else "open-mode"


def build_walls_router(role: "ControlRoomRole") -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["walls"])
    state = role.storage.state
    walls: WallStore = role.walls
    scope: StreamScope = role.stream_scope
    _, require = caller_guards(session_resolver(state), role.config.security.open)
    Viewer = Annotated[Caller | None, require("see_walls")]
    Changer = Annotated[Caller | None, require("change_walls")]

    @router.get("/walls")
    async def list_walls(caller: Viewer) -> list[dict[str, Any]]:
        return [await scope.wall_view(caller, w) for w in await walls.all()]

    @router.get("/walls/{name}")
    async def get_wall(name: str, caller: Viewer) -> dict[str, Any]:
        wall = await walls.get(name)
        if wall is None:
            raise HTTPException(404, f"wall {name!r} not found")
        return await scope.wall_view(caller, wall)

    @router.put("/walls/{name}")
    async def put_wall(
        name: str, body: WallIn, request: Request, caller: Changer
    ) -> dict[str, Any]:
        if name.startswith(CONSOLE_PREFIX) and await role.users.get_role(name[1:]) is None:
            raise HTTPException(404, f"no operator {name[1:]!r} to dispatch to")
        for stream_id in {t for t in body.tiles if t}:
            if await scope.find(caller, stream_id) is None:
                raise HTTPException(404, f"stream {stream_id!r} not found")
        before = await walls.get(name)
        try:
            wall = await walls.put(name, body.layout, body.tiles, _who(caller))
        except WallError as exc:
            raise HTTPException(422, str(exc)) from None
        own = caller is not None and name == console_of(caller.name)
        await audit(
            state,
            "wall.change" if own else "wall.dispatch",
            _who(caller),
            wall=name,
            version=wall.version,
            layout=wall.layout,
            tiles=wall.tiles,
            before=before.tiles if before else None,
            court=caller.scope if caller else "",
            peer=peer_of(request),
        )
        return await scope.wall_view(caller, wall)

    @router.get("/layouts")
    async def list_layouts(caller: Changer) -> list[dict[str, Any]]:
        return await walls.layouts(_who(caller))

    @router.put("/layouts/{name}")
    async def save_layout(name: str, body: WallIn, caller: Changer) -> dict[str, Any]:
        for stream_id in {t for t in body.tiles if t}:
            if await scope.find(caller, stream_id) is None:
                raise HTTPException(404, f"stream {stream_id!r} not found")
        try:
            await walls.save_layout(_who(caller), name, body.layout, body.tiles)
        except WallError as exc:
            raise HTTPException(422, str(exc)) from None
        return {"name": name, "layout": body.layout, "tiles": body.tiles}

    @router.delete("/layouts/{name}")
    async def delete_layout(name: str, caller: Changer) -> dict[str, str]:
        if not await walls.delete_layout(_who(caller), name):
            raise HTTPException(404, f"layout {name!r} not found")
        return {"deleted": name}

    return router


def build_wall_page_router(role: "ControlRoomRole") -> APIRouter:
    """/wall/{name}: the page for signed-in staff; anyone else gets it with 401, where it
    shows the sign-in form instead of the wall (as /devices does)."""
    router = APIRouter()
    page = Page.load("control_room", "pages/wall.html")
    current_caller, _ = caller_guards(session_resolver(role.storage.state))

    @router.get(
        "/wall/{name}",
        response_class=HTMLResponse,
        include_in_schema=False,
        dependencies=[public("the page alone: the wall comes over the guarded websocket")],
    )
    async def wall_page(
        name: str, request: Request, caller: Annotated[Caller | None, Depends(current_caller)]
    ) -> HTMLResponse:
        response = page.response(request)
        if caller is None and not role.config.security.open:
            response.status_code = 401
        return response

    return router
