"""Request bodies capped before they are read: an ASGI middleware in front of everything.

A declared Content-Length over the route's cap is answered 413 at once, without waiting
for a byte of the body (a handler that reads first would wait for a body a hostile client
never sends, or hold all of it in memory). A body with no length (chunked) is counted as
it streams in and cut off at the cap: the app then sees the client gone, and the client
gets the 413. Either way the connection closes, so the unread rest is never parsed.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})  # LL-HLS: no per-request work


class BodyLimit:
    """Caps by path prefix (first match), `default` for every other path."""

    def __init__(self, app: ASGIApp, default: int, caps: list[tuple[str, int]]) -> None:
        self.app = app
        self.default = default
        self.caps = caps

    def cap_for(self, path: str) -> int:
        return next((cap for prefix, cap in self.caps if path.startswith(prefix)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in NO_BODY:
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > cap:
            await _refuse(send, cap, declared)
            return
        await _Guarded(self.app, cap).run(scope, receive, send)


class _Guarded:
    """One request whose body is counted as the app reads it."""

    def __init__(self, app: ASGIApp, cap: int) -> None:
        self.app, self.cap = app, cap
        self.received = 0
        self.started = False  # the app began its response
        self.refused = False  # we answered 413: what the app sends is dropped

    async def run(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def counted() -> Message:
            if self.refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                self.received += len(message.get("body", b""))
                if self.received > self.cap and not self.started:
                    self.refused = True
                    await _refuse(send, self.cap, None)
                    return {"type": "http.disconnect"}
            return message

        async def tracked(message: Message) -> None:
            if self.refused:
                return
            if message["type"] == "http.response.start":
                self.started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except Exception:
            if not self.refused:  # the app's own failure: not ours to hide
                raise


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser refuses it before we are called
    return None


async def _refuse(send: Send, cap: int, declared: int | None) -> None:
    what = f"a body of {declared} bytes" if declared is not None else "a longer body"
    body = json.dumps({"detail": f"{what} is too large here: at most {cap} bytes"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
