"""Resource caps at the HTTP door (issue 14, item 5): request bodies refused before they are
read, a slowloris client closed after the header timeout, a flood of unfinished requests
from one address capped, and playback of a live stream unharmed meanwhile. The whole
platform runs as `courtcast up` does; every client is on 127.0.0.1 (the flooding "other
address" is 127.0.0.2, loopback too)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import httpx
import pytest

from courtcast.platform import Platform
from media_server.streams import StreamClass
from tests.courtcast.test_platform import (
    base_url,
    cancel,
    define,
    media_role,
    probe,
    push,
    run,
    start_platform,
    wait_live,
)
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(120)

ADMIN, PASSWORD = "ada", "correct horse battery"


@pytest.fixture
async def platform(tmp_path: Path) -> Platform:  # type: ignore[misc]
    node = await start_platform(tmp_path)
    yield node
    await node.stop()


async def raw_connect(node: Platform, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.bind((source, 0))
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", node.http_port))
    return sock


async def answer_of(sock: socket.socket, timeout: float = 3.0) -> bytes:
    """What the server sends before it closes or goes quiet for timeout s."""
    loop = asyncio.get_running_loop()
    got = b""
    with contextlib.suppress(TimeoutError, ConnectionError):
        while True:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
            if not chunk:
                break
            got += chunk
    return got


async def declared_only(node: Platform, method: str, path: str, ctype: str, size: int) -> bytes:
    """A request that announces a body of `size` bytes and never sends it."""
    sock = await raw_connect(node)
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {size}\r\n\r\n"
    )
    try:
        await asyncio.get_running_loop().sock_sendall(sock, head.encode())
        return await answer_of(sock)
    finally:
        sock.close()


async def test_request_bodies_are_refused_before_they_are_read(platform: Platform) -> None:
    """A declared length over the cap is 413 at once (today's handlers wait for the whole
    body, which a hostile client never sends); a chunked body without a length is cut off
    at the cap, not read to its end."""
    for path, ctype in (
        ("/api/v1/login", "application/json"),
        ("/whep/court-a", "application/sdp"),
        ("/whip/court-a", "application/sdp"),
        ("/api/v1/streams", "application/json"),
    ):
        answer = await declared_only(platform, "POST", path, ctype, 50_000_000)
        assert answer.startswith(b"HTTP/1.1 413"), (path, answer[:200])
    # login's cap is small: a 100 kB "password" is no sign-in attempt
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        big = await http.post("/api/v1/login", json={"name": "x", "password": "p" * 100_000})
        assert big.status_code == 413, big.text
        assert "at most" in big.json()["detail"]

    # chunked, no Content-Length: counted as it streams in
    sock = await raw_connect(platform)
    loop = asyncio.get_running_loop()
    head = (
        "POST /api/v1/streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    sent = 0
    block = b"x" * 65536
    try:
        await loop.sock_sendall(sock, head.encode())
        with contextlib.suppress(ConnectionError):
            while sent < 32 * 1024 * 1024:
                await asyncio.wait_for(
                    loop.sock_sendall(sock, b"%x\r\n%s\r\n" % (len(block), block)), 2
                )
                sent += len(block)
        answer = await answer_of(sock)
    except TimeoutError:  # the server stopped reading: it has answered
        answer = await answer_of(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 32 * 1024 * 1024, "the whole 32 MiB body was read"
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        assert (await http.get("/api/v1/health")).status_code == 200  # still serving


async def slowloris(node: Platform, source: str, stop: asyncio.Event) -> str:
    """One connection that sends a header byte a second and never ends its headers;
    returns how it ended: "closed" by the server, "refused" at once, or "open" at stop."""
    loop = asyncio.get_running_loop()
    try:
        sock = await raw_connect(node, source)
    except OSError:
        return "refused"
    start = loop.time()
    try:
        await loop.sock_sendall(sock, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        while not stop.is_set():
            await loop.sock_sendall(sock, b"X")
            try:
                if await asyncio.wait_for(loop.sock_recv(sock, 1024), 1.0) == b"":
                    return "refused" if loop.time() - start < 0.5 else "closed"
            except TimeoutError:
                continue
        return "open"
    except (ConnectionError, OSError):
        return "refused" if loop.time() - start < 0.5 else "closed"
    finally:
        sock.close()


async def hls_frames(node: Platform, stream_id: str, out: Path, seconds: float) -> int:
    code, log = await run(
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        f"{base_url(node)}/live/{stream_id}/index.m3u8",
        "-t",
        str(seconds),
        "-c",
        "copy",
        "-y",
        str(out),
    )
    assert code == 0, log
    info = await probe(out)
    video = next(s for s in info["streams"] if s["codec_type"] == "video")
    return int(video["nb_read_frames"])


async def test_slowloris_is_cut_off_and_playback_goes_on(
    platform: Platform, tmp_path: Path
) -> None:
    """150 slow clients from one address: those over the per-address cap of unfinished
    requests are closed at once, the rest when the header timeout (10 s) runs out; an
    LL-HLS viewer on another address plays the whole time."""
    clip = make_clip(tmp_path, seconds=40, fps=25, gop=25)
    key = await define(platform, "court-a", stream_class=StreamClass.conference, public=True)
    rtmp = f"rtmp://127.0.0.1:{media_role(platform).rtmp_port}/live/court-a?key={key}"
    publisher = asyncio.create_task(push(clip, rtmp))
    await wait_live(platform, "court-a")
    stop = asyncio.Event()
    clients = [asyncio.create_task(slowloris(platform, "127.0.0.2", stop)) for _ in range(150)]
    try:
        frames = await hls_frames(platform, "court-a", tmp_path / "during.mp4", 8)
        assert frames >= 8 * 25 - 2, f"only {frames} frames in 8 s of playback under slowloris"
        await asyncio.sleep(5)  # past the 10 s header timeout
        stop.set()
        ends = await asyncio.gather(*clients)
    finally:
        stop.set()
        await asyncio.gather(*clients, return_exceptions=True)
        await cancel(publisher)
    assert "open" not in ends, f"{ends.count('open')} slow clients still connected after 13 s"
    assert ends.count("refused") >= 150 - 64, ends  # over the per-address cap


async def test_header_bytes_are_capped(platform: Platform) -> None:
    sock = await raw_connect(platform)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(200):  # 200 x 1 kB headers, never ended
                await loop.sock_sendall(sock, b"X-Pad: " + b"a" * 1024 + b"\r\n")
        answer = await answer_of(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


async def test_stream_sources_are_rtsp_only(platform: Platform, tmp_path: Path) -> None:
    """A pulled source is rtsp:// or rtsps://: anything else FFmpeg would open (http://
    into the server's own network, a file of the server) is refused when the stream is
    defined, and a definition already stored with one is never pulled."""
    users = platform.roles[-1].users  # type: ignore[attr-defined]
    await users.add(ADMIN, "admin", PASSWORD)
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        login = await http.post("/api/v1/login", json={"name": ADMIN, "password": PASSWORD})
        assert login.status_code == 200
        for url in ("http://127.0.0.1:1/metadata", "/etc/passwd", "file:///etc/hostname"):
            made = await http.post("/api/v1/streams", json={"id": "cam-x", "source_url": url})
            assert made.status_code == 422, (url, made.text)
            assert "rtsp://" in made.text
        ok = await http.post(
            "/api/v1/streams", json={"id": "cam-y", "source_url": "rtsps://cam.example/main"}
        )
        assert ok.status_code == 201, ok.text
        for url in ("http://127.0.0.1:1/metadata", "/etc/passwd"):  # PATCH checks it too
            changed = await http.patch("/api/v1/streams/cam-y", json={"source_url": url})
            assert changed.status_code == 422, (url, changed.text)
        kept = await http.get("/api/v1/streams/cam-y")
        assert kept.json()["source_url"] == "rtsps://cam.example/main", kept.text
    clip = make_clip(tmp_path, seconds=4, fps=25, gop=25)
    await define(
        platform, "file-cam", source_url=str(clip), stream_class=StreamClass.conference, public=True
    )  # as an old CLI did
    await asyncio.sleep(3)
    stream = media_role(platform).hub.find("file-cam")
    assert stream is None or not stream.live, "a file of the server was pulled"
    assert "file-cam" not in media_role(platform).pulls


async def test_open_mode_still_pulls_files(tmp_path: Path) -> None:
    """Local trials (open mode): a file is a source, and anyone on this machine reads a
    trial stream's definition and stats (there are no users to sign in as)."""
    node = await start_platform(tmp_path, **{"security.open": True})
    try:
        clip = make_clip(tmp_path, seconds=6, fps=25, gop=25)
        await define(node, "file-cam", source_url=str(clip), stream_class=StreamClass.trial)
        await wait_live(node, "file-cam", timeout=15)
        async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as http:
            detail = await http.get("/api/v1/streams/file-cam")
            listed = await http.get("/api/v1/streams")
        assert detail.status_code == 200, detail.text
        assert "file-cam" in {s["id"] for s in listed.json()}
    finally:
        await node.stop()
