"""RTMP resource caps (issue 14, item 5): connections per address, bytes of unfinished
messages per connection (tied to max_message), and a deadline to publish or play.
All on loopback: the flooding address is 127.0.0.2, everyone else 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from pathlib import Path

from media_server.hub import Hub
from media_server.rtmp.chunk import ChunkWriter
from media_server.rtmp.server import RtmpLimits, RtmpServer
from tests.fixtures.rtmp import FfmpegRunner, RawRtmpClient, push_args, wait_for


async def half_open(port: int, source: str) -> socket.socket | None:
    """A connection that starts a handshake (C0 and part of C1) and never finishes it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source, 0))
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, b"\x03" + bytes(100))
    except OSError:
        sock.close()
        return None
    return sock


async def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    try:
        while True:
            if await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout) == b"":
                return True
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True


async def test_half_open_handshake_flood_leaves_other_streams_playing(
    rtmp_media: dict[str, Path], rtmp_ffmpeg: FfmpegRunner, tmp_path: Path
) -> None:
    """300 half-open handshakes from one address: at most its per-address share is held,
    so the server's total (100 here) is not exhausted; a stream published from another
    address before the flood still plays to a new RTMP player, and a new publisher gets in."""
    server = RtmpServer(Hub(), "127.0.0.1", 0, limits=RtmpLimits(max_connections=100))
    await server.start()
    flood: list[socket.socket] = []
    try:
        url = f"rtmp://127.0.0.1:{server.port}/live"
        await rtmp_ffmpeg.start(*push_args(rtmp_media["bf"], f"{url}/court-a", realtime=True))
        await wait_for(lambda: (s := server.hub.find("court-a")) is not None and s.live)
        for _ in range(300):
            sock = await half_open(server.port, "127.0.0.2")
            if sock is not None:
                flood.append(sock)
        await asyncio.sleep(0.3)
        held = server.stats.connections_open
        assert held <= 1 + 64, f"{held} connections held for one address"
        out = tmp_path / "played.flv"
        code, _, err = await rtmp_ffmpeg.run(
            "-loglevel", "error", "-i", f"{url}/court-a", "-t", "3", "-c", "copy", "-y", str(out)
        )
        assert code == 0, err
        code, frames, err = await rtmp_ffmpeg.run(
            "-v", "error", "-count_frames", "-select_streams", "v", "-show_entries",
            "stream=nb_read_frames", "-of", "csv=p=0", str(out), tool="ffprobe",
        )  # fmt: skip
        assert code == 0 and int(frames.strip()) >= 3 * 30 - 5, (frames, err)
        await rtmp_ffmpeg.start(*push_args(rtmp_media["nobf"], f"{url}/court-b", realtime=True))
        await wait_for(lambda: (s := server.hub.find("court-b")) is not None and s.live)
    finally:
        for sock in flood:
            sock.close()
        await server.stop()


def _chunk0(csid: int, length: int, type_id: int, body: bytes) -> bytes:
    """A type 0 chunk header (timestamp 0, message stream 1) and the first bytes."""
    return (
        bytes([csid])
        + bytes(3)
        + length.to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", 1)
        + body
    )


async def test_unfinished_message_bytes_are_bounded_by_max_message() -> None:
    """A peer starting many large messages on many chunk streams and finishing none holds
    at most about max_message bytes, not the reader's fixed 32 MiB."""
    server = RtmpServer(Hub(), "127.0.0.1", 0, limits=RtmpLimits(max_message=100_000))
    await server.start()
    client = await RawRtmpClient.connect(server.port)
    try:
        await client.handshake()
        writer = ChunkWriter()
        client.writer.write(writer.message(2, 1, 0, 0, struct.pack(">I", 65536)))
        for csid in range(4, 14):  # 10 video messages of 90 kB, 64 kB of each sent
            client.writer.write(_chunk0(csid, 90_000, 9, bytes(65536)))
        with contextlib.suppress(ConnectionError):
            await client.writer.drain()
        with contextlib.suppress(ConnectionError):  # EOF or reset: the server closed
            await asyncio.wait_for(client.reader.read(), 3)
        assert server.stats.protocol_errors == 1
    finally:
        await client.close()
        await server.stop()


async def test_a_connection_that_never_publishes_is_closed_even_if_it_pings() -> None:
    """The idle limit is a deadline to publish or play, not a silence timeout a client can
    reset with pings for ever."""
    server = RtmpServer(Hub(), "127.0.0.1", 0, limits=RtmpLimits(idle_timeout=1.0))
    await server.start()
    client = await RawRtmpClient.connect(server.port)
    loop = asyncio.get_running_loop()
    try:
        await client.handshake()
        client.command(0, "connect", 1.0, {"app": "live", "tcUrl": "rtmp://127.0.0.1/live"})
        writer = ChunkWriter()
        start = loop.time()
        closed = False
        while loop.time() - start < 4 and not closed:
            ping = struct.pack(">HI", 6, int(loop.time()))
            with contextlib.suppress(ConnectionError):
                client.writer.write(writer.message(2, 4, 0, 0, ping))
            try:
                closed = not await asyncio.wait_for(client.reader.read(65536), 0.3)
            except TimeoutError:
                pass
            except ConnectionError:
                closed = True
        assert closed, "a pinging client that never published stayed connected 4 s"
        assert loop.time() - start < 2.5
    finally:
        await client.close()
        await server.stop()
