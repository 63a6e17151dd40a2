"""Stream definitions over the API (issue 14, item 1): creating is not changing, changes
are PATCHes with rights and an audit entry each, and a key is rotated only when asked.

The platform runs as `courtcast up` runs it (test_platform.py's fixture), checks on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import VideoStreamTrack

from core.audit import AUDIT_STREAM
from courtcast.platform import Platform
from media_server.patches.aiortc_ice_addresses import bind_candidate_addresses
from media_server.streams import StreamRegistry
from media_server.webrtc.ice import IceConfig, new_peer_connection
from recorder.sessions import TrialSessions
from tests.courtcast.test_platform import (
    base_url,
    cancel,
    media_role,
    push,
    start_platform,
    wait_live,
)
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(60)

PASSWORD = "correct horse battery"


def state(node: Platform) -> Any:
    return node.roles[0].state  # type: ignore[attr-defined]


async def signed_in(node: Platform, name: str, role: str) -> httpx.AsyncClient:
    users = node.roles[-1].users  # type: ignore[attr-defined]
    await users.add(name, role, PASSWORD)
    client = httpx.AsyncClient(base_url=base_url(node), timeout=10)
    login = await client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert login.status_code == 200, login.text
    client.headers["Authorization"] = f"Bearer {login.json()['token']}"
    return client


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    node = await start_platform(tmp_path)
    yield node
    await node.stop()


@pytest.fixture
async def clients(platform: Platform) -> AsyncIterator[tuple[httpx.AsyncClient, ...]]:
    admin = await signed_in(platform, "ada", "admin")
    tech = await signed_in(platform, "tom", "technician")
    yield admin, tech
    await admin.aclose()
    await tech.aclose()


async def audit_entries(node: Platform, action: str) -> list[dict[str, Any]]:
    return [e for _, e in await state(node).latest_events(AUDIT_STREAM) if e["action"] == action]


async def test_creating_an_existing_stream_is_a_409_and_keeps_its_key(
    platform: Platform, clients: tuple[httpx.AsyncClient, ...]
) -> None:
    admin, _ = clients
    made = await admin.post("/api/v1/streams", json={"id": "court-a", "room": "room-1"})
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    again = await admin.post("/api/v1/streams", json={"id": "court-a", "public": True})
    assert again.status_code == 409, again.text
    assert "PATCH" in again.json()["detail"]
    registry = StreamRegistry(state(platform))
    assert await registry.key_matches("court-a", key)
    definition = await registry.get("court-a")
    assert definition is not None and not definition.public and definition.room == "room-1"
    created = await audit_entries(platform, "stream.create")
    assert [e["stream"] for e in created] == ["court-a"] and created[0]["who"] == "ada"


async def test_patch_changes_with_rights_and_audits_before_and_after(
    platform: Platform, clients: tuple[httpx.AsyncClient, ...]
) -> None:
    admin, tech = clients
    key = (await admin.post("/api/v1/streams", json={"id": "court-a"})).json()["key"]
    titled = await tech.patch("/api/v1/streams/court-a", json={"title": "Room 1, wide"})
    assert titled.status_code == 200, titled.text
    assert titled.json()["title"] == "Room 1, wide" and "key" not in titled.json()
    for change in ({"public": True}, {"stream_class": "security"}, {"room": "room-9"}):
        refused = await tech.patch("/api/v1/streams/court-a", json=change)
        assert refused.status_code == 403, (change, refused.text)
    public = await admin.patch("/api/v1/streams/court-a", json={"public": True})
    assert public.status_code == 200 and public.json()["public"] is True
    missing = await admin.patch("/api/v1/streams/nope", json={"title": "x"})
    assert missing.status_code == 404
    assert await StreamRegistry(state(platform)).key_matches("court-a", key)  # not rotated
    updates = await audit_entries(platform, "stream.update")
    assert [(e["who"], e["before"], e["after"]) for e in updates] == [
        ("tom", {"title": ""}, {"title": "Room 1, wide"}),
        ("ada", {"public": False}, {"public": True}),
    ]


async def test_access_does_not_change_under_an_open_session(
    platform: Platform, clients: tuple[httpx.AsyncClient, ...]
) -> None:
    admin, _ = clients
    await admin.post("/api/v1/streams", json={"id": "court-a", "room": "room-1", "public": True})
    session = await TrialSessions(state(platform)).open("room-1", "C-1")
    for change in ({"public": False}, {"stream_class": "arraignment"}, {"room": "room-2"}):
        refused = await admin.patch("/api/v1/streams/court-a", json=change)
        assert refused.status_code == 409, (change, refused.text)
        assert session.id in refused.json()["detail"]
    assert (await admin.patch("/api/v1/streams/court-a", json={"title": "t"})).status_code == 200
    await TrialSessions(state(platform)).close(session.id)
    moved = await admin.patch("/api/v1/streams/court-a", json={"room": "room-2"})
    assert moved.status_code == 200, moved.text


async def test_a_key_is_rotated_only_by_its_own_call(
    platform: Platform, clients: tuple[httpx.AsyncClient, ...]
) -> None:
    admin, tech = clients
    old = (await admin.post("/api/v1/streams", json={"id": "court-a"})).json()["key"]
    rotated = await tech.post("/api/v1/streams/court-a/rotate-key")
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["key"]
    registry = StreamRegistry(state(platform))
    assert new != old and await registry.key_matches("court-a", new)
    assert not await registry.key_matches("court-a", old)
    assert (await tech.post("/api/v1/streams/nope/rotate-key")).status_code == 404
    async with httpx.AsyncClient(base_url=base_url(platform)) as anonymous:
        assert (await anonymous.post("/api/v1/streams/court-a/rotate-key")).status_code == 401
    entries = await audit_entries(platform, "stream.rotate-key")
    assert [(e["who"], e["stream"]) for e in entries] == [("tom", "court-a")]
    assert old not in str(entries) and new not in str(entries)


async def test_rotating_a_key_disconnects_the_publisher_on_the_old_one(
    platform: Platform, clients: tuple[httpx.AsyncClient, ...], tmp_path: Path
) -> None:
    admin, _ = clients
    clip = make_clip(tmp_path, seconds=30, fps=25, gop=25, size=(320, 240))
    old = (await admin.post("/api/v1/streams", json={"id": "court-a"})).json()["key"]
    rtmp = f"rtmp://127.0.0.1:{media_role(platform).rtmp_port}/live/court-a?key="
    publisher = asyncio.create_task(push(clip, rtmp + old))
    try:
        await wait_live(platform, "court-a")
        rotated = await admin.post("/api/v1/streams/court-a/rotate-key")
        assert rotated.status_code == 200, rotated.text
        # the 30 s clip would still be playing: it ends because the server hung up
        await asyncio.wait({publisher}, timeout=5)
        assert publisher.done(), "the publisher on the old key is still streaming"
        code, out = publisher.result()
        assert code != 0, out
        await wait_off_air(platform, "court-a", 1)
        refused, _ = await push(clip, rtmp + old)
        assert refused != 0
        publisher = asyncio.create_task(push(clip, rtmp + rotated.json()["key"]))
        await wait_live(platform, "court-a")
        await asyncio.sleep(1.0)
        assert not publisher.done()  # the new key publishes and is not disconnected
    finally:
        await cancel(publisher)


async def whip_publish(node: Platform, stream_id: str, key: str) -> RTCPeerConnection:
    """An aiortc WHIP publisher sending H.264 (blank frames); 201 or AssertionError."""
    pc = new_peer_connection(IceConfig())
    transceiver = pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    codecs = RTCRtpSender.getCapabilities("video").codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType == "video/H264"])
    bind_candidate_addresses(pc, ["127.0.0.1"])
    await pc.setLocalDescription(await pc.createOffer())
    async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as http:
        answer = await http.post(
            f"/whip/{stream_id}",
            content=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {key}"},
        )
    if answer.status_code != 201:
        await pc.close()
        raise AssertionError(f"WHIP publish refused: {answer.status_code} {answer.text}")
    await pc.setRemoteDescription(RTCSessionDescription(answer.text, "answer"))
    return pc


async def wait_off_air(node: Platform, stream_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (stream := media_role(node).hub.find(stream_id)) is not None and stream.live:
        assert time.monotonic() < deadline, f"{stream_id} is still published on the old key"
        await asyncio.sleep(0.05)


async def test_rotating_a_key_disconnects_a_whip_publisher_on_the_old_one(
    platform: Platform, clients: tuple[httpx.AsyncClient, ...]
) -> None:
    admin, _ = clients
    old = (await admin.post("/api/v1/streams", json={"id": "court-a"})).json()["key"]
    first = await whip_publish(platform, "court-a", old)
    second: RTCPeerConnection | None = None
    try:
        await wait_live(platform, "court-a")
        rotated = await admin.post("/api/v1/streams/court-a/rotate-key")
        await wait_off_air(platform, "court-a", 5)
        with pytest.raises(AssertionError, match=r"401 .*wrong or missing key"):
            await (await whip_publish(platform, "court-a", old)).close()
        second = await whip_publish(platform, "court-a", rotated.json()["key"])
        await wait_live(platform, "court-a")
        await asyncio.sleep(1.0)
        await wait_live(platform, "court-a", timeout=0.1)  # still on air
    finally:
        await first.close()
        if second is not None:
            await second.close()


@pytest.mark.parametrize(
    "source_url",
    ["rtsp://[::1/cam", "rtsp://cam.local:99999/main", "rtsp://cam.local/main\r\nHost: x", 7],
)
async def test_a_malformed_source_url_is_a_422_on_patch_as_on_post(
    platform: Platform, clients: tuple[httpx.AsyncClient, ...], source_url: object
) -> None:
    admin, _ = clients
    assert (await admin.post("/api/v1/streams", json={"id": "court-a"})).status_code == 201
    created = await admin.post("/api/v1/streams", json={"id": "court-b", "source_url": source_url})
    changed = await admin.patch("/api/v1/streams/court-a", json={"source_url": source_url})
    assert (created.status_code, changed.status_code) == (422, 422), changed.text
    assert changed.json()["detail"][0]["loc"] == ["body", "source_url"]
    definition = await StreamRegistry(state(platform)).get("court-a")
    assert definition is not None and definition.source_url == ""
