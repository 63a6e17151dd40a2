"""The public's pages, no sign-in (issue 16): `/`, the portal (trials live now, upcoming
and finished with replay, filtered by court and date), and `/watch/{session_id}`, the
player of one trial, live (delayed) or replay.

Both are static pages in the person's language (core/web/pages.py); their data is the
public list of the recorder's API (`GET /api/v1/public/sessions` and `.../{id}`), which
says nothing of a session not approved for broadcast, so the pages cannot either. The
code is core/web/static/pages/portal.js and watch.js.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from core.identity import public
from core.web.pages import Page


def build_portal_router() -> APIRouter:
    router = APIRouter(include_in_schema=False, dependencies=[public("the public portal's pages")])
    portal = Page.load("control_room", "pages/portal.html")
    watch = Page.load("control_room", "pages/watch.html")

    @router.get("/", response_class=HTMLResponse)
    async def portal_page(request: Request) -> HTMLResponse:
        return portal.response(request)

    @router.get("/watch/{session_id}", response_class=HTMLResponse)
    async def watch_page(session_id: str, request: Request) -> HTMLResponse:
        return watch.response(request)  # the page asks the API; an unknown id says so

    return router
