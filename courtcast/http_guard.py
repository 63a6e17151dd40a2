"""uvicorn's HTTP protocol with the guards it lacks against slow and greedy clients.

uvicorn (httptools) arms no timer until a first response is sent: a client that opens a
connection and sends its headers a byte at a time (slowloris) holds it for ever, and
uvicorn's own connection cap (limit_concurrency) then answers everyone else 503. So each
request must bring its whole request line and headers within `header_timeout_s` of its
first byte (of the connection, for the first one), in at most `max_header_bytes` (431
beyond), and one address may have at most `max_unfinished_per_address` connections whose
headers are not complete; the one over is closed at once. A proxy in front (nginx, Caddy)
sends whole headers, so the per-address cap never holds it back.

A subclass of uvicorn's protocol (uvicorn.Config takes the class), overriding its parser
callbacks; `check()` fails at start if an uvicorn upgrade renamed them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.per_address import PerAddress

HOOKS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
)
TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


@dataclass(frozen=True)
class HeaderLimits:
    timeout_s: float = 10.0
    max_bytes: int = 64 * 1024
    max_unfinished_per_address: int = 64


def check() -> None:
    missing = [name for name in HOOKS if not hasattr(HttpToolsProtocol, name)]
    if missing:
        raise RuntimeError(f"uvicorn's HttpToolsProtocol lacks {missing}: http_guard needs them")


def guarded_protocol(limits: HeaderLimits) -> type[GuardedHttp]:
    """A protocol class for uvicorn.Config(http=...), with its own per-address counts."""
    check()
    return type(
        "GuardedHttp",
        (GuardedHttp,),
        {"limits": limits, "unfinished": PerAddress(limits.max_unfinished_per_address)},
    )


class GuardedHttp(HttpToolsProtocol):
    limits: ClassVar[HeaderLimits]
    unfinished: ClassVar[PerAddress]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address = ""
        self._waiting = False  # headers of a request begun and not complete
        self._header_bytes = 0
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._address = self.client[0] if self.client else ""
        self._begin()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._waiting:  # these bytes did not complete the headers
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_bytes and not self.transport.is_closing():
                self.transport.write(TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._waiting:  # a next request on a kept-alive connection
            self._begin()

    def on_headers_complete(self) -> None:
        self._end()
        super().on_headers_complete()

    def _begin(self) -> None:
        if not self.unfinished.acquire(self._address):
            self.transport.close()
            return
        self._waiting = True
        self._header_bytes = 0
        self._deadline = self.loop.call_later(self.limits.timeout_s, self._too_slow)

    def _end(self) -> None:
        if self._waiting:
            self._waiting = False
            self.unfinished.release(self._address)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self._waiting and not self.transport.is_closing():
            self.transport.close()
