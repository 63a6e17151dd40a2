"""Alert rules over HTTP (control_room/alert_rules.py):

- `GET /api/v1/alert-rules` (see_walls): the rules in the caller's scope, items with `name`,
  `types`, `streams`, `court`, `wall`, `tile`, `hold_s`, `updated_by`, `updated_at`.
- `PUT /api/v1/alert-rules/{name}` (change_walls) `{"types": [...], "streams": [ids] | "court":
  ID, "wall": NAME, "tile": INDEX, "hold_s": N}`: creates or replaces; audited
  `alert_rule.change` with before and after. The streams and the court must be in the caller's
  scope (else 404, as unknown ones); a court named by name is kept as its id.
- `DELETE /api/v1/alert-rules/{name}` (change_walls): audited `alert_rule.delete`.

A rule is in a caller's scope when its court is, or each of its streams is.
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations.
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, HTTPException, Request

from control_room.alert_rules import AlertRule, RuleStore, check_rule_name
from control_room.stream_scope import StreamScope
from core.audit import audit
from core.identity import caller_guards, peer_of, session_resolver
from core.rights import Caller

if TYPE_CHECKING:
    from control_room.role import ControlRoomRole


def _who(caller: Caller | None) -> str:
    return caller.name if caller is not None else "open-mode"


def build_alert_rules_router(role: "ControlRoomRole") -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["alerts"])
    state = role.storage.state
    rules: RuleStore = role.alert_rules.rules
    scope: StreamScope = role.stream_scope
    _, require = caller_guards(session_resolver(state), role.config.security.open)
    Viewer = Annotated[Caller | None, require("see_walls")]
    Changer = Annotated[Caller | None, require("change_walls")]

    async def in_scope(caller: Caller | None, rule: dict[str, Any]) -> bool:
        if rule.get("court") is not None:
            return await scope.sees_court(caller, str(rule["court"]))
        return all([await scope.find(caller, s) is not None for s in rule.get("streams") or []])

    async def visible(caller: Caller | None, name: str) -> dict[str, Any] | None:
        found = [v for v in await rules.views() if v["name"] == name]
        return found[0] if found and await in_scope(caller, found[0]) else None

    async def checked(caller: Caller | None, rule: AlertRule) -> AlertRule:
        """The rule with its court as an id, once its targets are known to be in scope."""
        if rule.court is not None:
            court = await scope.tree.resolve(rule.court)
            if court is None or not await scope.sees_court(caller, court):
                raise HTTPException(404, f"court {rule.court!r} not found")
            return rule.model_copy(update={"court": court})
        for stream_id in rule.streams or []:
            if await scope.find(caller, stream_id) is None:
                raise HTTPException(404, f"stream {stream_id!r} not found")
        return rule

    @router.get("/alert-rules")
    async def list_rules(caller: Viewer) -> list[dict[str, Any]]:
        return [v for v in await rules.views() if await in_scope(caller, v)]

    @router.put("/alert-rules/{name}")
    async def put_rule(
        name: str, body: AlertRule, request: Request, caller: Changer
    ) -> dict[str, Any]:
        try:
            check_rule_name(name)
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        before = await rules.get(name)
        if before is not None and await visible(caller, name) is None:
            raise HTTPException(404, f"rule {name!r} not found")  # another scope's rule
        rule = await checked(caller, body)
        await rules.put(name, rule, _who(caller))
        await audit(
            state,
            "alert_rule.change",
            _who(caller),
            rule=name,
            before=before.model_dump() if before else None,
            after=rule.model_dump(),
            court=rule.court or (caller.scope if caller else ""),
            peer=peer_of(request),
        )
        return await visible(caller, name) or {}

    @router.delete("/alert-rules/{name}")
    async def delete_rule(name: str, request: Request, caller: Changer) -> dict[str, str]:
        view = await visible(caller, name)
        if view is None or not await rules.delete(name):
            raise HTTPException(404, f"rule {name!r} not found")
        await audit(
            state,
            "alert_rule.delete",
            _who(caller),
            rule=name,
            before=view,
            court=view.get("court") or (caller.scope if caller else ""),
            peer=peer_of(request),
        )
        return {"deleted": name}

    return router
