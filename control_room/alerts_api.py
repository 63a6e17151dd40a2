"""Alerts over HTTP (issue 17), and a stream's analysis settings.

- `GET /api/v1/alerts?stream=&type=&since=&limit=` (see_alerts): newest first, items with
  `id`, `stream`, `type`, `court`, `start`, `end`, `score`, `snapshot`, `clip` (signed
  URLs), `message`, `ack`. Security alerts are folded from their entries (media_server/
  analysis/alerts.py); the other alerts of the stream (a dropped track, a device clock)
  show with `type` = their `kind`. Out of the caller's scope = absent.
- `GET /api/v1/alerts/{id}`; `POST /api/v1/alerts/{id}/ack` `{note}` (ack_alerts), in the
  audit trail as `alert.ack`.
- `GET|PUT /api/v1/streams/{id}/analysis` (configure_analysis): zones, masks, sensitivity,
  min area, schedule, detectors on or off (media_server/analysis/settings.py); a change is
  audited as `stream.analysis` with before and after.

Reads scan the alerts stream backwards in pages, at most MAX_SCANNED entries a request.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations.
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from pydantic import BaseModel, Field

from core.alerts import ALERTS_STREAM
from core.audit import audit
from core.courts import CourtTree
from core.identity import caller_guards, peer_of, session_resolver
from core.rights import Caller
from core.scope import sees
from media_server.analysis.alerts import LIVE_CHANNEL, item_of, merge
from media_server.analysis.settings import AnalysisSettings, SettingsStore
from media_server.streams import StreamClass, StreamDefinition, StreamRegistry

if TYPE_CHECKING:
    from control_room.role import ControlRoomRole

PAGE = 1000
MAX_SCANNED = 50_000
MAX_TIME_S = 1e11
URL_EXPIRES_S = 3600


class AlertQuery(BaseModel):
    stream: str = ""
    type: str = ""
    since: float | None = Field(default=None, ge=0, le=MAX_TIME_S)  # UNIX s: started since
    limit: int = Field(default=200, ge=1, le=1000)


class Ack(BaseModel):
    note: str = Field(default="", max_length=2000)


def build_alerts_router(role: "ControlRoomRole") -> APIRouter:
    router = APIRouter(prefix="/api/v1")
    state = role.storage.state
    objects = role.storage.objects
    tree = CourtTree(state)
    registry = StreamRegistry(state)
    settings_store = SettingsStore(state)
    _, require = caller_guards(session_resolver(state))

    async def court_of(item: dict[str, Any], cache: dict[str, str]) -> str:
        """An alert's court: its own, else its stream's (older alerts name only that)."""
        if item["court"] or not item["stream"]:
            return str(item["court"] or "")
        stream = str(item["stream"])
        if stream not in cache:
            definition = await registry.get(stream)
            cache[stream] = definition.court if definition is not None else ""
        return cache[stream]

    async def scan(caller: Caller, query: AlertQuery, alert_id: str = "") -> list[dict[str, Any]]:
        """Alerts started since query.since, newest first, folded from their entries."""
        low = f"{int(query.since * 1000)}" if query.since else "-"
        high = "+"
        later: dict[str, list[dict[str, Any]]] = {}  # alert id -> its later entries
        found: list[dict[str, Any]] = []
        courts: dict[str, str] = {}
        scanned = 0
        while scanned < MAX_SCANNED and len(found) < query.limit:
            page = await state.events_between(ALERTS_STREAM, low, high, PAGE)
            for entry_id, entry in page:
                phase = entry.get("phase")
                if phase and phase != "start":
                    later.setdefault(str(entry.get("alert")), []).append(entry)
                    continue
                item = item_of(entry_id, entry)
                if not await wanted(caller, item, query, alert_id, courts):
                    continue
                for update in reversed(later.pop(item["id"], [])):
                    merge(item, update)
                found.append(item)
            scanned += len(page)
            if len(page) < PAGE:
                break
            high = f"({page[-1][0]}"
        return found[: query.limit]

    async def wanted(
        caller: Caller,
        item: dict[str, Any],
        query: AlertQuery,
        alert_id: str,
        courts: dict[str, str],
    ) -> bool:
        if alert_id and item["id"] != alert_id:
            return False
        if query.stream and item["stream"] != query.stream:
            return False
        if query.type and item["type"] != query.type:
            return False
        item["court"] = await court_of(item, courts)
        return await sees(caller, item["court"], tree)

    async def with_urls(item: dict[str, Any]) -> dict[str, Any]:
        for name in ("snapshot", "clip"):
            if item[name]:
                item[name] = await objects.signed_url(item[name], URL_EXPIRES_S)
        return item

    async def one(caller: Caller, alert_id: str) -> dict[str, Any]:
        found = await scan(caller, AlertQuery(limit=1), alert_id)
        if not found:
            raise HTTPException(404, f"alert {alert_id!r} not found")
        return found[0]

    @router.get("/alerts", tags=["alerts"])
    async def list_alerts(
        caller: Annotated[Caller, require("see_alerts")],
        query: Annotated[AlertQuery, Query()],
    ) -> dict[str, Any]:
        items = await scan(caller, query)
        return {"items": [await with_urls(item) for item in items]}

    @router.get("/alerts/{alert_id}", tags=["alerts"])
    async def get_alert(
        alert_id: str, caller: Annotated[Caller, require("see_alerts")]
    ) -> dict[str, Any]:
        return await with_urls(await one(caller, alert_id))

    @router.post("/alerts/{alert_id}/ack", tags=["alerts"])
    async def ack_alert(
        alert_id: str,
        body: Ack,
        request: Request,
        caller: Annotated[Caller, require("ack_alerts")],
    ) -> dict[str, Any]:
        item = await one(caller, alert_id)
        entry = {
            "kind": item["type"],
            "phase": "ack",
            "alert": item["id"],
            "at": time.time(),
            "who": caller.name,
            "note": body.note,
        }
        await state.append_event(ALERTS_STREAM, entry, 90 * 86400)
        merge(item, entry)
        await audit(
            state,
            "alert.ack",
            caller.name,
            alert=item["id"],
            stream=item["stream"],
            type=item["type"],
            note=body.note,
            court=item["court"],
            peer=peer_of(request),
        )
        item = await with_urls(item)
        await state.publish(LIVE_CHANNEL, {"type": "alert", "phase": "ack", "alert": item})
        return item

    async def analysed_stream(caller: Caller, stream_id: str) -> StreamDefinition:
        definition = await registry.get(stream_id)
        if definition is None or not await sees(caller, definition.court, tree):
            raise HTTPException(404, f"stream {stream_id!r} not found")
        return definition

    async def current(definition: StreamDefinition) -> AnalysisSettings:
        stored = await settings_store.get(definition.id)
        if stored is not None:
            return stored
        return AnalysisSettings(enabled=definition.stream_class == StreamClass.security)

    @router.get("/streams/{stream_id}/analysis", tags=["streams"])
    async def get_analysis(
        stream_id: str, caller: Annotated[Caller, require("configure_analysis")]
    ) -> dict[str, Any]:
        return (await current(await analysed_stream(caller, stream_id))).model_dump()

    @router.put("/streams/{stream_id}/analysis", tags=["streams"])
    async def put_analysis(
        stream_id: str,
        body: AnalysisSettings,
        request: Request,
        caller: Annotated[Caller, require("configure_analysis")],
    ) -> dict[str, Any]:
        definition = await analysed_stream(caller, stream_id)
        before = (await current(definition)).model_dump()
        await settings_store.put(stream_id, body)
        after = body.model_dump()
        await audit(
            state,
            "stream.analysis",
            caller.name,
            stream=stream_id,
            before=before,
            after=after,
            court=definition.court,
            peer=peer_of(request),
        )
        return after

    return router
