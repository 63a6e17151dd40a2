"""The ASGI app uvicorn serves: hot paths first, then the FastAPI app.

A hot path (LL-HLS: several requests a second per viewer, each answered from memory) is
an ASGI callable that returns True when it answered the request and False to let the app
serve it. Everything else (API, pages, websockets, lifespan) goes to the app untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Receive, Scope, Send

HotPath = Callable[[Scope, Receive, Send], Awaitable[bool]]


class FrontDoor:
    """Dispatches HTTP requests by path prefix to hot paths before the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._hot: list[tuple[str, HotPath]] = []

    def add(self, prefix: str, hot: HotPath) -> None:
        """Requests whose path starts with prefix are offered to hot first."""
        self._hot.append((prefix, hot))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            for prefix, hot in self._hot:
                if path.startswith(prefix) and await hot(scope, receive, send):
                    return
        await self.app(scope, receive, send)
