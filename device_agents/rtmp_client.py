"""An asyncio RTMP publish client over the media server's own protocol modules (handshake,
ChunkWriter/ChunkReader, AMF0, and the FLV tagging of media_server.rtmp.play).

connect -> handshake -> connect command -> createStream -> publish; then FLV messages.
A reader task watches what the server says: an error onStatus (a refused key) or EOF ends
the session with a reason; a write that cannot drain in time means the link is dead.

A line that goes silent (a blackhole: no reset, no refusal) is not seen by TCP for minutes
while socket buffers (megabytes on each side) soak up the stream. So the client asks the
server for an RTMP Acknowledgement every ACK_WINDOW bytes, and once the server has shown
that it acknowledges, more than two windows unacknowledged for timeout_s ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from media_server.rtmp import amf0
from media_server.rtmp.chunk import (
    ACKNOWLEDGEMENT,
    COMMAND_AMF0,
    SET_CHUNK_SIZE,
    WINDOW_ACK_SIZE,
    ChunkReader,
    ChunkWriter,
    Message,
)
from media_server.rtmp.errors import RtmpProtocolError
from media_server.rtmp.handshake import PACKET_SIZE, VERSION

CSID_CONTROL, CSID_COMMAND, CSID_STREAM = 2, 3, 8
CHUNK_SIZE = 4096  # fewer chunk headers for big frames
READ_SIZE = 65536
ACK_WINDOW = 32 * 1024  # an acknowledgement every ~1 s even from a quiet 0.2 Mbit/s camera
HANDSHAKE_OUT = 1 + 2 * PACKET_SIZE  # C0, C1, C2: counted by the server, not by bytes_out


class PublishRefused(Exception):
    """The server answered and said no (bad key, unknown stream, stream busy)."""


class LinkDown(Exception):
    """The connection is gone or stopped taking data."""


def split_rtmp_url(url: str) -> tuple[str, int, str]:
    """rtmp://host[:port]/app -> (host, port, app)."""
    parts = urlsplit(url)
    if parts.scheme != "rtmp" or not parts.hostname:
        raise ValueError(f"not an rtmp:// URL: {url!r}")
    return parts.hostname, parts.port or 1935, parts.path.strip("/") or "live"


class RtmpPublishSession:
    """One connection publishing one stream. Use open(), send(), drain(), close()."""

    def __init__(self, url: str, stream_name: str, *, timeout_s: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.host, self.port, self.app = split_rtmp_url(self.url)
        self.stream_name = stream_name  # "{stream_id}?key={key}"
        self.timeout_s = timeout_s
        self.chunks = ChunkWriter()
        self._in = ChunkReader()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[float, asyncio.Future[list[Any]]] = {}
        self._status: asyncio.Future[dict[str, Any]] | None = None
        self._read_task: asyncio.Task[None] | None = None
        self.closed_reason = ""
        self.msid = 0
        self.bytes_out = 0
        self.acked = -1  # bytes the server says it has received; -1: it never said
        self.acked_at = 0.0  # time.monotonic() of the last acknowledgement
        self.on_lost: Callable[[], None] | None = None

    # -- setting up --
    async def open(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                await self._handshake()
        except TimeoutError:
            await self.close()
            raise LinkDown(
                f"no answer from {self.host}:{self.port} within {self.timeout_s:g} s"
            ) from None
        except (OSError, asyncio.IncompleteReadError) as exc:
            await self.close()
            raise LinkDown(
                f"cannot reach {self.host}:{self.port}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        self._read_task = asyncio.create_task(self._read_loop(), name="rtmp publish read")
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._publish()
        except TimeoutError:
            await self.close()
            raise LinkDown("the server did not answer the publish request in time") from None
        except BaseException:
            await self.close()
            raise

    async def _handshake(self) -> None:
        assert self._reader is not None and self._writer is not None
        c1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0)
        c1 += os.urandom(PACKET_SIZE - 8)
        self._writer.write(bytes((VERSION,)) + c1)
        s0s1s2 = await self._reader.readexactly(1 + 2 * PACKET_SIZE)
        if s0s1s2[0] != VERSION:
            raise LinkDown(f"not an RTMP server (handshake version {s0s1s2[0]})")
        self._writer.write(s0s1s2[1 : 1 + PACKET_SIZE])  # C2 echoes S1
        self._control(SET_CHUNK_SIZE, struct.pack(">I", CHUNK_SIZE))
        self.chunks.chunk_size = CHUNK_SIZE
        self._control(WINDOW_ACK_SIZE, struct.pack(">I", ACK_WINDOW))

    async def _publish(self) -> None:
        await self._call(
            1.0,
            "connect",
            {
                "app": self.app,
                "type": "nonprivate",
                "flashVer": "FMLE/3.0 (courtcast agent)",
                "tcUrl": self.url,
            },
        )
        result = await self._call(2.0, "createStream", None)
        self.msid = int(result[3]) if len(result) > 3 and isinstance(result[3], float) else 1
        self._status = asyncio.get_running_loop().create_future()
        self._command(CSID_STREAM, self.msid, "publish", 3.0, None, self.stream_name, "live")
        await self._flush()
        info = await self._status
        if info.get("code") != "NetStream.Publish.Start":
            raise PublishRefused(str(info.get("description") or info.get("code")))

    async def _call(self, txid: float, name: str, obj: Any) -> list[Any]:
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._pending[txid] = future
        self._command(CSID_COMMAND, 0, name, txid, obj)
        await self._flush()
        values = await future
        if values[0] == "_error":
            info = values[3] if len(values) > 3 and isinstance(values[3], dict) else {}
            raise PublishRefused(str(info.get("description") or f"{name} refused"))
        return values

    # -- writing --
    def _command(self, csid: int, msid: int, *values: Any) -> None:
        self.write(self.chunks.message(csid, COMMAND_AMF0, msid, 0, amf0.encode(*values)))

    def _control(self, type_id: int, payload: bytes) -> None:
        self.write(self.chunks.message(CSID_CONTROL, type_id, 0, 0, payload))

    def write(self, data: bytes) -> None:
        if self._writer is None or self.closed_reason:
            raise LinkDown(self.closed_reason or "not connected")
        self._writer.write(data)
        self.bytes_out += len(data)

    def send(
        self, csid: int, type_id: int, timestamp: int, payload: bytes | memoryview, prefix: bytes
    ) -> None:
        """One FLV message on the published stream (the PlayOut Send signature)."""
        self.write(self.chunks.message(csid, type_id, self.msid, timestamp, payload, prefix))

    def writable(self) -> bool:
        """Connected, and the socket buffer at or under its low-water mark (asyncio's
        writer is not paused there: a drain() would return at once)."""
        if self._writer is None or self.closed_reason:
            return False
        if self._silent():
            self._lost(
                f"the server acknowledged nothing for {self.timeout_s:g} s (the line is silent)"
            )
            return False
        transport = self._writer.transport
        low_water = transport.get_write_buffer_limits()[0]
        return transport.get_write_buffer_size() <= low_water and not transport.is_closing()

    def _silent(self) -> bool:
        if self.acked < 0:
            return False  # a server that does not acknowledge: only write timeouts apply
        unacked = (self.bytes_out + HANDSHAKE_OUT - self.acked) & 0xFFFFFFFF
        return unacked > 2 * ACK_WINDOW and time.monotonic() - self.acked_at > self.timeout_s

    async def _flush(self) -> None:
        assert self._writer is not None
        await self._writer.drain()

    async def drain(self, timeout_s: float) -> None:
        """Wait until the socket takes what was written; a link that takes nothing for
        timeout_s is dead (a cut cable does not always say so)."""
        if self.closed_reason:
            raise LinkDown(self.closed_reason)
        assert self._writer is not None
        if self.writable():
            return  # drain() would not wait: skip the timer it costs per call
        if self.closed_reason:  # writable() found the line silent
            raise LinkDown(self.closed_reason)
        try:
            async with asyncio.timeout(timeout_s):
                await self._writer.drain()
        except TimeoutError:
            raise LinkDown(f"the server took no data for {timeout_s:g} s") from None
        except (ConnectionError, OSError) as exc:
            raise LinkDown(f"connection lost ({exc})") from None
        if self.closed_reason:
            raise LinkDown(self.closed_reason)

    # -- reading --
    async def _read_loop(self) -> None:
        assert self._reader is not None
        reason = "the server closed the connection"
        try:
            while data := await self._reader.read(READ_SIZE):
                for msg in self._in.feed(data):
                    self._on_message(msg)
        except (ConnectionError, OSError) as exc:
            reason = f"connection lost ({exc})"
        except RtmpProtocolError as exc:
            reason = f"protocol error from the server: {exc}"
        self._lost(reason)

    def _lost(self, reason: str) -> None:
        self.closed_reason = self.closed_reason or reason
        error = LinkDown(self.closed_reason)
        for future in [*self._pending.values(), self._status]:
            if future is not None and not future.done():
                future.set_exception(error)
        if self.on_lost is not None:
            self.on_lost()

    def _on_message(self, msg: Message) -> None:
        if msg.type_id == ACKNOWLEDGEMENT and len(msg.payload) >= 4:
            self.acked = struct.unpack_from(">I", msg.payload)[0]
            self.acked_at = time.monotonic()
            return
        if msg.type_id != COMMAND_AMF0:
            return  # window sizes, bandwidth, acks: nothing a publisher must act on
        values = amf0.decode(msg.payload)
        if not values:
            return
        name = values[0]
        if name in ("_result", "_error") and len(values) > 1:
            future = self._pending.pop(values[1], None)
            if future is not None and not future.done():
                future.set_result(values)
        elif name == "onStatus" and len(values) > 3 and isinstance(values[3], dict):
            self._on_status(values[3])

    def _on_status(self, info: dict[str, Any]) -> None:
        if self._status is not None and not self._status.done():
            self._status.set_result(info)
        elif info.get("level") == "error":
            self._lost(f"refused by the server: {info.get('description')}")

    async def close(self) -> None:
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
            self._read_task = None
        writer, self._writer = self._writer, None
        if writer is None:
            return
        if writer.transport.get_write_buffer_size():
            writer.transport.abort()  # a dead link would hold close() for ever
            return
        writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
