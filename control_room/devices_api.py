"""Devices over HTTP (/api/v1/devices...): enrolment tokens, enrolment, the technicians'
list, disable/enable/revoke, commands (snapshots stored and served), and the /devices page.

Every change and every command goes to the audit stream with who asked.
"""

# No `from __future__ import annotations` here: FastAPI must see the dependency closures
# (current_caller, require) in the route annotations at definition time.
import base64
import binascii
import re
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from control_room.agent_link import CommandTimeout, CommandUndelivered
from control_room.devices import DeviceNotFound, EnrolError
from core.audit import audit
from core.courts import CourtTree
from core.identity import caller_guards, peer_of, public, session_resolver
from core.rights import PROVINCE, Caller
from core.scope import sees
from core.web.pages import Page
from device_agents.protocol import ENROLL_PATH, CommandName, EnrolRequest, EnrolResponse
from media_server.cluster.nodes import cluster_publish_urls
from media_server.streams import StreamClass
from storage.objects import ObjectNotFound

if TYPE_CHECKING:
    from control_room.role import ControlRoomRole

SNAPSHOT_NAME = re.compile(r"^(cmd-[0-9a-f]{12})\.jpg$")


class EnrolTokenIn(BaseModel):
    court: str = Field(min_length=1, max_length=64)
    room: str = Field(min_length=1, max_length=64)
    stream_class: StreamClass = StreamClass.trial
    ttl_s: int = Field(default=86400, ge=60, le=30 * 86400)


class CommandIn(BaseModel):
    name: CommandName
    args: dict[str, Any] = {}
    timeout_s: float = Field(default=10.0, gt=0, le=120)


def snapshot_key(device_id: str, command_id: str) -> str:
    return f"snapshots/{device_id}/{command_id}.jpg"


def build_devices_router(role: "ControlRoomRole") -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["devices"])
    registry, state = role.devices, role.storage.state
    tree = CourtTree(state)

    _, require = caller_guards(session_resolver(state))

    Manager = Annotated[Caller, require("manage_devices")]
    Commander = Annotated[Caller, require("command_devices")]
    Staff = Annotated[Caller, require("see_devices")]

    @router.post("/devices/enrol-tokens", status_code=201)
    async def make_token(body: EnrolTokenIn, request: Request, caller: Manager) -> dict[str, Any]:
        court = body.court
        if caller.scope != PROVINCE:  # a court of its subtree, never a new one elsewhere
            found = await tree.resolve(court)
            if found is None or not await sees(caller, found, tree):
                raise HTTPException(404, f"court {court!r} not found")
            court = found
        try:
            token = await registry.make_enrol_token(
                court, body.room, str(body.stream_class), body.ttl_s, caller.name
            )
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        grant = await registry.token_grant(token)
        await audit(
            state,
            "device.enrol-token",
            caller.name,
            court=grant["court"],
            room=body.room,
            stream_class=str(body.stream_class),
            peer=peer_of(request),
        )
        return {
            "token": token,
            "expires_at": float(grant["expires_at"]),
            "court": grant["court"],
            "room": body.room,
        }

    @router.post(
        ENROLL_PATH.removeprefix("/api/v1"),
        dependencies=[public("a device spends its one-time enrolment token")],
    )
    async def enroll(body: EnrolRequest, request: Request) -> EnrolResponse:
        rtmp_url = f"rtmp://{request.url.hostname}:{role.rtmp_port()}/live"
        try:
            answer = await registry.enroll(body, rtmp_url, role.config.devices.heartbeat_s)
        except EnrolError as exc:
            raise HTTPException(exc.status, exc.message) from None
        except ValueError as exc:  # a source name that makes no valid stream id
            raise HTTPException(422, str(exc)) from None
        answer.rtmp_urls = await cluster_publish_urls(state)  # issue 18: failover list
        peer = request.client.host if request.client else "?"
        await audit(
            state,
            "device.enrolled",
            f"device {answer.device_id}",
            peer=peer,
            court=answer.court,
            room=answer.room,
            model=body.model,
        )
        return answer

    @router.get("/devices")
    async def list_devices(caller: Staff) -> list[dict[str, Any]]:
        return [d for d in await registry.list() if await sees(caller, d["court"], tree)]

    @router.get("/devices/{device_id}")
    async def get_device(device_id: str, caller: Staff) -> dict[str, Any]:
        view = await device_in_scope(role, device_id, caller)
        return {**view, "events": (await registry.events(device_id))[-50:]}

    for verb in ("disable", "enable", "revoke"):
        _add_state_route(router, role, verb, Manager)

    @router.post("/devices/{device_id}/commands")
    async def command(
        device_id: str, body: CommandIn, request: Request, caller: Commander
    ) -> dict[str, Any]:
        view = await device_in_scope(role, device_id, caller)
        where = {"court": view["court"], "peer": peer_of(request)}
        return await _run_command(role, device_id, body, caller, where)

    @router.get("/devices/{device_id}/snapshots/{name}")
    async def snapshot(device_id: str, name: str, caller: Staff) -> Response:
        await device_in_scope(role, device_id, caller)
        match = SNAPSHOT_NAME.match(name)
        if match is None:
            raise HTTPException(404, "no such snapshot")
        try:
            data = await role.storage.objects.get(snapshot_key(device_id, match.group(1)))
        except ObjectNotFound:
            raise HTTPException(404, "no such snapshot") from None
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private"})

    return router


async def device_in_scope(
    role: "ControlRoomRole", device_id: str, caller: Caller
) -> dict[str, Any]:
    """The device's view if its court is in the caller's scope; else 404, as unknown."""
    try:
        view = await role.devices.view(device_id)
    except DeviceNotFound:
        view = None
    if view is None or not await sees(caller, view["court"], CourtTree(role.storage.state)):
        raise HTTPException(404, f"device {device_id!r} not found")
    return view


def _add_state_route(router: APIRouter, role: "ControlRoomRole", verb: str, guard: Any) -> None:
    registry, state = role.devices, role.storage.state

    async def change(device_id: str, request: Request, caller: guard) -> dict[str, Any]:
        view = await device_in_scope(role, device_id, caller)
        try:
            await getattr(registry, verb)(device_id, caller.name)
        except DeviceNotFound:
            raise HTTPException(404, f"device {device_id!r} not found") from None
        except ValueError as exc:  # enable after revoke
            raise HTTPException(409, str(exc)) from None
        await audit(
            state,
            f"device.{verb}",
            caller.name,
            device=device_id,
            court=view["court"],
            peer=peer_of(request),
        )
        return await registry.view(device_id)

    router.add_api_route(
        f"/devices/{{device_id}}/{verb}", change, methods=["POST"], name=f"device_{verb}"
    )


async def _run_command(
    role: "ControlRoomRole", device_id: str, body: CommandIn, caller: Caller, where: dict[str, str]
) -> dict[str, Any]:
    """Runs a command; its audit entry says the outcome, `where` (court, peer) included."""
    state = role.storage.state
    try:
        cmd, result = await role.agent_link.command(device_id, body.name, body.args, body.timeout_s)
    except DeviceNotFound:
        raise HTTPException(404, f"device {device_id!r} not found") from None
    except CommandUndelivered as exc:
        await audit(
            state,
            "device.command",
            caller.name,
            device=device_id,
            name=body.name,
            args=body.args,
            outcome="not connected",
            **where,
        )
        raise HTTPException(409, str(exc)) from None
    except CommandTimeout as exc:
        await audit(
            state,
            "device.command",
            caller.name,
            device=device_id,
            name=body.name,
            args=body.args,
            outcome="timeout",
            **where,
        )
        raise HTTPException(504, str(exc)) from None
    answer: dict[str, Any] = {"id": cmd.id, "ok": result.ok, "error": result.error}
    if body.name == "snapshot" and result.ok:
        answer.update(await _store_snapshot(role, device_id, cmd.id, result.data))
    else:
        answer["data"] = result.data
    await audit(
        state,
        "device.command",
        caller.name,
        device=device_id,
        command=cmd.id,
        name=body.name,
        args=body.args,
        ok=answer["ok"],
        error=answer["error"],
        **where,
    )
    return answer


async def _store_snapshot(
    role: "ControlRoomRole", device_id: str, command_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    try:
        jpeg = base64.b64decode(str(data.get("jpeg_b64", "")), validate=True)
    except (binascii.Error, ValueError):
        jpeg = b""
    if not jpeg.startswith(b"\xff\xd8"):
        return {"ok": False, "error": "the device's snapshot is not a JPEG"}
    await role.storage.objects.put(
        snapshot_key(device_id, command_id), jpeg, content_type="image/jpeg"
    )
    return {
        "width": data.get("width"),
        "height": data.get("height"),
        "bytes": len(jpeg),
        "url": f"/api/v1/devices/{device_id}/snapshots/{command_id}.jpg",
    }


def build_pages_router() -> APIRouter:
    router = APIRouter()
    page = Page.load("control_room.pages", "devices.html")

    @router.get(
        "/devices",
        response_class=HTMLResponse,
        include_in_schema=False,
        dependencies=[public("the page alone: its data comes from the guarded API")],
    )
    async def devices_page(request: Request) -> HTMLResponse:
        return page.response(request)

    return router
