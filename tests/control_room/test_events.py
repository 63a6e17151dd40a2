"""The staff's websocket `/api/v1/events` (issue 15, items 3 and 4): refused without sign-in
(4401) or the right (4403); the hello lists the caller's scope with live / recording state
and sub streams; stream news follows a real ffmpeg publisher killed and restarted and a
recording started and ended by a trial session; a wall followed over it, acknowledged, and
the acknowledgement seen by the API and by other followers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from control_room.events import Client
from courtcast.platform import Platform
from tests.control_room.cities import Cities, scoped
from tests.control_room.conftest import base_url, media
from tests.courtcast.test_platform import cancel, push, wait_live
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(90)


@asynccontextmanager
async def events(
    node: Platform, client: httpx.AsyncClient | None
) -> AsyncIterator[ClientConnection]:
    """The websocket, signed in with the client's session cookie (none: anonymous)."""
    headers = {}
    if client is not None:
        headers["Cookie"] = f"cc_session={client.cookies['cc_session']}"
    url = base_url(node).replace("http://", "ws://") + "/api/v1/events"
    async with websockets.connect(url, additional_headers=headers) as ws:
        yield ws


async def next_message(
    ws: ClientConnection, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10
) -> dict[str, Any]:
    """The first message that `wanted` accepts (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if wanted(message):
                return message  # type: ignore[no-any-return]


async def test_anonymous_and_rightless_callers_are_refused(
    platform: Platform, cities: Cities
) -> None:
    async with events(platform, None) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4401
    clerk = await scoped(platform, "clerk-zz", "clerk", "zz-mid")
    try:
        async with events(platform, clerk) as ws:
            with pytest.raises(websockets.ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 4403
    finally:
        await clerk.aclose()


async def test_hello_and_stream_news_follow_the_publisher_and_the_recorder(
    platform: Platform, cities: Cities, tmp_path: Path
) -> None:
    admin, zz, ly = cities.admin, cities.zz, cities.ly
    sub = {"id": "zz-cam-sub", "court": "zz-jinshui", "room": "Room 1"}
    assert (await admin.post("/api/v1/streams", json=sub)).status_code == 201
    async with events(platform, zz) as mine, events(platform, ly) as theirs:
        hello = json.loads(await mine.recv())
        assert hello["type"] == "hello" and hello["user"] == "op-zz"
        assert hello["role"] == "operator"
        by_id = {s["id"]: s for s in hello["streams"]}
        assert set(by_id) == {"zz-cam", "zz-cam-sub"}  # nothing of Luoyang
        assert by_id["zz-cam"] == {
            "id": "zz-cam",
            "court": "zz-jinshui",
            "room": "Room 1",
            "class": "trial",
            "title": "",
            "state": "live",
            "recording": False,
            "sub": "zz-cam-sub",
        }
        assert by_id["zz-cam-sub"]["state"] == "offline"
        assert by_id["zz-cam-sub"]["sub"] is None
        their_hello = json.loads(await theirs.recv())
        assert [s["id"] for s in their_hello["streams"]] == ["ly-cam"]

        # the publisher is killed, then comes back: offline, then live, by news alone
        publisher = cities.publishers["zz-cam"]
        await cancel(publisher)
        is_zz = lambda m: m["type"] == "stream" and m["id"] == "zz-cam"  # noqa: E731
        gone = await next_message(mine, is_zz, timeout=5)
        assert gone == {"type": "stream", "id": "zz-cam", "state": "offline", "recording": False}
        clip = make_clip(tmp_path, seconds=60, fps=25, gop=25, size=(320, 240))
        port = media(platform).rtmp_port
        url = f"rtmp://127.0.0.1:{port}/live/zz-cam?key={cities.keys['zz-cam']}"
        cities.publishers["zz-cam"] = asyncio.create_task(push(clip, url))
        back = await next_message(mine, is_zz, timeout=10)
        assert back["state"] == "live"
        await wait_live(platform, "zz-cam")

        # a trial session in the room: the recorder starts, then ends, recording its camera
        opened = await admin.post("/api/v1/sessions", json={"room": "Room 1", "case_number": "A-1"})
        assert opened.status_code == 201, opened.text
        recording = await next_message(mine, is_zz, timeout=10)
        assert recording == {"type": "stream", "id": "zz-cam", "state": "live", "recording": True}
        closed = await admin.post(f"/api/v1/sessions/{opened.json()['id']}/close")
        assert closed.status_code == 200, closed.text
        ended = await next_message(mine, is_zz, timeout=10)
        assert ended["recording"] is False

        # Luoyang's operator heard nothing of it
        with pytest.raises(TimeoutError):
            await next_message(theirs, lambda m: m.get("id", "").startswith("zz"), timeout=1)


async def test_a_wall_followed_and_acknowledged(platform: Platform, cities: Cities) -> None:
    admin, zz, ly = cities.admin, cities.zz, cities.ly
    is_big = lambda m: m["type"] == "wall" and m["name"] == "big"  # noqa: E731
    async with events(platform, ly) as screen, events(platform, zz) as console:
        await screen.send(json.dumps({"type": "subscribe", "walls": ["big"]}))
        await console.send(json.dumps({"type": "subscribe", "walls": ["big"]}))
        for ws in (screen, console):
            empty = await next_message(ws, is_big)
            assert empty["layout"] is None and empty["version"] == 0

        both = {"layout": "2x2", "tiles": ["zz-cam", "ly-cam", None, None]}
        put = await admin.put("/api/v1/walls/big", json=both)
        assert put.json()["version"] == 1
        shown = await next_message(screen, is_big)
        assert shown["version"] == 1 and shown["acked_version"] == 0
        assert shown["tiles"] == [None, "ly-cam", None, None]  # Luoyang's scope only
        assert shown["updated_by"] == "ada"
        pending = await next_message(console, is_big)
        assert pending["tiles"] == ["zz-cam", None, None, None]
        assert pending["version"] == 1 and pending["acked_version"] == 0

        await screen.send(json.dumps({"type": "ack", "wall": "big", "version": 1}))
        acked = await next_message(console, lambda m: is_big(m) and m["acked_version"] == 1)
        assert acked["version"] == 1
        assert (await admin.get("/api/v1/walls/big")).json()["acked_version"] == 1
        # an ack of a version the wall never had changes nothing
        await screen.send(json.dumps({"type": "ack", "wall": "big", "version": 9}))
        await screen.send("not json")
        await asyncio.sleep(0.3)
        assert (await admin.get("/api/v1/walls/big")).json()["acked_version"] == 1


def test_a_client_that_does_not_read_is_marked_too_slow() -> None:
    client = Client(ws=None, caller=None)  # type: ignore[arg-type]
    for n in range(client.outbox.maxsize):
        client.offer({"n": n})
    assert not client.too_slow.is_set()
    client.offer({"n": "one more"})
    assert client.too_slow.is_set()
    assert client.outbox.qsize() == client.outbox.maxsize  # nothing queued past the bound
