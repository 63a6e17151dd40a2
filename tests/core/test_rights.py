"""One definition of each role's rights, deny by default, and the guards every router uses."""

# No `from __future__ import annotations`: FastAPI reads the route's guard annotation.

from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Request

from core.identity import (
    SESSION_COOKIE,
    caller_guards,
    caller_of_session,
    session_key,
    session_token,
)
from core.rights import RIGHTS, ROLES, Caller, may


def test_every_right_names_known_roles_and_nobody_unnamed_holds_it() -> None:
    for right, roles in RIGHTS.items():
        assert roles <= set(ROLES), right
    assert not may(None, "watch_private")  # anonymous: nothing
    assert not may(Caller("x", "public"), "read_recordings")  # an unknown role: nothing
    assert may(Caller("a", "admin"), "manage_sessions")
    assert not may(Caller("t", "technician"), "watch_private")
    assert RIGHTS["define_streams"] == {"admin", "technician"}
    with pytest.raises(KeyError):
        may(Caller("a", "admin"), "no-such-right")  # a typo is an error, not a grant


class Sessions:
    """The state store's presence reading, over a dict (the guards need nothing more)."""

    def __init__(self, sessions: dict[str, dict[str, Any]]) -> None:
        self.sessions = sessions

    async def get_presence(self, kind: str, id: str, /) -> dict[str, Any] | None:
        assert kind == "session"
        return self.sessions.get(id)


async def test_session_token_from_bearer_or_cookie_and_caller_resolved() -> None:
    state = Sessions({session_key("t1"): {"name": "ann", "role": "clerk"}})
    assert await caller_of_session(state, "t1") == Caller("ann", "clerk")
    assert await caller_of_session(state, session_key("t1")) is None, "the digest is no token"
    assert await caller_of_session(state, "nope") is None
    assert await caller_of_session(state, None) is None
    bearer = Request({"type": "http", "headers": [(b"authorization", b"Bearer t1")]})
    cookie = Request({"type": "http", "headers": [(b"cookie", f"{SESSION_COOKIE}=t2".encode())]})
    assert session_token(bearer) == "t1" and session_token(cookie) == "t2"


@pytest.mark.parametrize("open_mode", [False, True])
async def test_guards_answer_401_403_or_let_through(open_mode: bool) -> None:
    callers = {"clerk": Caller("ann", "clerk"), "operator": Caller("bob", "operator")}

    async def resolve(request: Request) -> Caller | None:
        return callers.get(request.headers.get("x-who", ""))

    _, require = caller_guards(resolve, open_mode)
    app = FastAPI()

    @app.get("/export")
    async def export(caller: Annotated[Caller | None, require("manage_sessions")]) -> str:
        return caller.name if caller else "anyone"

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        nobody = await http.get("/export")
        operator = await http.get("/export", headers={"x-who": "operator"})
        clerk = await http.get("/export", headers={"x-who": "clerk"})
    assert clerk.status_code == 200 and clerk.json() == "ann"
    if open_mode:  # local trials: everyone through, as before
        assert (nobody.status_code, operator.status_code) == (200, 200)
    else:
        assert nobody.status_code == 401 and operator.status_code == 403
