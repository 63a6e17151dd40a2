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
from core.rights import Caller, may

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
    return Caller(name=str(session["name"]), role=str(session["role"]))


def session_resolver(state: PresenceReader) -> ResolveCaller:
    async def resolve(request: Request) -> Caller | None:
        return await caller_of_session(state, session_token(request))

    return resolve


def caller_guards(
    resolve: ResolveCaller,
    open_mode: bool = False,
) -> tuple[ResolveCaller, Callable[[str], Any]]:
    """`current_caller` (a dependency: the signed-in caller or None) and `require(right)`
    (a dependency that answers 401 without sign-in and 403 without the right). In open
    mode (local trials, loopback only) `require` lets everyone through, caller or None."""

    async def current_caller(request: Request) -> Caller | None:
        return await resolve(request)

    def require(right: str) -> Any:
        async def guard(caller: Annotated[Caller | None, Depends(current_caller)]) -> Any:
            if open_mode or may(caller, right):
                return caller
            if caller is None:
                raise HTTPException(401, "sign in first")
            raise HTTPException(403, f"role {caller.role} may not do this")

        return Depends(guard)

    return current_caller, require
