"""Read batching (SO_RCVLOWAT) on publisher sockets: a fast publisher is read in fewer,
larger reads; a small command after its media stops is answered within a few ticks; a
publisher that waits for acknowledgements at its window is never stalled."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import traceback
from collections.abc import Awaitable

import uvloop

from media_server.hub import Hub
from media_server.rtmp import amf0
from media_server.rtmp.chunk import (
    ACKNOWLEDGEMENT,
    COMMAND_AMF0,
    VIDEO,
    WINDOW_ACK_SIZE,
    ChunkReader,
    Message,
)
from media_server.rtmp.read_batching import (
    BATCH_S,
    MAX_BYTES,
    MIN_BYTES,
    TICK_S,
    low_water_mark,
)
from media_server.rtmp.server import RtmpServer
from tests.fixtures.rtmp import RawRtmpClient, wait_for
from tests.media_server.test_rtmp_flv import AVCC_320

RATE = 250_000  # bytes a second: a 2 Mbit/s publisher
WRITE = 1000  # in small writes, as ffmpeg's chunk headers and audio frames come


def test_low_water_mark_follows_the_rate_within_bounds() -> None:
    per_tick = RATE * TICK_S
    assert low_water_mark(int(per_tick)) == 4608  # 20 ms of 250 kB/s, in 512-byte steps
    assert low_water_mark(0) == 1  # a quiet tick: read whatever waits
    assert low_water_mark(int(16_000 * TICK_S)) == 1  # audio only: not worth batching
    assert low_water_mark(int(MIN_BYTES / BATCH_S * TICK_S)) == MIN_BYTES
    assert low_water_mark(int(20_000_000 * TICK_S)) == MAX_BYTES  # 160 Mbit/s


def _low_water(server: RtmpServer) -> int:
    (conn,) = server._connections
    sock = conn.transport.get_extra_info("socket")  # type: ignore[union-attr]
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))


async def _await_status(client: RawRtmpClient, reader: ChunkReader, code: str) -> float:
    """Seconds until an onStatus with code arrives."""
    start, got = time.monotonic(), list[Message]()
    while not any(
        amf0.decode(m.payload)[3]["code"] == code
        for m in got
        if m.type_id == COMMAND_AMF0 and amf0.decode(m.payload)[0] == "onStatus"
    ):
        got += reader.feed(await asyncio.wait_for(client.reader.read(65536), 5))
    return time.monotonic() - start


async def test_fast_publisher_is_read_in_batches_and_quiet_one_at_once() -> None:
    await _fast_then_quiet()


def test_batching_on_uvloop_too() -> None:
    """`courtcast up` runs on uvloop, whose transports hand out their own socket object."""
    # a failure is raised anew, without the frames it went through inside uvloop: pytest
    # on CPython 3.11 cannot format those ("AST constructor recursion depth mismatch", an
    # INTERNALERROR that ends the whole run)
    failure = uvloop.run(_failure_of(_fast_then_quiet()))
    if failure is not None:
        where = traceback.extract_tb(failure.__traceback__)[-1]
        raise AssertionError(f"on uvloop, line {where.lineno}: {failure}") from None


async def _failure_of(case: Awaitable[None]) -> BaseException | None:
    try:
        await case
    except Exception as exc:
        return exc
    return None


async def _frames(client: RawRtmpClient, first: int, seconds: float) -> int:
    """Write video messages of WRITE bytes at RATE for seconds; the next message's number."""
    start, count = time.monotonic(), int(RATE / WRITE * seconds)
    for i in range(first, first + count):
        await asyncio.sleep(max(0.0, start + (i - first) * WRITE / RATE - time.monotonic()))
        client.writer.write(
            client.chunks.message(6, VIDEO, 1, 4 * i, bytes(WRITE - 17), b"\x27\x01\x00\x00\x00")
        )
    return first + count


async def _fast_then_quiet() -> None:
    hub = Hub()
    server = RtmpServer(hub, "127.0.0.1", 0)
    await server.start()
    client = await RawRtmpClient.connect(server.port)
    try:
        await client.handshake()
        client.command(0, "connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
        client.command(0, "createStream", 2.0, None)
        client.command(1, "publish", 0.0, None, "batched", "live")
        reader = ChunkReader()
        await _await_status(client, reader, "NetStream.Publish.Start")
        client.writer.write(
            client.chunks.message(6, VIDEO, 1, 0, b"\x17\x00\x00\x00\x00" + AVCC_320)
        )
        sent = await _frames(client, 0, 0.75)  # the first ticks set the mark
        reads = server.stats.reads
        writes = await _frames(client, sent, 0.75) - sent
        reads = server.stats.reads - reads
        assert _low_water(server) > MIN_BYTES
        assert reads < writes / 2, (reads, writes)

        # a WebRTC viewer comes: nothing is held back while it watches
        viewer = hub.subscribe("batched", "a real-time viewer")
        viewer.realtime = True
        sent = await _frames(client, sent + writes, 2 * TICK_S + 0.1)
        assert _low_water(server) == 1
        viewer.close()
        sent = await _frames(client, sent, 2 * TICK_S + 0.1)
        assert _low_water(server) > MIN_BYTES

        # the media stops; the last bytes and a small command sit under the mark, and the
        # next quiet tick lets them in
        client.command(1, "deleteStream", 3.0, None, 1.0)
        waited = await _await_status(client, reader, "NetStream.Unpublish.Success")
        assert waited < 3 * TICK_S, waited
        assert _low_water(server) == 1
        await wait_for(lambda: not hub.find("batched").live)  # type: ignore[union-attr]
    finally:
        await client.close()
        await server.stop()


async def test_publisher_waiting_for_acks_at_its_window_is_not_stalled() -> None:
    """A strict publisher stops at its window until acknowledged; the last bytes it sent
    may sit under the low-water mark, so the server acknowledges a batch early."""
    window = 60_000
    hub = Hub()
    server = RtmpServer(hub, "127.0.0.1", 0)
    await server.start()
    client = await RawRtmpClient.connect(server.port)
    sent, acked, stalled = 0, 0, 0.0
    acks = asyncio.Event()

    def send(data: bytes) -> None:
        nonlocal sent
        client.writer.write(data)
        sent += len(data)

    async def read_acks() -> None:
        nonlocal acked
        reader = ChunkReader()
        while data := await client.reader.read(65536):
            for msg in reader.feed(data):
                if msg.type_id == ACKNOWLEDGEMENT:
                    acked = struct.unpack(">I", msg.payload)[0]
                    acks.set()

    await client.handshake()
    reading = asyncio.create_task(read_acks())
    try:
        send(
            client.chunks.message(
                3, 20, 0, 0, amf0.encode("connect", 1.0, {"app": "live", "tcUrl": "rtmp://h/live"})
            )
        )
        send(client.chunks.message(2, WINDOW_ACK_SIZE, 0, 0, struct.pack(">I", window)))
        send(client.chunks.message(3, 20, 0, 0, amf0.encode("createStream", 2.0, None)))
        send(
            client.chunks.message(3, 20, 1, 0, amf0.encode("publish", 0.0, None, "strict", "live"))
        )
        send(client.chunks.message(6, VIDEO, 1, 0, b"\x17\x00\x00\x00\x00" + AVCC_320))
        start = time.monotonic()
        for i in range(int(RATE / WRITE * 2)):  # 2 s at 250 kB/s: eight windows
            await asyncio.sleep(max(0.0, start + i * WRITE / RATE - time.monotonic()))
            while sent - acked >= window:
                acks.clear()
                began = time.monotonic()
                await asyncio.wait_for(acks.wait(), 5)
                stalled += time.monotonic() - began
            send(
                client.chunks.message(
                    6, VIDEO, 1, 4 * i, bytes(WRITE - 17), b"\x27\x01\x00\x00\x00"
                )
            )
        assert _low_water(server) > MIN_BYTES
        assert acked > 6 * (window - MAX_BYTES)
        assert stalled < 0.1, stalled  # without the early ack: 0.2 s and more
    finally:
        reading.cancel()
        await client.close()
        await server.stop()
