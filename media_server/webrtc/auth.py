"""The authorization hooks the control room passes in, and the Bearer credential."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

# raise fastapi.HTTPException to refuse; return to allow
AuthorizePlay = Callable[[Request, str], Awaitable[None]]
AuthorizePublish = Callable[[Request, str, str | None], Awaitable[None]]
# a viewer authorize_play let in, to be checked again while it watches (admissions.py):
# (request, stream_id, cut(reason), ended())
AdmitViewer = Callable[[Request, str, Callable[[str], object], Callable[[], bool]], Awaitable[None]]


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (WHIP's stream key)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None
