"""Two cities under one high court, as the scope and audit tests use them: the court
tree added over the API, a private courtroom camera per city published by ffmpeg over RTMP,
an operator scoped to each city and a province-wide admin."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from courtcast.platform import Platform
from tests.control_room.conftest import PASSWORD, base_url, control, media, signed_in
from tests.courtcast.test_platform import cancel, push, wait_live
from tests.fixtures.rtmp import RawRtmpClient
from tests.mediafiles import make_clip

HIGH = {"id": "hn-high", "name": "河南省高级人民法院", "name_en": "Henan High", "level": "high"}
ZHENGZHOU = {
    "id": "zz-mid",
    "name": "郑州市中级人民法院",
    "name_en": "Zhengzhou Intermediate",
    "level": "intermediate",
    "parent": "hn-high",
}
JINSHUI = {"id": "zz-jinshui", "name": "金水区人民法院", "level": "basic", "parent": "zz-mid"}
LUOYANG = {
    "id": "ly-mid",
    "name": "洛阳市中级人民法院",
    "level": "intermediate",
    "parent": "hn-high",
}


async def scoped(node: Platform, name: str, role: str, court: str) -> httpx.AsyncClient:
    """A signed-in client of a user scoped to a court's subtree."""
    await control(node).users.add(name, role, PASSWORD, court)
    client = httpx.AsyncClient(base_url=base_url(node), timeout=20)
    answer = await client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return client


@dataclass
class Cities:
    admin: httpx.AsyncClient  # the province
    zz: httpx.AsyncClient  # operator, Zhengzhou's subtree
    ly: httpx.AsyncClient  # operator, Luoyang's subtree
    keys: dict[str, str]
    # stream id -> its ffmpeg publisher; a test may replace one (kill and restart)
    publishers: dict[str, asyncio.Task[Any]] = field(default_factory=dict)


@asynccontextmanager
async def two_cities(platform: Platform, tmp_path: Path) -> AsyncIterator[Cities]:
    admin = await signed_in(platform, "ada", "admin")
    for court in (HIGH, ZHENGZHOU, JINSHUI, LUOYANG):
        added = await admin.post("/api/v1/courts", json=court)
        assert added.status_code == 201, added.text
    keys = {}
    # courts named by name (zh) and by id: both resolve to the tree's node
    for stream_id, court, room in (
        ("zz-cam", "金水区人民法院", "Room 1"),
        ("ly-cam", "ly-mid", "Room 2"),
    ):
        made = await admin.post(
            "/api/v1/streams",
            json={"id": stream_id, "court": court, "room": room, "stream_class": "trial"},
        )
        assert made.status_code == 201, made.text
        keys[stream_id] = made.json()["key"]
    assert (await admin.get("/api/v1/streams/zz-cam")).json()["court"] == "zz-jinshui"
    clip = make_clip(tmp_path, seconds=60, fps=25, gop=25, size=(320, 240))
    port = media(platform).rtmp_port
    publishers = {
        s: asyncio.create_task(push(clip, f"rtmp://127.0.0.1:{port}/live/{s}?key={k}"))
        for s, k in keys.items()
    }
    for stream_id in keys:
        await wait_live(platform, stream_id)
    zz = await scoped(platform, "op-zz", "operator", "zz-mid")
    ly = await scoped(platform, "op-ly", "operator", "洛阳市中级人民法院")  # by name too
    try:
        yield Cities(admin, zz, ly, keys, publishers)
    finally:
        await teardown(list(publishers.values()), [admin, zz, ly])


async def teardown(publishers: list[asyncio.Task[Any]], clients: list[httpx.AsyncClient]) -> None:
    for publisher in publishers:
        await cancel(publisher)
    for client in clients:
        await client.aclose()


async def rtmp_bytes(node: Platform, name: str, seconds: float = 2.0) -> int:
    """What an RTMP player of `name` receives in `seconds` (a refused one: a few bytes)."""
    client = await RawRtmpClient.connect(media(node).rtmp_port)
    received = 0
    try:
        await client.play(name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                chunk = await asyncio.wait_for(client.reader.read(65536), left)
            except TimeoutError:
                break
            if not chunk:
                break
            received += len(chunk)
    finally:
        await client.close()
    return received


async def wait_recording(client: httpx.AsyncClient, room: str) -> dict[str, Any]:
    for _ in range(100):
        found = (await client.get("/api/v1/recordings", params={"room": room})).json()
        if found["recordings"]:
            return found["recordings"][0]  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no recording of {room}")
