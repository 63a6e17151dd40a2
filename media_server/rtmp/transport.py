"""The RTMP transport: one connection's bytes in and out, with RTMP's flow control.

An asyncio BufferedProtocol, so media is parsed as it is received, with no task wake-up,
future or StreamReader copy per read; the transport reads into our own buffer
(recv_into), which costs less per read than a plain Protocol's recv (bench/RESULTS.md,
"RTMP ingest"). Media messages go to the session straight from the read (the hot path).
Everything else (handshake, commands, control messages) runs in order in the
connection's task; while it has messages to handle, reading is paused, so media never
overtakes the command before it (a publish being authorized).

Flow control: an Acknowledgement each time the peer's window is full, fewer and larger
reads from a publisher (read_batching.py), a writer that waits while the socket's buffer
is full and drops a peer that takes nothing, timeouts on the handshake and on silence.

The session (session.py) is a subclass that fills in the hooks (`_media`, `_message`,
`_read_timeout`, `_end`). A subclass rather than an object beside it: the hot path calls
`_media` on the same object, with no attribute hop per message.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from media_server.rtmp import handshake
from media_server.rtmp.chunk import (
    ABORT,
    ACKNOWLEDGEMENT,
    AUDIO,
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
from media_server.rtmp.read_batching import MAX_BYTES as BATCH_MAX
from media_server.rtmp.read_batching import ReadBatching

if TYPE_CHECKING:
    from media_server.rtmp.server import RtmpServer

log = logging.getLogger(__name__)

CSID_CONTROL = 2
PING_REQUEST, PING_RESPONSE = 6, 7  # User Control events
READ_SIZE = 64 * 1024
_U32 = struct.Struct(">I")


class CloseConnection(Exception):
    """End this connection; reason is logged (warning when the peer did wrong)."""

    def __init__(self, reason: str, warn: bool = True) -> None:
        super().__init__(reason)
        self.reason, self.warn = reason, warn


class RtmpTransport(asyncio.BufferedProtocol):
    """One RTMP connection's transport; the session (a subclass) gives it its meaning."""

    def __init__(self, server: RtmpServer) -> None:
        self.server, self.stats, self.limits = server, server.stats, server.limits
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.peer = self.host = "?"
        limits = self.limits
        self.chunks_in = ChunkReader(max_message=limits.max_message, max_pending=limits.max_pending)
        self.chunks_out = ChunkWriter()
        self.phase = "handshake"
        self.batching: ReadBatching | None = None  # while publishing
        self.close_reason: CloseConnection | None = None
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
        self.act_by: float | None = None  # publish or play by then (the session clears it)
        self._waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._lost = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._closed: asyncio.Future[None] = self.loop.create_future()

    # -- what the session fills in --

    def _media(
        self, type_id: int, timestamp: int, payload: bytes | bytearray, arrival: float
    ) -> None:
        """An audio or video message, called from the read itself (the hot path)."""
        raise NotImplementedError

    async def _message(self, msg: Message, arrival: float) -> None:
        """Any other message, in arrival order, in the connection's task."""
        raise NotImplementedError

    def _read_timeout(self) -> float | None:
        """How long the peer may now stay silent (None: for ever); sets self.phase."""
        raise NotImplementedError

    def _end(self, reason: str) -> None:
        """Let go of what the session holds (publication, player); the socket closes next."""
        raise NotImplementedError

    # -- protocol callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream transport (uvloop's is not an asyncio.Transport subclass: no isinstance)
        self.transport = cast(asyncio.Transport, transport)
        addr = transport.get_extra_info("peername")
        self.peer = f"{addr[0]}:{addr[1]}" if isinstance(addr, tuple) else str(addr)
        self.host = str(addr[0]) if isinstance(addr, tuple) else str(addr)
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
        """Parse chunks; media goes to the session here and now, anything else (and all
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
            self.act_by = self.loop.time() + self.limits.idle_timeout
            await self._read_loop()
        except CloseConnection as exc:
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
        self.close_reason = self.close_reason or CloseConnection(reason, warn=False)
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
        self._end(reason)
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
        """The messages the read left to the task, in arrival order."""
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
        The deadline is checked lazily: data only moves _last_data, no timer per read.
        act_by, when set, is a deadline no data moves."""
        while True:
            if self._backlog or self._failure is not None or self._eof:
                return
            deadline = self._last_data + timeout if timeout is not None else None
            if self.act_by is not None:
                deadline = self.act_by if deadline is None else min(deadline, self.act_by)
            if deadline is None:
                await self._wait()
                return
            if self.loop.time() >= deadline:
                raise TimeoutError
            try:
                async with asyncio.timeout_at(deadline):
                    await self._wait()
                return
            except TimeoutError:
                continue  # data may have come meanwhile: check against _last_data

    # -- flow control --

    def _control(self, msg: Message) -> None:
        """A protocol control message from the peer (its window, a ping)."""
        kind = msg.type_id
        if kind == WINDOW_ACK_SIZE and len(msg.payload) >= 4:
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

    def _acknowledge(self) -> None:
        """Tell the peer how much we got each time its window is full (after the read's
        messages, so a Window Acknowledgement Size in this very read counts)."""
        if self.ack_every and self.received - self.acked >= self.ack_every:
            self.acked = self.received
            self._send(CSID_CONTROL, ACKNOWLEDGEMENT, 0, _U32.pack(self.received & TS_MASK))

    def _start_batching(self, may_hold: Callable[[], bool]) -> None:
        """Read a publisher in batches (read_batching.py) until _stop_batching."""
        assert self.transport is not None
        self.batching = ReadBatching(self.transport, lambda: self.received, may_hold)

    def _stop_batching(self) -> None:
        if self.batching is not None:
            self.batching.stop()
            self.batching = None

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
            raise CloseConnection(
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
