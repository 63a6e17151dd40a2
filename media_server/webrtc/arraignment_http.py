"""HTTP for arraignment rooms: the seat page, joining with a one-time code, leaving, and the
control API (admin/operator) that opens rooms, re-issues codes and closes rooms.

Every membership change and every command-centre watch of a seat goes to the audit log
through the `audit` hook (DESIGN.md §7). The seats' streams are registered as private
`arraignment` streams through `define_streams`, so the recorder records them and public
URLs never serve them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from core.identity import ResolveCaller
from core.rights import Caller, may
from core.web.pages import Page
from media_server.streams import StreamClass, StreamDefinition
from media_server.webrtc.arraignment import (
    ArraignmentRooms,
    RoomError,
    RoomStore,
    parse_room_stream,
    room_stream,
)
from media_server.webrtc.auth import bearer_token
from storage.attempts import Attempts, Limit

if TYPE_CHECKING:
    from media_server.webrtc.service import WebRTCService

log = logging.getLogger(__name__)

API = "/api/v1/arraignments"
# wrong join codes per room: 10 free, then the room's joins wait 1 s, 2 s, 4 s, ... 15 min
JOIN_LIMIT = Limit("arraignment-join", free=10)

Audit = Callable[[str, str, dict[str, Any]], Awaitable[None]]  # action, who, details
DefineStreams = Callable[[list[StreamDefinition]], Awaitable[None]]


async def _nobody(request: Request) -> Caller | None:
    return None


async def _log_audit(action: str, who: str, details: dict[str, Any]) -> None:
    log.info("audit %s by %s: %s", action, who, details)


async def _no_registry(definitions: list[StreamDefinition]) -> None:
    return None


@dataclass
class RoomHooks:
    """What the platform plugs in: who calls, the audit log, the stream registry, and
    where rooms are kept, the per-room limit on wrong join codes. Defaults (tests): nobody
    may manage rooms, audit goes to the log, nothing is registered, rooms live in memory,
    no limit."""

    resolve_caller: ResolveCaller = _nobody
    audit: Audit = _log_audit
    define_streams: DefineStreams = _no_registry
    store: RoomStore | None = None
    attempts: Attempts | None = None


class JoinRequest(BaseModel):
    code: str = Field(min_length=1, max_length=32, description="The one-time join code")


class CreateRoom(BaseModel):
    room: str = Field(min_length=1, max_length=64, description="Room id (letters, digits, -_)")
    seats: dict[str, str] = Field(
        default_factory=dict,
        description="Seat -> label. court and detention are always there; add lawyer "
        "and/or interpreter for their seats. Empty label: the default.",
    )


def peer(request: Request) -> str:
    return request.client.host if request.client else "?"


def _refuse(exc: RoomError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": exc.reason}, status_code=exc.status, headers=headers)


def add_arraignment_routes(router: APIRouter, service: WebRTCService) -> None:
    _add_seat_routes(router, service)
    _add_control_routes(router, service)


def _add_seat_routes(router: APIRouter, service: WebRTCService) -> None:
    page = Page.load("media_server.webrtc", "arraignment.html")
    rooms, audit, attempts = service.rooms, service.room_hooks.audit, service.room_hooks.attempts

    @router.get("/arraignment/{room_id}", response_class=HTMLResponse)
    async def arraignment_page(room_id: str, request: Request) -> HTMLResponse:
        return page.response(request)

    @router.post("/arraignment/{room_id}/join")
    async def arraignment_join(room_id: str, body: JoinRequest, request: Request) -> JSONResponse:
        subject = {JOIN_LIMIT.scope: room_id}
        wait_s = await attempts.wait_s(subject) if attempts else 0.0
        if wait_s > 0:
            retry = max(1, math.ceil(wait_s))
            held = RoomError(
                429, f"too many wrong join codes for this room: try again in {retry} s"
            )
            return _refuse(held, {"Retry-After": str(retry)})
        try:
            joined = await rooms.join(room_id, body.code)
        except RoomError as exc:
            if exc.status == 403 and attempts is not None:  # a wrong, spent or expired code
                for held_now in await attempts.failed(subject):  # audited per hold, not per try
                    details = {"room": room_id, "failures": held_now.failures}
                    details |= {"hold_s": held_now.hold_s, "peer": peer(request)}
                    await audit("arraignment.join-locked", f"peer {peer(request)}", details)
            return _refuse(exc)
        await audit(
            "arraignment.join",
            f"seat {joined.side}",
            {"room": room_id, "seat": joined.side, "label": joined.label, "peer": peer(request)},
        )
        return JSONResponse(asdict(joined), headers={"Cache-Control": "no-store"})

    @router.post("/arraignment/{room_id}/leave")
    async def arraignment_leave(room_id: str, request: Request) -> JSONResponse:
        try:
            seat = await rooms.leave(room_id, bearer_token(request))
        except RoomError as exc:
            return _refuse(exc)
        await service.whip.close_stream(room_stream(room_id, seat.seat), "left the room")
        await audit(
            "arraignment.leave",
            f"seat {seat.seat}",
            {"room": room_id, "seat": seat.seat, "peer": peer(request)},
        )
        return JSONResponse({"left": seat.seat})


async def manager(service: WebRTCService, request: Request) -> Caller:
    """The signed-in admin or operator calling the control API, or a refusal."""
    caller = await service.room_hooks.resolve_caller(request)
    if caller is None:
        raise HTTPException(401, "sign in as an admin or operator to manage arraignment rooms")
    if not may(caller, "manage_arraignment"):
        raise HTTPException(403, f"role {caller.role!r} may not manage arraignment rooms")
    return caller


def seat_definitions(room_id: str, labels: dict[str, str]) -> list[StreamDefinition]:
    """Private, recorded streams for the recorder and the operator's play check."""
    return [
        StreamDefinition(
            id=room_stream(room_id, seat),
            stream_class=StreamClass.arraignment,
            public=False,
            title=f"Arraignment {room_id}: {label}",
            room=room_id,
        )
        for seat, label in labels.items()
    ]


def _add_control_routes(router: APIRouter, service: WebRTCService) -> None:
    rooms, hooks = service.rooms, service.room_hooks

    @router.post(API, status_code=201)
    async def create_room(body: CreateRoom, request: Request) -> JSONResponse:
        caller = await manager(service, request)
        try:
            codes = await rooms.create(body.room, body.seats, created_by=caller.name)
        except RoomError as exc:
            return _refuse(exc)
        room = await rooms.get(body.room)
        await hooks.define_streams(
            seat_definitions(room.id, {s: seat.label for s, seat in room.seats.items()})
        )
        await hooks.audit(
            "arraignment.create", caller.name, {"room": room.id, "seats": sorted(room.seats)}
        )
        return JSONResponse(
            {**room.public_view(), "codes": codes, "page": f"/arraignment/{room.id}"},
            status_code=201,
            headers={"Cache-Control": "no-store"},
        )

    @router.get(API)
    async def list_rooms(request: Request) -> list[dict[str, Any]]:
        await manager(service, request)
        return [_view(service, room) for room in await rooms.list()]

    @router.get(API + "/{room_id}")
    async def get_room(room_id: str, request: Request) -> JSONResponse:
        await manager(service, request)
        try:
            return JSONResponse(_view(service, await rooms.get(room_id)))
        except RoomError as exc:
            return _refuse(exc)

    @router.post(API + "/{room_id}/seats/{seat}/code")
    async def reissue_code(room_id: str, seat: str, request: Request) -> JSONResponse:
        caller = await manager(service, request)
        try:
            code = await rooms.reissue(room_id, seat)
        except RoomError as exc:
            return _refuse(exc)
        await service.whip.close_stream(room_stream(room_id, seat), "join code re-issued")
        await hooks.audit("arraignment.reissue", caller.name, {"room": room_id, "seat": seat})
        return JSONResponse(
            {"room": room_id, "seat": seat, "code": code}, headers={"Cache-Control": "no-store"}
        )

    @router.delete(API + "/{room_id}")
    async def close_room(room_id: str, request: Request) -> JSONResponse:
        caller = await manager(service, request)
        try:
            room = await rooms.get(room_id)
        except RoomError as exc:
            return _refuse(exc)
        await rooms.close(room_id)
        for seat in room.seats:
            await service.whip.close_stream(room_stream(room_id, seat), "room closed")
        await hooks.audit("arraignment.close", caller.name, {"room": room_id})
        return JSONResponse({"closed": room_id})


def _view(service: WebRTCService, room: Any) -> dict[str, Any]:
    """The room as listed, with whether each seat is on air and how many watch it."""
    view: dict[str, Any] = room.public_view()
    for seat in view["seats"].values():
        stream = service.hub.find(seat["stream"])
        seat["live"] = bool(stream is not None and stream.live)
        seat["viewers"] = service.whep.viewers(seat["stream"])
    return view


async def audit_watch(service: WebRTCService, request: Request, stream_id: str) -> None:
    """A command-centre watch of a seat (not a seat playing its room): audited."""
    parsed = parse_room_stream(stream_id)
    if parsed is None:
        return
    caller = await service.room_hooks.resolve_caller(request)
    who = caller.name if caller is not None else f"peer {peer(request)}"
    details = {
        "room": parsed[0],
        "seat": parsed[1],
        "stream": stream_id,
        "peer": peer(request),
        "private_role": may(caller, "watch_private"),
    }
    await service.room_hooks.audit("arraignment.watch", who, details)


__all__ = ["ArraignmentRooms", "RoomHooks", "add_arraignment_routes", "audit_watch"]
