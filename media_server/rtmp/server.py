"""The RTMP server: publish into the hub and play from it, on our own asyncio code.

URLs: rtmp://HOST:PORT/live/{stream_id}?key=KEY. The key may also ride on the app or
tcUrl (OBS: server rtmp://HOST/live?key=KEY, or stream key "{stream_id}?key=KEY").
Every connection is its own task; anything it does wrong (bad bytes, refused key, a slow
socket) ends that connection with a logged reason and never touches the others.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NoReturn, cast
from urllib.parse import parse_qs

from media_server.hub import Hub, StreamBusy
from media_server.media import Item, StreamEnd
from media_server.rtmp import amf0, handshake
from media_server.rtmp.chunk import (
    ABORT,
    ACKNOWLEDGEMENT,
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    TS_MASK,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    ChunkReader,
    ChunkWriter,
    Message,
)
from media_server.rtmp.errors import RtmpProtocolError
from media_server.rtmp.flv import split_aggregate
from media_server.rtmp.play import CSID_DATA, PlayOut
from media_server.rtmp.publish import Ingest
from media_server.rtmp.read_batching import MAX_BYTES as BATCH_MAX
from media_server.rtmp.read_batching import ReadBatching

log = logging.getLogger(__name__)

Authorize = Callable[[str, str | None, str, str], Awaitable[None]]

CSID_CONTROL, CSID_COMMAND = 2, 3
STREAM_BEGIN, STREAM_EOF, PING_REQUEST, PING_RESPONSE = 0, 1, 6, 7
READ_SIZE = 64 * 1024
MAX_NAME = 256
_U32 = struct.Struct(">I")


class RtmpRefused(Exception):
    """Raised by authorize() to refuse a publish or play; reason goes to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Closing(Exception):
    """End this connection; reason is logged (warning when the peer did wrong)."""

    def __init__(self, reason: str, warn: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.warn = reason, warn


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
    idle_timeout: float = 30.0  # connected but neither publishing nor playing
    publish_timeout: float = 30.0  # a publisher silent this long is gone
    write_timeout: float = 20.0  # a player that takes nothing for this long is dropped
    max_connections: int = 2000
    window_ack_size: int = 2_500_000
    chunk_size: int = 4096
    max_message: int = 8 * 1024 * 1024  # far above any real frame, far below a DoS


def split_query_key(text: str) -> tuple[str, str | None]:
    """'name?key=K&x=y' -> ('name', 'K'); no key -> ('name', None)."""
    base, _, query = text.partition("?")
    keys = parse_qs(query).get("key") if query else None
    return base, (keys[0] if keys else None)


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
    ) -> None:
        """authorize(stream_id, key, "publish" | "play", peer) raises RtmpRefused to refuse;
        None lets everyone in (open mode, local trials only). sock: an already bound
        listening socket (the platform binds early so a busy port is a config error)."""
        self.hub = hub
        self.host = host
        self._port = port
        self._sock = sock
        self.authorize = authorize
        self.app = app
        self.limits = limits or RtmpLimits()
        self.stats = RtmpStats()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
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
            self._server = await loop.create_server(lambda: _Connection(self), sock=self._sock)
        else:
            self._server = await loop.create_server(
                lambda: _Connection(self), self.host, self._port
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

    def _accept(self, conn: _Connection) -> bool:
        """Count a new connection in; False (and closed) when over the limit."""
        if len(self._connections) >= self.limits.max_connections:
            log.warning("rtmp %s: refused, %d connections open", conn.peer, len(self._connections))
            self.stats.refused += 1
            return False
        self._connections.add(conn)
        self.stats.connections_total += 1
        self.stats.connections_open += 1
        return True

    def _forget(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        self.stats.connections_open -= 1


class _Connection(asyncio.BufferedProtocol):
    """One RTMP connection: an asyncio Protocol, so media is parsed as it is received,
    with no task wake-up, future or StreamReader copy per read (~18 reads a second per
    publisher, batched by read_batching.py; ~110 without). Buffered: the transport reads
    into our buffer (recv_into); a plain Protocol's recv(256 KiB) costs ~18 us more per
    read here, in allocating its result. Everything else (handshake, commands, control
    messages) runs in order in the connection's task; while it has messages to handle,
    reading is paused, so media never overtakes the command before it (a publish being
    authorized)."""

    def __init__(self, server: RtmpServer) -> None:
        self.server, self.stats, self.limits = server, server.stats, server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.chunks_in = ChunkReader(max_message=self.limits.max_message)
        self.chunks_out = ChunkWriter()
        self.phase = "handshake"
        self.app_key: str | None = None
        self.connected = False
        self.next_stream_id = 1
        self.ingest: Ingest | None = None
        self.publish_msid = 0
        self.batching: ReadBatching | None = None  # while publishing
        self.play_task: asyncio.Task[None] | None = None
        self.close_reason: _Closing | None = None
        self.task: asyncio.Task[Any] | None = None
        self.ack_every = 0  # bytes between our Acknowledgements (the peer's window)
        self.received = 0
        self.acked = 0
        self._buffer = memoryview(bytearray(READ_SIZE))  # what the transport reads into
        self._raw: bytearray | None = bytearray()  # handshake bytes; None once chunks flow
        self._backlog: deque[tuple[Message, float]] = deque()  # for the task, in order
        self._failure: BaseException | None = None  # raised in the task (logged there)
        self._eof = False
        self._last_data = self.loop.time()
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._lost = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = self.loop.create_future()

    # -- protocol callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not an asyncio.Transport subclass: no isinstance)
        self.transport = cast(asyncio.Transport, transport)
        addr = transport.get_extra_info("peername")
        self.peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        if not self.server._accept(self):
            transport.close()
            return
        self.task = self.loop.create_task(self.run())

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._raw is None and self._failure is None:  # chunks flow: the hot path
            stats = self.stats
            stats.bytes_in += nbytes
            stats.reads += 1
            self._last_data = self.loop.time()
            self._feed(self._buffer[:nbytes])
        else:
            self.data_received(self._buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        self.stats.bytes_in += len(data)
        self.stats.reads += 1
        self._last_data = self.loop.time()
        if self._raw is not None:  # the handshake: the task takes exact sizes
            self._raw += data
            self._wake()
        elif self._failure is None:
            self._feed(data)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # half-open: what we still send goes out; the task closes

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = self._eof = True
        if exc is not None and self._failure is None:
            self._failure = exc
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionResetError("Connection lost"))
        self._drain_waiters.clear()
        if not self._closed.done():
            self._closed.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        for waiter in self._drain_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._drain_waiters.clear()

    # -- the hot path --

    def _feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse chunks; media goes to the ingest here and now, anything else (and all
        that follows it) to the task, with reading paused until it is done."""
        # every message of every publisher passes here: the common cases make as few
        # calls as they can
        self.received += len(data)
        backlog = self._backlog
        try:
            messages = self.chunks_in.feed(data)
            if messages:
                arrival = time.time()
                for msg in messages:
                    kind = msg.type_id
                    if not backlog and kind in (VIDEO, AUDIO):
                        self._media(kind, msg.timestamp, msg.payload, arrival)
                    else:
                        backlog.append((msg, arrival))
        except Exception as exc:  # noqa: BLE001 - re-raised in the task, which logs it
            self._fail(exc)
            return
        if backlog:
            self._pause_reading()
            self._wake()
        elif self.ack_every and self.received - self.acked >= self.ack_every:
            self._acknowledge()

    def _fail(self, exc: BaseException) -> None:
        if self._failure is None:
            self._failure = exc
        self._pause_reading()
        self._wake()

    def _pause_reading(self) -> None:
        if self.transport is not None and self.transport.is_reading():
            self.transport.pause_reading()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = self.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- life cycle --

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.server._forget(self)

    async def _run(self) -> None:
        reason, warn = "client closed the connection", False
        try:
            async with asyncio.timeout(self.limits.handshake_timeout):
                await self._handshake()
            self.phase = "waiting for publish or play"
            await self._read_loop()
        except _Closing as exc:
            reason, warn = exc.reason, exc.warn
        except RtmpProtocolError as exc:
            self.stats.protocol_errors += 1
            reason, warn = f"protocol error: {exc}", True
        except TimeoutError:
            reason, warn = f"timed out ({self.phase})", True
        except (ConnectionError, asyncio.IncompleteReadError):
            reason = f"connection lost ({self.phase})"
        except asyncio.CancelledError:
            await self._cleanup("server shutting down")
            raise
        except Exception:  # a bug of ours must not take the server down
            log.exception("rtmp %s: internal error (%s)", self.peer, self.phase)
            reason, warn = "internal error", True
        if self.close_reason is not None:
            reason, warn = self.close_reason.reason, self.close_reason.warn
        await self._cleanup(reason)
        log.log(logging.WARNING if warn else logging.INFO, "rtmp %s: closed: %s", self.peer, reason)

    def close(self, reason: str) -> asyncio.Task[Any] | None:
        """Ask this connection to end (from outside its task)."""
        self.close_reason = self.close_reason or _Closing(reason, warn=False)
        assert self.transport is not None
        if self.transport.get_write_buffer_size():
            self.transport.abort()  # a stuck peer would hold close() for ever
        else:
            self.transport.close()
        return self.task

    def _close_transport(self) -> None:
        assert self.transport is not None
        self.transport.close()

    async def _cleanup(self, reason: str) -> None:
        if self.play_task is not None:
            self.play_task.cancel()
            self.stats.playing -= 1
        if self.ingest is not None:
            self.ingest.publication.close(reason)
            self.stats.publishing -= 1
            self.ingest = None
        self._stop_batching()
        assert self.transport is not None
        self.transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._closed), 2)
        except TimeoutError:
            self.transport.abort()  # the peer reads nothing: drop what is unsent

    async def _read_exactly(self, size: int) -> bytes:
        """size handshake bytes, as StreamReader.readexactly gave them."""
        raw = self._raw
        assert raw is not None
        while len(raw) < size:
            if self._failure is not None:
                raise self._failure
            if self._eof:
                raise asyncio.IncompleteReadError(bytes(raw), size)
            await self._wait()
        data = bytes(raw[:size])
        del raw[:size]
        return data

    async def _handshake(self) -> None:
        first = await self._read_exactly(1)
        handshake.check_c0(first[0])  # fail fast on HTTP/TLS without waiting for 1536 bytes
        c0c1 = first + await self._read_exactly(handshake.PACKET_SIZE)
        self._write(handshake.server_response(c0c1, self.server.uptime_ms()))
        await self._drain()
        await self._read_exactly(handshake.PACKET_SIZE)
        rest, self._raw = self._raw, None
        if rest:  # the client's first chunks came with C2
            self._feed(rest)

    async def _read_loop(self) -> None:
        while True:
            await self._handle_backlog()
            if self._failure is not None:
                raise self._failure
            if self._eof:
                return
            assert self.transport is not None
            if not self.transport.is_reading():
                self.transport.resume_reading()
            await self._wait_for_messages(self._read_timeout())

    async def _handle_backlog(self) -> None:
        """The messages data_received left to the task, in arrival order."""
        backlog = self._backlog
        while backlog:
            msg, arrival = backlog[0]
            if msg.type_id == VIDEO or msg.type_id == AUDIO:
                self._media(msg.type_id, msg.timestamp, msg.payload, arrival)
            else:
                await self._message(msg, arrival)
            backlog.popleft()
        self._last_data = self.loop.time()  # the read timeout is for reads only
        self._acknowledge()

    async def _wait_for_messages(self, timeout: float | None) -> None:
        """Until the task has something to do; TimeoutError after timeout s without data.
        The deadline is checked lazily: data only moves _last_data, no timer per read."""
        while True:
            if self._backlog or self._failure is not None or self._eof:
                return
            if timeout is None:
                await self._wait()
                return
            deadline = self._last_data + timeout
            if self.loop.time() >= deadline:
                raise TimeoutError
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wait()
                return
            except TimeoutError:
                continue  # data may have come meanwhile: check against _last_data

    def _read_timeout(self) -> float | None:
        if self.ingest is not None:
            self.phase = "publishing"
            return self.limits.publish_timeout
        if self.play_task is not None:
            self.phase = "playing"
            return None  # players may stay silent; the writer notices a dead one
        return self.limits.idle_timeout

    def _acknowledge(self) -> None:
        """Tell the peer how much we got each time its window is full (after the read's
        messages, so a Window Acknowledgement Size in this very read counts)."""
        if self.ack_every and self.received - self.acked >= self.ack_every:
            self.acked = self.received
            self._send(CSID_CONTROL, ACKNOWLEDGEMENT, 0, _U32.pack(self.received & TS_MASK))

    # -- writing --

    def _write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)
        self.stats.bytes_out += len(data)

    def _send(
        self,
        csid: int,
        type_id: int,
        msid: int,
        payload: bytes | memoryview,
        timestamp: int = 0,
        prefix: bytes = b"",
    ) -> None:
        self._write(self.chunks_out.message(csid, type_id, msid, timestamp, payload, prefix))

    async def _drain(self) -> None:
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await self._writable()
        except TimeoutError:
            assert self.transport is not None
            self.transport.abort()  # close() would wait for the unsent bytes
            raise _Closing(
                f"client took no data for {self.limits.write_timeout:g} s ({self.phase})"
            ) from None

    async def _writable(self) -> None:
        """StreamWriter.drain's flow control: wait while the transport's buffer is full."""
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if self._write_paused:
            waiter = self.loop.create_future()
            self._drain_waiters.append(waiter)
            await waiter

    def _command(self, msid: int, *values: Any) -> None:
        csid = CSID_COMMAND if msid == 0 else CSID_DATA
        self._send(csid, COMMAND_AMF0, msid, amf0.encode(*values))

    def _status(self, msid: int, level: str, code: str, description: str) -> None:
        self._command(
            msid, "onStatus", 0.0, None, {"level": level, "code": code, "description": description}
        )

    def _user_control(self, event: int, value: int) -> None:
        self._send(CSID_CONTROL, USER_CONTROL, 0, struct.pack(">HI", event, value))

    # -- incoming messages --

    def _media(
        self, type_id: int, timestamp: int, payload: bytes | bytearray, arrival: float
    ) -> None:
        if self.ingest is None:
            return  # media before publish (or after unpublish): nothing to attach it to
        if type_id == VIDEO:
            self.ingest.on_video(timestamp, payload, arrival)
        else:
            self.ingest.on_audio(timestamp, payload, arrival)

    async def _message(self, msg: Message, arrival: float) -> None:
        kind = msg.type_id
        if kind in (COMMAND_AMF0, COMMAND_AMF3):
            await self._on_command(msg)
        elif kind in (DATA_AMF0, DATA_AMF3):
            if self.ingest is not None:
                self.ingest.on_metadata(_amf_values(msg))
        elif kind == AGGREGATE:
            for sub_type, ts, body in split_aggregate(msg.payload, msg.timestamp):
                if sub_type in (VIDEO, AUDIO):
                    self._media(sub_type, ts, bytes(body), arrival)
        elif kind == WINDOW_ACK_SIZE and len(msg.payload) >= 4:
            window = _U32.unpack_from(msg.payload)[0]
            # a batch early: a peer that stops at its window until acknowledged would
            # otherwise wait for a quiet tick with its last bytes under the low-water mark
            self.ack_every = window - BATCH_MAX if window > 2 * BATCH_MAX else window
        elif kind == USER_CONTROL:
            self._on_user_control(msg.payload)
        elif kind not in (SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, SET_PEER_BANDWIDTH):
            log.debug("rtmp %s: ignored message type %d", self.peer, kind)

    def _on_user_control(self, payload: bytes | bytearray) -> None:
        if len(payload) >= 6 and int.from_bytes(payload[:2], "big") == PING_REQUEST:
            self._send(
                CSID_CONTROL,
                USER_CONTROL,
                0,
                struct.pack(">H", PING_RESPONSE) + bytes(payload[2:6]),
            )

    async def _on_command(self, msg: Message) -> None:
        values = _amf_values(msg)
        if not values or not isinstance(values[0], str):
            raise _Closing("command message without a command name")
        name = values[0]
        txid = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        args = values[3:]
        if name == "connect":
            self._on_connect(txid, values[2] if len(values) > 2 else None)
        elif not self.connected:
            raise _Closing(f"command {name!r} before connect")
        elif name == "createStream":
            self._command(0, "_result", txid, None, float(self.next_stream_id))
            self.next_stream_id += 1
        elif name == "publish":
            await self._on_publish(msg.stream_id, _first_str(args))
        elif name == "play":
            await self._on_play(msg.stream_id, _first_str(args))
        elif name in ("deleteStream", "closeStream"):
            self._on_delete(int(args[0]) if args and isinstance(args[0], float) else msg.stream_id)
        elif txid:  # releaseStream, FCPublish, FCUnpublish, getStreamLength, ...
            self._command(0, "_result", txid, None)
        await self._drain()

    def _on_connect(self, txid: float, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise _Closing("connect without its command object")
        app, app_key = split_query_key(str(obj.get("app", "")))
        _, tc_key = split_query_key(str(obj.get("tcUrl", "")))
        if app.strip("/") != self.server.app:
            self._command(
                0,
                "_error",
                txid,
                None,
                {
                    "level": "error",
                    "code": "NetConnection.Connect.Rejected",
                    "description": f"unknown application {app!r}: use "
                    f"rtmp://HOST:PORT/{self.server.app}/STREAM_ID?key=KEY",
                },
            )
            self.stats.refused += 1
            raise _Closing(f"connect refused: unknown application {app!r}")
        self.app_key = app_key or tc_key
        self.connected = True
        window = self.limits.window_ack_size
        self._send(CSID_CONTROL, WINDOW_ACK_SIZE, 0, _U32.pack(window))
        self._send(CSID_CONTROL, SET_PEER_BANDWIDTH, 0, _U32.pack(window) + b"\x02")
        self._send(CSID_CONTROL, SET_CHUNK_SIZE, 0, _U32.pack(self.limits.chunk_size))
        self.chunks_out.chunk_size = self.limits.chunk_size
        self._command(
            0,
            "_result",
            txid,
            {"fmsVer": "FMS/3,5,7,7009", "capabilities": 31.0, "mode": 1.0},
            {
                "level": "status",
                "code": "NetConnection.Connect.Success",
                "description": "Connection succeeded.",
                "objectEncoding": 0.0,
            },
        )

    def _stream_name(self, name: str | None, action: str) -> tuple[str, str | None]:
        if not name:
            raise _Closing(f"{action} without a stream name")
        stream_id, key = split_query_key(name)
        stream_id = stream_id.strip("/")
        if not stream_id or len(stream_id) > MAX_NAME or not stream_id.isprintable():
            return "", None
        return stream_id, key or self.app_key

    async def _check(self, msid: int, action: str, name: str | None, code: str) -> str:
        """Authorize; on refusal tell the client why and end the connection."""
        stream_id, key = self._stream_name(name, action)
        reason = None
        if not stream_id:
            reason = f"invalid stream name {name!r}: use {self.server.app}/STREAM_ID?key=KEY"
        elif self.ingest is not None or self.play_task is not None:
            reason = "this connection is already publishing or playing"
        elif self.server.authorize is not None:
            reason = await self._authorize(stream_id, key, action)
        if reason is not None:
            self._refuse(msid, code, f"{action} {stream_id or name!r}", reason)
        return stream_id

    async def _authorize(self, stream_id: str, key: str | None, action: str) -> str | None:
        assert self.server.authorize is not None
        try:
            await self.server.authorize(stream_id, key, action, self.peer)
        except RtmpRefused as exc:
            return exc.reason
        except Exception:  # the registry being down is not the client's fault, but no entry
            log.exception("rtmp %s: authorization of %s %s failed", self.peer, action, stream_id)
            return "authorization is unavailable, try again later"
        return None

    def _refuse(self, msid: int, code: str, what: str, reason: str) -> NoReturn:
        self.stats.refused += 1
        self._status(msid, "error", code, reason)
        raise _Closing(f"{what} refused: {reason}")

    async def _on_publish(self, msid: int, name: str | None) -> None:
        stream_id = await self._check(msid, "publish", name, "NetStream.Publish.Denied")
        try:
            publication = self.server.hub.publish(
                stream_id, (), source=f"rtmp {self.peer}", on_evict=self._evicted
            )
        except StreamBusy as exc:
            self._refuse(msid, "NetStream.Publish.BadName", f"publish {stream_id!r}", str(exc))
        self.ingest = Ingest(publication, f"{self.peer} {stream_id}")
        self.publish_msid = msid
        self.stats.publishing += 1
        assert self.transport is not None
        stream = publication.stream
        self.batching = ReadBatching(
            self.transport, lambda: self.received, lambda: not stream.realtime
        )
        self._user_control(STREAM_BEGIN, msid)
        self._status(msid, "status", "NetStream.Publish.Start", f"{stream_id} is now published")
        log.info("rtmp %s: publishing %s", self.peer, stream_id)

    def _evicted(self, reason: str) -> None:
        self.ingest = None  # the hub already ended this publication
        self._stop_batching()
        self.stats.publishing -= 1
        self.close(reason)

    async def _on_play(self, msid: int, name: str | None) -> None:
        stream_id = await self._check(msid, "play", name, "NetStream.Play.Failed")
        self._user_control(STREAM_BEGIN, msid)
        self._status(msid, "status", "NetStream.Play.Reset", f"playing {stream_id}")
        self._status(msid, "status", "NetStream.Play.Start", f"started playing {stream_id}")
        self._send(CSID_DATA, DATA_AMF0, msid, amf0.encode("|RtmpSampleAccess", True, True))
        self.stats.playing += 1
        self.play_task = asyncio.create_task(self._play_loop(stream_id, msid))
        log.info("rtmp %s: playing %s", self.peer, stream_id)

    def _on_delete(self, msid: int) -> None:
        if self.ingest is not None and msid == self.publish_msid:
            self.ingest.publication.close("publisher ended the stream")
            self._status(msid, "status", "NetStream.Unpublish.Success", "stream unpublished")
            self.ingest = None
            self.stats.publishing -= 1
            self._stop_batching()

    def _stop_batching(self) -> None:
        if self.batching is not None:
            self.batching.stop()
            self.batching = None

    # -- play --

    async def _play_loop(self, stream_id: str, msid: int) -> None:
        sub = self.server.hub.subscribe(stream_id, f"rtmp play {self.peer}")
        out = PlayOut(
            lambda csid, type_id, ts, payload, prefix: self._send(
                csid, type_id, msid, payload, ts, prefix
            )
        )
        try:
            while True:
                item: Item | None = await sub.get()
                while item is not None:
                    if isinstance(item, StreamEnd):
                        self._status(
                            msid,
                            "status",
                            "NetStream.Play.UnpublishNotify",
                            f"{stream_id} stopped: {item.reason}",
                        )
                    out.handle(item)
                    item = sub.get_nowait()
                await self._drain()
        except _Closing as exc:
            self.close_reason = exc
            self._close_transport()
        except (EOFError, ConnectionError):
            self._close_transport()
        finally:
            sub.close()


def _amf_values(msg: Message) -> list[Any]:
    payload = msg.payload
    if msg.type_id in (COMMAND_AMF3, DATA_AMF3) and payload[:1] == b"\x00":
        payload = payload[1:]  # AMF3 messages of AMF0 values start with a zero byte
    return amf0.decode(payload)


def _first_str(args: list[Any]) -> str | None:
    return args[0] if args and isinstance(args[0], str) else None
