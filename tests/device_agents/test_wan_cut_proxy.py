"""The WAN-cut proxy itself (tests/fixtures/tcp_proxy.py): bytes pass both ways, a cut
resets open connections and refuses new ones, restore brings the same port back, a
blackhole holds connections silent, and the token bucket keeps a transfer to its rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from tests.fixtures.tcp_proxy import Link, ProxyFactory

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def sink() -> AsyncIterator[tuple[int, list[int]]]:
    """A server that answers every line with "ok <bytes so far>"; its port and counts."""
    got: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        try:
            while data := await reader.read(65536):
                total += len(data)
                got.append(len(data))
                if data.endswith(b"\n"):
                    writer.write(f"ok {total}\n".encode())
                    await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1], got
    server.close()
    await server.wait_closed()


async def ask(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    return line


async def test_passes_cuts_restores_and_blackholes(
    tcp_proxy: ProxyFactory, sink: tuple[int, list[int]]
) -> None:
    port, _ = sink
    proxy = tcp_proxy(port)
    assert await ask(proxy.port, b"hello\n") == b"ok 6\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(b"x\n")
    assert await reader.readline() == b"ok 2\n"
    await asyncio.to_thread(proxy.cut)
    with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
        writer.write(b"y\n")
        await writer.drain()
        if not await asyncio.wait_for(reader.readline(), 5):
            raise ConnectionResetError("closed")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", proxy.port)
    await asyncio.to_thread(proxy.restore)
    assert await ask(proxy.port, b"again\n") == b"ok 6\n"
    await asyncio.to_thread(proxy.cut, True)  # blackhole: connects, then silence
    with pytest.raises(asyncio.TimeoutError):
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(b"z\n")
        await asyncio.wait_for(reader.readline(), 1.0)
    writer.close()
    await asyncio.to_thread(proxy.restore)
    assert await ask(proxy.port, b"back\n") == b"ok 5\n"


async def test_rate_limit_shapes_a_transfer(
    tcp_proxy: ProxyFactory, sink: tuple[int, list[int]]
) -> None:
    port, _ = sink
    rate = 10_000_000 / 8  # 10 Mbit/s
    proxy = tcp_proxy(port, link=Link(rate_bytes_s=rate))
    payload = b"\0" * (3 * 1_250_000) + b"\n"  # 3 s at the line rate
    started = time.monotonic()
    assert await ask(proxy.port, payload) == f"ok {len(payload)}\n".encode()
    elapsed = time.monotonic() - started
    assert 2.8 <= elapsed <= 3.6, elapsed
