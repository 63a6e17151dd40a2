"""The HTTP side of WHIP (RFC 9725) and WHEP: POST an offer, get 201 + answer + Location,
DELETE the Location to end. Non-trickle: the answer carries every candidate, so PATCH
answers 405 (RFC 9725 4.3.1: neither trickle ICE nor ICE restart is supported).

Errors are JSON {"detail": reason}, as FastAPI's own. Who may publish or play is not
decided here: the control room passes hooks that raise fastapi.HTTPException to refuse.
The one exception: an arraignment room's seat token (Bearer) opens that seat's own
publish and the other seats' play, without the hooks. Anyone else playing a seat (the
command centre) goes through the hooks and is audited.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse

from core.identity import public
from media_server.hub import Hub
from media_server.webrtc.arraignment_http import RoomHooks, add_arraignment_routes, audit_watch
from media_server.webrtc.auth import AdmitViewer, AuthorizePlay, AuthorizePublish, bearer_token
from media_server.webrtc.errors import SignalingError
from media_server.webrtc.ice import IceConfig
from media_server.webrtc.sdp import MAX_OFFER_BYTES
from media_server.webrtc.service import RETRY_AFTER_S, WebRTCOptions, WebRTCService

log = logging.getLogger(__name__)

SDP = "application/sdp"
SESSION_METHODS = "DELETE"


def make_webrtc_router(
    hub: Hub,
    authorize_play: AuthorizePlay,
    authorize_publish: AuthorizePublish,
    ice_config: IceConfig | None = None,
    options: WebRTCOptions | None = None,
    room_hooks: RoomHooks | None = None,
    admit_viewer: AdmitViewer | None = None,
) -> APIRouter:
    """WHIP and WHEP endpoints over hub, and arraignment rooms (room_hooks: caller, audit,
    stream registry, room store); admit_viewer, if given, is told of every WHEP viewer
    authorize_play let in, so it can be cut when that right ends. The service is at
    router.webrtc (stats, tests) and its sessions are closed on the app's shutdown."""
    service = WebRTCService(hub, ice_config or IceConfig(), options or WebRTCOptions(), room_hooks)
    # each route checks itself: play access (authorize_play), the publish key, a seat's
    # code, or manage_arraignment through room_hooks
    reason = "checks play access, the publish key, a seat code or manage_arraignment itself"
    router = APIRouter(tags=["webrtc"], on_shutdown=[service.close], dependencies=[public(reason)])
    router.webrtc = service  # type: ignore[attr-defined]
    _add_whep(router, service, authorize_play, admit_viewer)
    _add_whip(router, service, authorize_publish)
    add_arraignment_routes(router, service)
    return router


def _add_whep(
    router: APIRouter,
    service: WebRTCService,
    authorize: AuthorizePlay,
    admit: AdmitViewer | None,
) -> None:
    @router.post("/whep/{stream_id}", status_code=201, response_class=Response)
    async def whep_offer(stream_id: str, request: Request) -> Response:
        seat = await service.rooms.may_play(stream_id, bearer_token(request))
        if not seat:
            await authorize(request, stream_id)
            await audit_watch(service, request, stream_id)
        offer = await _read_offer(request)
        viewer = request.client.host if request.client else ""
        public = not seat and await service.room_hooks.resolve_caller(request) is None
        try:
            with service.slot("whep", stream_id, viewer if public else None) as keep:
                session, answer = await service.whep.open(stream_id, offer, viewer)
                keep(session.id)
        except SignalingError as exc:
            return _refuse(exc)
        if not seat and admit is not None:
            await admit(request, stream_id, session.close_soon, lambda: session.closed)
        return _created(answer, session.location)

    @router.delete("/whep/{stream_id}/{session_id}")
    async def whep_end(stream_id: str, session_id: str) -> Response:
        session = service.whep.find(stream_id, session_id)
        if session is None:
            return JSONResponse({"detail": "no such WHEP session"}, status_code=404)
        await session.close("ended by the viewer (DELETE)")
        return Response(status_code=200)

    @router.patch("/whep/{stream_id}/{session_id}")
    async def whep_patch(stream_id: str, session_id: str) -> Response:
        return _no_patch()

    @router.options("/whep/{stream_id}")
    async def whep_options(stream_id: str) -> Response:
        return Response(status_code=204, headers={"Accept-Post": SDP, "Allow": "OPTIONS, POST"})


def _add_whip(router: APIRouter, service: WebRTCService, authorize: AuthorizePublish) -> None:
    @router.post("/whip/{stream_id}", status_code=201, response_class=Response)
    async def whip_offer(stream_id: str, request: Request) -> Response:
        bearer = bearer_token(request)
        if not await service.rooms.may_publish(stream_id, bearer):
            await authorize(request, stream_id, bearer)
        offer = await _read_offer(request)
        source = f"WHIP from {request.client.host}" if request.client else "WHIP"
        try:
            with service.slot("whip", stream_id):
                session, answer = await service.whip.open(stream_id, offer, source)
        except SignalingError as exc:
            return _refuse(exc)
        return _created(answer, session.location)

    @router.delete("/whip/{stream_id}/{session_id}")
    async def whip_end(stream_id: str, session_id: str, request: Request) -> Response:
        session = service.whip.find(stream_id, session_id)
        if session is None:
            return JSONResponse({"detail": "no such WHIP session"}, status_code=404)
        await session.close("ended by the publisher (DELETE)")
        return Response(status_code=200)

    @router.patch("/whip/{stream_id}/{session_id}")
    async def whip_patch(stream_id: str, session_id: str) -> Response:
        return _no_patch()

    @router.options("/whip/{stream_id}")
    async def whip_options(stream_id: str) -> Response:
        return Response(status_code=204, headers={"Accept-Post": SDP, "Allow": "OPTIONS, POST"})


async def _read_offer(request: Request) -> str:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != SDP:
        raise HTTPException(
            415, f"send the SDP offer as Content-Type: {SDP} (got {content_type or 'none'!r})"
        )
    body = await request.body()
    if len(body) > MAX_OFFER_BYTES:
        raise HTTPException(413, f"SDP offer larger than {MAX_OFFER_BYTES} bytes")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, "the SDP offer is not UTF-8 text") from exc


def _created(answer: str, location: str) -> Response:
    return Response(
        answer,
        status_code=201,
        media_type=SDP,
        headers={"Location": location, "Access-Control-Expose-Headers": "Location"},
    )


def _refuse(exc: SignalingError) -> Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if exc.status in (429, 503) else None
    return JSONResponse({"detail": exc.reason}, status_code=exc.status, headers=headers)


def _no_patch() -> Response:
    return JSONResponse(
        {
            "detail": "trickle ICE and ICE restarts are not supported: the answer already "
            "carries every candidate"
        },
        status_code=405,
        headers={"Allow": SESSION_METHODS},
    )
