"""The court clerks' pages: /sessions (open, recess, resume, close a trial session) and
/recordings (find, see the timeline, play, export, verify). The HTML is the same for
everyone and holds no data; the page signs the person in and reads the guarded API."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from core.identity import public
from core.web.pages import Page


def make_clerk_pages_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)
    marked = [public("the page alone: its data comes from the guarded API")]
    for name in ("sessions", "recordings"):
        serve = _serving(Page.load("recorder.pages", f"{name}.html"))
        router.add_api_route(
            f"/{name}", serve, methods=["GET"], response_class=HTMLResponse, dependencies=marked
        )
    return router


def _serving(page: Page) -> Callable[[Request], Awaitable[HTMLResponse]]:
    async def serve(request: Request) -> HTMLResponse:
        return page.response(request)

    return serve
