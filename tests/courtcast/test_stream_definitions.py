"""Stream definitions over the API (issue 14, item 1): creating is not changing, changes
are PATCHes with rights and an audit entry each, and a key is rotated only when asked.

The platform runs as `courtcast up` runs it (test_platform.py's fixture), checks on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.audit import AUDIT_STREAM
from courtcast.platform import Platform
from media_server.streams import StreamRegistry
from recorder.sessions import TrialSessions
from tests.courtcast.test_platform import base_url, start_platform

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
