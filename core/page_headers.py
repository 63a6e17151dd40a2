"""Browser-side protections every answer carries (DESIGN.md §7): no framing (clickjacking
of the operator's and technicians' pages), no Referer (play tokens ride in URLs), no MIME
sniffing, and a Content-Security-Policy.

A page's policy allows its own inline <script> and <style> blocks by their SHA-256 only
(`page_headers`), never 'unsafe-inline': injected markup cannot run script. The
middleware gives every other answer a default policy; the API docs page, which loads
Swagger UI from its CDN, gets one that allows that.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PROTECTIONS = {
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
_LOCKED = "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
DEFAULT_POLICY = f"default-src 'self'; {_LOCKED}"
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https:; " + _LOCKED
)
DOCS_PATHS = ("/docs", "/redoc")
_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)


def page_policy(html: str) -> str:
    """The page's CSP: its own origin, plus its inline blocks by hash."""
    hashes: dict[str, list[str]] = {"script": [], "style": []}
    for tag, body in _INLINE.findall(html):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        hashes[tag].append(f"'sha256-{digest}'")
    return (
        f"default-src 'self'; script-src 'self' {' '.join(hashes['script'])}; "
        f"style-src 'self' {' '.join(hashes['style'])}; img-src 'self' data: blob:; "
        f"media-src 'self' blob:; connect-src 'self'; {_LOCKED}"
    )


def page_headers(html: str) -> dict[str, str]:
    """The headers a page is served with."""
    return {"Content-Security-Policy": page_policy(html), **PROTECTIONS}


class SecurityHeaders:
    """ASGI middleware: the protections on every HTTP answer that has not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = str(scope["path"]).startswith(DOCS_PATHS)

        async def send_protected(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in PROTECTIONS.items():
                    headers.setdefault(name, value)
                headers.setdefault(
                    "Content-Security-Policy", DOCS_POLICY if docs else DEFAULT_POLICY
                )
            await send(message)

        await self.app(scope, receive, send_protected)
