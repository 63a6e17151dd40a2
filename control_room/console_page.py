"""The operator console's page, /control (control_room/pages/control.html).

The page alone is public: everything it shows comes from the guarded API and the events
websocket, and its code asks a visitor who is not signed in to sign in first.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from core.identity import public
from core.web.pages import Page


def build_console_router() -> APIRouter:
    router = APIRouter()
    page = Page.load("control_room.pages", "control.html")

    @router.get(
        "/control",
        response_class=HTMLResponse,
        include_in_schema=False,
        dependencies=[public("the page alone: its data comes from the guarded API")],
    )
    async def control_page(request: Request) -> HTMLResponse:
        return page.response(request)

    return router
