"""The court tree over HTTP (/api/v1/courts): list (each user its own subtree) and add.

A scoped admin adds courts only under a court of its subtree; a root court (no parent) is
the province's to add. Every addition goes to the audit trail.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations.
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from core.audit import audit
from core.courts import Court, CourtError, CourtTree
from core.identity import caller_guards, peer_of, session_resolver
from core.rights import PROVINCE, Caller
from core.scope import sees

if TYPE_CHECKING:
    from control_room.role import ControlRoomRole


class CourtIn(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=200)
    name_en: str = Field(default="", max_length=200)
    level: str = ""
    parent: str = ""


def court_view(court: Court, rooms: list[dict[str, Any]]) -> dict[str, Any]:
    return {**court.to_record(), "rooms": [r["name"] for r in rooms if r["court"] == court.id]}


def build_courts_router(role: "ControlRoomRole") -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["courts"])
    state = role.storage.state
    tree = CourtTree(state)
    _, require = caller_guards(session_resolver(state))

    @router.get("/courts")
    async def list_courts(caller: Annotated[Caller, require("see_courts")]) -> list[dict[str, Any]]:
        rooms = await tree.rooms()
        return [
            court_view(c, rooms) for c in await tree.ordered() if await sees(caller, c.id, tree)
        ]

    @router.get("/courts/{court_id}")
    async def get_court(
        court_id: str, caller: Annotated[Caller, require("see_courts")]
    ) -> dict[str, Any]:
        court = (await tree.courts(fresh=True)).get(court_id)
        if court is None or not await sees(caller, court.id, tree):
            raise HTTPException(404, f"court {court_id!r} not found")
        return court_view(court, await tree.rooms())

    @router.post("/courts", status_code=201)
    async def add_court(
        body: CourtIn, request: Request, caller: Annotated[Caller, require("manage_courts")]
    ) -> dict[str, Any]:
        existing = (await tree.courts(fresh=True)).get(body.id)
        if caller.scope != PROVINCE:
            # under a court of its subtree, and never its own court's place in the tree
            if not body.parent or not await sees(caller, body.parent, tree):
                raise HTTPException(404, f"court {body.parent!r} not found")
            if existing is not None and not await sees(caller, existing.id, tree):
                raise HTTPException(409, f"court id {body.id!r} is taken")
            if body.id == caller.scope:
                raise HTTPException(403, "a scoped admin may not move its own court")
        try:
            court = await tree.add(Court(**body.model_dump()))
        except CourtError as exc:
            raise HTTPException(422, str(exc)) from None
        await audit(
            state,
            "court.add" if existing is None else "court.change",
            caller.name,
            court=court.id,
            after=court.to_record(),
            peer=peer_of(request),
        )
        return court_view(court, await tree.rooms())

    return router
