"""The audit trail over HTTP: `GET /api/v1/audit` (admins; JSON, or CSV with
`?format=csv`, also `/api/v1/audit.csv`), newest first, filtered by user, action, court
(its subtree) and time. A scoped admin reads the entries of its own subtree only.

Entries are read from the Redis stream backwards in pages; one request reads at most
MAX_SCANNED entries, so a filter matching nothing in a long trail is bounded work.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations.
import csv
import io
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from core.audit import AUDIT_STREAM
from core.courts import CourtTree
from core.identity import caller_guards, session_resolver
from core.rights import Caller
from core.scope import sees

if TYPE_CHECKING:
    from control_room.role import ControlRoomRole

PAGE = 1000
MAX_SCANNED = 100_000
MAX_TIME_S = 1e11  # a stream id is milliseconds in 64 bits; this is the year 5138
CSV_COLUMNS = ("at", "who", "action", "court", "peer", "details")


class AuditQuery(BaseModel):
    """The filters: who did it, what (`stream` covers `stream.view`, ...), in which court's
    subtree, and when (UNIX seconds, both ends included); at most `limit`, newest first."""

    user: str = ""
    action: str = ""
    court: str = ""
    since: float | None = Field(default=None, ge=0, le=MAX_TIME_S)
    until: float | None = Field(default=None, ge=0, le=MAX_TIME_S)
    limit: int = Field(default=1000, ge=1, le=10_000)


def matches_action(action: str, wanted: str) -> bool:
    """`stream` matches `stream.view`, `stream.update`, ...; `stream.view` only itself."""
    return not wanted or action == wanted or action.startswith(f"{wanted}.")


def as_csv(entries: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        at = datetime.fromtimestamp(float(entry.get("at", 0)), UTC).isoformat()
        rest = {k: v for k, v in entry.items() if k not in CSV_COLUMNS and k != "id"}
        writer.writerow(
            (
                at,
                entry.get("who", ""),
                entry.get("action", ""),
                entry.get("court", ""),
                entry.get("peer", ""),
                json.dumps(rest, ensure_ascii=False, sort_keys=True),
            )
        )
    return out.getvalue()


def build_audit_router(role: "ControlRoomRole") -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["audit"])
    state = role.storage.state
    tree = CourtTree(state)
    _, require = caller_guards(session_resolver(state))

    async def read(caller: Caller, query: AuditQuery) -> list[dict[str, Any]]:
        user, action, court, limit = query.user, query.action, query.court, query.limit
        since, until = query.since, query.until
        low = f"{int(since * 1000)}" if since else "-"
        high = f"{int(until * 1000)}" if until else "+"
        found: list[dict[str, Any]] = []
        scanned = 0
        while scanned < MAX_SCANNED:
            page = await state.events_between(AUDIT_STREAM, low, high, PAGE)
            for event_id, entry in page:
                if await wanted(caller, entry, user, action, court):
                    found.append({"id": event_id, **entry})
            scanned += len(page)
            if len(page) < PAGE or len(found) >= limit:
                break
            high = f"({page[-1][0]}"  # exclusive: on from the oldest read
        return found[:limit]

    async def wanted(
        caller: Caller, entry: dict[str, Any], user: str, action: str, court: str
    ) -> bool:
        entry_court = str(entry.get("court") or "")
        if user and entry.get("who") != user:
            return False
        if not matches_action(str(entry.get("action", "")), action):
            return False
        if court and not await tree.within(entry_court, court):
            return False
        return await sees(caller, entry_court, tree)

    async def answer(caller: Caller, fmt: str, query: AuditQuery) -> Any:
        if query.court:
            court = await tree.resolve(query.court)
            if court is None or not await sees(caller, court, tree):
                raise HTTPException(404, f"court {query.court!r} not found")
            query = query.model_copy(update={"court": court})
        entries = await read(caller, query)
        if fmt == "csv":
            return Response(
                as_csv(entries),
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
            )
        return {"entries": entries}

    @router.get("/audit")
    async def get_audit(
        caller: Annotated[Caller, require("read_audit")],
        query: Annotated[AuditQuery, Query()],
        fmt: Annotated[str, Query(alias="format", pattern="^(json|csv)$")] = "json",
    ) -> Any:
        return await answer(caller, fmt, query)

    @router.get("/audit.csv")
    async def get_audit_csv(
        caller: Annotated[Caller, require("read_audit")],
        query: Annotated[AuditQuery, Query()],
    ) -> Any:
        return await answer(caller, "csv", query)

    return router
