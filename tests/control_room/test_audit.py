"""The audit trail (issue 15, item 6): each audited action with who, what, when and from
where; `GET /api/v1/audit` with its filters and as CSV; a scoped admin reads its subtree;
and anonymous failures are counted, not written one entry each."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from typing import Any

import httpx
import pytest

from core.audit import AUDIT_STREAM
from courtcast.platform import Platform
from tests.control_room.cities import Cities, rtmp_bytes, scoped, wait_recording
from tests.control_room.conftest import base_url, control
from tests.media_server.test_webrtc_http import frames, open_viewer

pytestmark = pytest.mark.timeout(180)


async def trail(client: httpx.AsyncClient, **filters: Any) -> list[dict[str, Any]]:
    answer = await client.get("/api/v1/audit", params=filters)
    assert answer.status_code == 200, answer.text
    return answer.json()["entries"]  # type: ignore[no-any-return]


def one(entries: list[dict[str, Any]], action: str, **fields: Any) -> dict[str, Any]:
    found = [
        e
        for e in entries
        if e["action"] == action and all(e.get(k) == v for k, v in fields.items())
    ]
    assert len(found) == 1, f"{action} {fields}: {len(found)} entries in {entries}"
    return found[0]


async def test_each_audited_action_has_who_what_when_and_where(
    platform: Platform, cities: Cities
) -> None:
    admin, zz = cities.admin, cities.zz
    started = time.time()
    # views of a private stream: LL-HLS once per viewer, WHEP and RTMP each time
    for _ in range(5):
        assert (await zz.get("/live/zz-cam/index.m3u8")).status_code == 200
    token = (await zz.get("/api/v1/streams/zz-cam/play-url")).json()["token"]
    viewer = await open_viewer(base_url(platform), f"zz-cam?token={token}")
    try:
        assert viewer.response.status_code == 201
        assert len(await frames(viewer.track("video"), 3)) == 3
    finally:
        await viewer.close()
    assert await rtmp_bytes(platform, f"zz-cam?key={token}") > 10_000
    # a definition change, a session and its recording played and exported
    assert (
        await admin.patch("/api/v1/streams/ly-cam", json={"title": "洛阳 2"})
    ).status_code == 200
    clerk = await scoped(platform, "clerk-zz", "clerk", "zz-mid")
    try:
        opened = await clerk.post("/api/v1/sessions", json={"room": "Room 1", "case_number": "A-1"})
        assert opened.status_code == 201, opened.text
        sid = opened.json()["id"]
        rid = (await wait_recording(clerk, "Room 1"))["id"]
        for _ in range(3):
            assert (await clerk.get(f"/api/v1/recordings/{rid}/index.m3u8")).status_code == 200
        await asyncio.sleep(2.5)
        recess = await clerk.post(f"/api/v1/sessions/{sid}/recess", json={"reason": "lunch"})
        assert recess.status_code == 200, recess.text
        assert (await clerk.post(f"/api/v1/sessions/{sid}/resume")).status_code == 200
        assert (await clerk.post(f"/api/v1/sessions/{sid}/close")).status_code == 200
        for _ in range(50):  # the recorder closes the recording (its last segment) at once
            clip = await clerk.get(
                f"/api/v1/recordings/{rid}/export.mp4", params={"from": "+0", "to": "+2"}
            )
            if clip.status_code != 400:
                break
            await asyncio.sleep(0.2)
        assert clip.status_code == 200, clip.text
    finally:
        await clerk.aclose()
    # enrolment and a device command (the device is not connected: audited as such)
    made = await admin.post(
        "/api/v1/devices/enrol-tokens", json={"court": "金水区人民法院", "room": "Room 1"}
    )
    assert made.status_code == 201
    body = {"model": "m", "agent_version": "0", "sources": [{"name": "cam", "kind": "test"}]}
    async with httpx.AsyncClient(base_url=base_url(platform)) as device:
        enrolled = await device.post(
            "/api/v1/devices/enroll", json={**body, "token": made.json()["token"]}
        )
    assert enrolled.status_code == 200, enrolled.text
    device_id = enrolled.json()["device_id"]
    command = await zz.post(f"/api/v1/devices/{device_id}/commands", json={"name": "snapshot"})
    assert command.status_code == 409
    for verb in ("disable", "enable"):
        assert (await admin.post(f"/api/v1/devices/{device_id}/{verb}")).status_code == 200

    entries = await trail(admin, since=started - 60)
    local = "127.0.0.1"
    for who in ("ada", "op-zz", "op-ly", "clerk-zz"):
        assert one(entries, "signin", who=who)["peer"] == local
    hls = one(entries, "stream.view", via="ll-hls", who="op-zz")
    assert (hls["stream"], hls["court"], hls["peer"]) == ("zz-cam", "zz-jinshui", local)
    assert one(entries, "stream.view", via="whep", who="op-zz")["peer"] == local
    assert one(entries, "stream.view", via="rtmp", who="op-zz")["peer"].startswith(local)
    assert one(entries, "stream.play-url", who="op-zz")["stream"] == "zz-cam"
    update = one(entries, "stream.update", who="ada", stream="ly-cam")
    assert (update["after"], update["court"], update["peer"]) == (
        {"title": "洛阳 2"},
        "ly-mid",
        local,
    )
    assert one(entries, "session.open", who="clerk-zz", session=sid)["court"] == "zz-jinshui"
    for change in ("recess", "resume", "close"):
        entry = one(entries, f"session.{change}", who="clerk-zz", session=sid)
        assert (entry["court"], entry["peer"]) == ("zz-jinshui", local)
    assert one(entries, "recording.play", who="clerk-zz", recording=rid)["peer"] == local
    assert one(entries, "export", who="clerk-zz", recording=rid)["court"] == "zz-jinshui"
    assert one(entries, "device.enrol-token", who="ada")["court"] == "zz-jinshui"
    assert one(entries, "device.enrolled", who=f"device {device_id}")["peer"] == local
    snap = one(entries, "device.command", who="op-zz", device=device_id)
    assert (snap["outcome"], snap["peer"]) == ("not connected", local)
    for verb in ("disable", "enable"):
        changed = one(entries, f"device.{verb}", who="ada", device=device_id)
        assert (changed["court"], changed["peer"]) == ("zz-jinshui", local)
    assert one(entries, "court.add", who="ada", court="zz-mid")["peer"] == local
    assert entries == sorted(entries, key=lambda e: e["at"], reverse=True)  # newest first

    # filters: user, action (exact or its family), court's subtree, time
    assert {e["who"] for e in await trail(admin, user="op-zz")} == {"op-zz"}
    assert {e["action"] for e in await trail(admin, action="session")} == {
        "session.open",
        "session.recess",
        "session.resume",
        "session.close",
    }
    zz_courts = {e.get("court") for e in await trail(admin, court="zz-mid")}
    assert zz_courts == {"zz-mid", "zz-jinshui"}  # the courts added, and what was done there
    assert {e.get("court") for e in await trail(admin, court="hn-high")} >= {"zz-jinshui", "ly-mid"}
    recent = await trail(admin, since=update["at"])
    assert recent and min(e["at"] for e in recent) >= update["at"]
    assert all(e["at"] <= hls["at"] for e in await trail(admin, until=hls["at"]))

    # CSV: the same entries, parsed by a stock reader
    for path, params in (("/api/v1/audit.csv", {}), ("/api/v1/audit", {"format": "csv"})):
        answer = await admin.get(path, params={"user": "op-zz", **params})
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(answer.text)))
        assert len(rows) == len(await trail(admin, user="op-zz"))
        assert {r["who"] for r in rows} == {"op-zz"}
        view = next(r for r in rows if r["action"] == "stream.view")
        assert view["peer"].startswith(local) and view["court"] == "zz-jinshui"

    # who may read it: admins, each its own subtree
    assert (await zz.get("/api/v1/audit")).status_code == 403
    ly_admin = await scoped(platform, "admin-ly", "admin", "ly-mid")
    try:
        assert {e.get("court") for e in await trail(ly_admin)} == {"ly-mid"}
        assert (await ly_admin.get("/api/v1/audit", params={"court": "zz-mid"})).status_code == 404
    finally:
        await ly_admin.aclose()


async def test_a_thousand_failed_anonymous_requests_add_a_bounded_number_of_entries(
    platform: Platform,
) -> None:
    state = control(platform).storage.state
    await control(platform).users.add("ada", "admin", "correct horse battery")
    registry_key = await _private_stream(platform)
    assert registry_key
    before = await _trail_length(state)
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=30) as anonymous:
        for n in range(1000):
            # wrong passwords for a real and for made-up users; private and unknown streams
            name = "ada" if n % 2 else f"nobody{n}"
            await anonymous.post("/api/v1/login", json={"name": name, "password": "wrong"})
        for n in range(1000):
            await anonymous.get("/live/hall-cam/index.m3u8", params={"token": f"1.{n}"})
    added = await _trail_length(state) - before
    print(f"1,000 failed sign-ins and 1,000 refused plays added {added} audit entries")
    # a hold per user and per address (doubling): a handful, never one per request
    # each subject (the address, the user) is held 1 s, 2 s, 4 s, ...: about log2(duration)
    # holds each, so a bound that does not grow with the number of requests
    assert added <= 20


async def _private_stream(node: Platform) -> str:
    from media_server.streams import StreamClass, StreamDefinition, StreamRegistry

    registry = StreamRegistry(control(node).storage.state)
    return await registry.define(StreamDefinition(id="hall-cam", stream_class=StreamClass.security))


async def _trail_length(state: Any) -> int:
    return int(await state.raw.xlen(f"{state.prefix}stream:{AUDIT_STREAM}"))
