"""Who is calling: the session token of a request, and FastAPI guards for roles.

No `from __future__ import annotations` here: FastAPI must see the dependency closures
(current_caller in guard's annotation) at definition time.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request

from control_room.users import Users
from media_server.access import Caller

SESSION_COOKIE = "cc_session"


def session_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(SESSION_COOKIE)


def caller_guards(
    users: Users,
) -> tuple[Callable[[Request], Awaitable[Caller | None]], Callable[..., Any]]:
    """`current_caller` (a dependency: the signed-in caller or None) and `require(*roles)`
    (a dependency that answers 401 without sign-in and 403 for another role)."""

    async def current_caller(request: Request) -> Caller | None:
        return await users.caller(session_token(request))

    def require(*roles: str) -> Any:
        async def guard(caller: Annotated[Caller | None, Depends(current_caller)]) -> Caller:
            if caller is None:
                raise HTTPException(401, "sign in first")
            if caller.role not in roles:
                raise HTTPException(403, f"role {caller.role} may not do this")
            return caller
        return Depends(guard)

    return current_caller, require
