"""The RTMP server: publish into the hub and play from it, on our own asyncio code.

URLs: rtmp://HOST:PORT/live/{stream_id}?key=KEY. The key may also ride on the app or
tcUrl (OBS: server rtmp://HOST/live?key=KEY, or stream key "{stream_id}?key=KEY").
Every connection is its own task; anything it does wrong (bad bytes, refused key, a slow
socket) ends that connection with a logged reason and never touches the others.
A connection is an RtmpSession (session.py: the commands) over an RtmpTransport
(transport.py: the bytes and their flow control).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.per_address import PerAddress
from media_server.hub import Hub
from media_server.rtmp.session import RtmpSession
from media_server.rtmp.transport import RtmpTransport

log = logging.getLogger(__name__)

PENDING_SLACK = 256 * 1024

Authorize = Callable[[str, str | None, str, str], Awaitable[None]]
# a player let in: (stream_id, key, cut(reason), ended()), to be checked again while it plays
AdmitPlayer = Callable[[str, str | None, Callable[[str], object], Callable[[], bool]], None]


@dataclass
class RtmpStats:
    """Counters for /metrics (RtmpCollector in media_server/stats.py)."""

    connections_total: int = 0
    connections_open: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    reads: int = 0  # socket reads (read_batching.py keeps them few)
    refused: int = 0
    protocol_errors: int = 0
    publishing: int = 0
    playing: int = 0


@dataclass(frozen=True)
class RtmpLimits:
    handshake_timeout: float = 10.0
    # from the handshake to publish or play: a deadline, not reset by pings
    idle_timeout: float = 15.0
    publish_timeout: float = 30.0  # a publisher silent this long is gone
    write_timeout: float = 20.0  # a player that takes nothing for this long is dropped
    max_connections: int = 2000
    max_connections_per_address: int = 64  # a flood from one address leaves room for others
    window_ack_size: int = 2_500_000
    chunk_size: int = 4096
    max_message: int = 8 * 1024 * 1024  # far above any real frame, far below a DoS

    @property
    def max_pending(self) -> int:
        """Bytes of unfinished messages a connection may hold: one largest message, and
        room for the small audio ones interleaved with it."""
        return self.max_message + PENDING_SLACK


class RtmpServer:
    def __init__(
        self,
        hub: Hub,
        host: str = "0.0.0.0",
        port: int = 1935,
        authorize: Authorize | None = None,
        *,
        app: str = "live",
        limits: RtmpLimits | None = None,
        sock: socket.socket | None = None,
        admit_player: AdmitPlayer | None = None,
    ) -> None:
        """authorize(stream_id, key, "publish" | "play", peer) raises RtmpRefused
        (errors.py) to refuse; None lets everyone in (open mode, local trials only).
        sock: an already bound listening socket (the platform binds early so a busy port
        is a config error). admit_player, if given, is told of every player let in."""
        self.hub = hub
        self.host = host
        self._port = port
        self._sock = sock
        self.authorize = authorize
        self.admit_player = admit_player
        self.app = app
        self.limits = limits or RtmpLimits()
        self.stats = RtmpStats()
        self._server: asyncio.Server | None = None
        self._connections: set[RtmpTransport] = set()
        self._per_address = PerAddress(self.limits.max_connections_per_address)
        self._started = time.monotonic()

    @property
    def port(self) -> int:
        """The bound port (the real one when constructed with port 0)."""
        if self._server is not None and self._server.sockets:
            return int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._sock is not None:
            self._server = await loop.create_server(lambda: RtmpSession(self), sock=self._sock)
        else:
            self._server = await loop.create_server(
                lambda: RtmpSession(self), self.host, self._port
            )
        log.info("RTMP listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        closing = [c.close("server shutting down") for c in list(self._connections)]
        tasks = [t for t in closing if t is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=1)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def uptime_ms(self) -> int:
        return int((time.monotonic() - self._started) * 1000)

    def _accept(self, conn: RtmpTransport) -> bool:
        """Count a new connection in; False (and closed) when over the limit."""
        if len(self._connections) >= self.limits.max_connections:
            log.warning("rtmp %s: refused, %d connections open", conn.peer, len(self._connections))
            self.stats.refused += 1
            return False
        if not self._per_address.acquire(conn.host):
            log.warning("rtmp %s: refused, too many connections from this address", conn.peer)
            self.stats.refused += 1
            return False
        self._connections.add(conn)
        self.stats.connections_total += 1
        self.stats.connections_open += 1
        return True

    def _forget(self, conn: RtmpTransport) -> None:
        self._connections.discard(conn)
        self._per_address.release(conn.host)
        self.stats.connections_open -= 1
