"""HTTP for arraignment rooms: the page, joining with a one-time code, leaving."""

from __future__ import annotations

from dataclasses import asdict
from importlib import resources
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from media_server.webrtc.arraignment import RoomError, room_stream
from media_server.webrtc.auth import bearer_token

if TYPE_CHECKING:
    from media_server.webrtc.service import WebRTCService


class JoinRequest(BaseModel):
    code: str = Field(min_length=1, max_length=32, description="The one-time join code")


def add_arraignment_routes(router: APIRouter, service: WebRTCService) -> None:
    page = resources.files("media_server.webrtc").joinpath("arraignment.html").read_text()

    @router.get("/arraignment/{room_id}", response_class=HTMLResponse)
    async def arraignment_page(room_id: str) -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    @router.post("/arraignment/{room_id}/join")
    async def arraignment_join(room_id: str, body: JoinRequest) -> JSONResponse:
        try:
            joined = service.rooms.join(room_id, body.code)
        except RoomError as exc:
            return JSONResponse({"detail": exc.reason}, status_code=exc.status)
        return JSONResponse(asdict(joined), headers={"Cache-Control": "no-store"})

    @router.post("/arraignment/{room_id}/leave")
    async def arraignment_leave(room_id: str, request: Request) -> JSONResponse:
        try:
            seat = service.rooms.leave(room_id, bearer_token(request))
        except RoomError as exc:
            return JSONResponse({"detail": exc.reason}, status_code=exc.status)
        await service.whip.close_stream(room_stream(room_id, seat.side), "left the room")
        return JSONResponse({"left": seat.side})
