"""Who is calling: the session token of a request, the caller it stands for, and FastAPI
guards that ask `core.rights` whether that caller may.

No `from __future__ import annotations` here: FastAPI must see the dependency closures
(current_caller in guard's annotation) at definition time.
"""

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Protocol

from fastapi import Depends, HTTPException, Request

from core import presence
from core.rights import PROVINCE, Caller, may

SESSION_COOKIE = "cc_session"

ResolveCaller = Callable[[Request], Awaitable[Caller | None]]
# a device's `Authorization` header -> the ids of its streams; raises CredentialError
DeviceStreams = Callable[[str], Awaitable[list[str]]]


class CredentialError(Exception):
    """A credential was refused; `reason` is what its holder is told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def no_devices(authorization: str) -> list[str]:
    raise CredentialError("no device registry on this node")


class PresenceReader(Protocol):
    """What resolving a session needs of the state store (StateStore has it)."""

    async def get_presence(self, kind: str, id: str, /) -> Mapping[str, Any] | None: ...


def session_key(token: str) -> str:
    """What a session is stored under: its token's digest, so the store's keys and a copy
    of them are no tokens (the publish keys are kept the same way)."""
    return hashlib.sha256(token.encode()).hexdigest()


def session_token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return request.cookies.get(SESSION_COOKIE)


async def caller_of_session(state: PresenceReader, token: str | None) -> Caller | None:
    """The signed-in user a session token stands for, or None."""
    if not token:
        return None
    session = await state.get_presence(presence.SESSION, session_key(token))
    if not session:
        return None
    scope = str(session.get("scope") or PROVINCE)
    return Caller(name=str(session["name"]), role=str(session["role"]), scope=scope)


def session_resolver(state: PresenceReader) -> ResolveCaller:
    async def resolve(request: Request) -> Caller | None:
        return await caller_of_session(state, session_token(request))

    return resolve


def peer_of(request: Request) -> str:
    """The client's address (uvicorn already put a trusted proxy's X-Forwarded-For here)."""
    return request.client.host if request.client else "?"


# What a route's dependencies carry so that a test walking the app's routes can tell a
# guarded route (it resolves the caller) from a route public by decision (it says why).
GUARD_MARK = "courtcast_guard"
PUBLIC_MARK = "courtcast_public"


def mark_guard(check: Any) -> Any:
    """Marks a dependency that refuses a request without its credential (a device's, say)."""
    setattr(check, GUARD_MARK, True)
    return check


def mark_public(endpoint: Any, reason: str) -> Any:
    """public() for a raw route's endpoint (no FastAPI dependencies there)."""
    setattr(endpoint, PUBLIC_MARK, reason)
    return endpoint


def public(reason: str) -> Any:
    """Marks a route reachable without sign-in, on purpose: `dependencies=[public("...")]`.
    The reason says what checks it instead (a play token, a device credential, nothing
    because it is the public portal). A route with neither this nor a guard is a defect."""

    async def public_route() -> None:
        return None

    setattr(public_route, PUBLIC_MARK, reason)
    return Depends(public_route)


def caller_guards(
    resolve: ResolveCaller,
    open_mode: bool = False,
) -> tuple[ResolveCaller, Callable[[str], Any]]:
    """`current_caller` (a dependency: the signed-in caller or None) and `require(right)`
    (a dependency that answers 401 without sign-in and 403 without the right). In open
    mode (local trials, loopback only) `require` lets everyone through, caller or None."""

    async def current_caller(request: Request) -> Caller | None:
        return await resolve(request)

    setattr(current_caller, GUARD_MARK, True)

    def require(right: str) -> Any:
        async def guard(caller: Annotated[Caller | None, Depends(current_caller)]) -> Any:
            if open_mode or may(caller, right):
                return caller
            if caller is None:
                raise HTTPException(401, "sign in first")
            raise HTTPException(403, f"role {caller.role} may not do this")

        setattr(guard, GUARD_MARK, True)
        return Depends(guard)

    return current_caller, require
