"""The agents' websocket with a real `websockets` client as the agent: heartbeats and their
acks, online/offline after 3 missed heartbeats (0.5 s here), no flapping on a short blip,
source and clock events, refusals with close code 4403."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_room.devices import DeviceRegistry
from courtcast.platform import Platform
from device_agents.protocol import WS_CLOSE_REFUSED, SourceHealth, TrackHealth, bearer
from tests.control_room.agent import FakeAgent, refused
from tests.control_room.conftest import (
    HEARTBEAT_S,
    connect_agent,
    control,
    enrol,
    signed_in,
    start_platform,
)

pytestmark = pytest.mark.timeout(60)


async def device_events(node: Platform, device_id: str) -> list[str]:
    registry: DeviceRegistry = control(node).devices
    return [e["event"] for e in await registry.events(device_id)]


async def wait_events(node: Platform, device_id: str, want: list[str], timeout: float = 3) -> None:
    """The ack goes out before the heartbeat is stored (its server_time must be prompt),
    so the events of the last heartbeat may land just after it."""
    deadline = time.monotonic() + timeout
    while (got := await device_events(node, device_id)) != want:
        if time.monotonic() > deadline:
            assert got == want
        await asyncio.sleep(0.02)


async def wait_state(
    admin: httpx.AsyncClient, device_id: str, want: str, timeout: float = 5
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        row = (await admin.get(f"/api/v1/devices/{device_id}")).json()
        if row["state"] == want:
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"{device_id} is {row['state']}, never became {want}")
        await asyncio.sleep(0.05)


async def test_heartbeats_online_then_offline_after_three_missed(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin)
    agent = await connect_agent(platform, enrolled, agents)
    before = time.time()
    ack = await agent.heartbeat(clock_offset_s=0.01)
    assert before <= ack.server_time <= time.time()
    row = await wait_state(admin, enrolled.device_id, "online")
    assert row["agent_version"] == "0.1.0" and row["spool_bytes"] == 1 << 20
    assert row["last_seen"] >= before
    assert {s["name"]: s["state"] for s in row["sources"]} == {"bench": "up", "wide": "up"}
    assert row["sources"][0]["fps"] == 25.0

    agent.start_heartbeats(HEARTBEAT_S)
    await asyncio.sleep(4 * HEARTBEAT_S)
    assert (await admin.get(f"/api/v1/devices/{enrolled.device_id}")).json()["state"] == "online"
    await agent.stop_heartbeats()
    await wait_state(admin, enrolled.device_id, "offline", timeout=10)
    took = time.monotonic() - agent.last_beat
    # 3 missed heartbeats (1.5 s) plus the presence margin and one loop tick, no more
    assert 3 * HEARTBEAT_S <= took <= 3 * HEARTBEAT_S + 0.8, took
    await agent.heartbeat()
    await wait_state(admin, enrolled.device_id, "online")
    await wait_events(platform, enrolled.device_id, ["enrolled", "online", "offline", "online"])


async def test_a_blip_shorter_than_three_heartbeats_does_not_flap(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin)
    agent = await connect_agent(platform, enrolled, agents)
    seen: list[str] = []

    async def watch() -> None:
        async with platform.roles[0].state.subscribe("devices") as changes:  # type: ignore
            async for msg in changes:
                seen.append(msg["event"])

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.2)
    await agent.heartbeat()
    for gap in (2.0, 2.5, 1.0, 2.5):  # gaps in heartbeats, all under 3 intervals
        await asyncio.sleep(gap * HEARTBEAT_S)
        await agent.heartbeat()
    await asyncio.sleep(1.0)
    watcher.cancel()
    await asyncio.gather(watcher, return_exceptions=True)
    assert seen == ["online"]
    assert await device_events(platform, enrolled.device_id) == ["enrolled", "online"]


async def test_source_and_clock_events(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin)
    agent = await connect_agent(platform, enrolled, agents)
    await agent.heartbeat(clock_offset_s=0.2)
    agent.sources[0] = SourceHealth(name="bench", state="down", reason="wrong credentials")
    for offset in (2.5, 2.7, -3.0):  # one excursion: one alert
        await agent.heartbeat(clock_offset_s=offset)
    await wait_events(
        platform, enrolled.device_id, ["enrolled", "online", "source-down", "clock-offset"]
    )
    row = (await admin.get(f"/api/v1/devices/{enrolled.device_id}")).json()
    assert row["sources"][0]["state"] == "down"
    assert row["sources"][0]["reason"] == "wrong credentials"
    assert row["clock_offset_s"] == -3.0
    agent.sources[0] = SourceHealth(name="bench", state="up")
    await agent.heartbeat(clock_offset_s=0.1)
    await agent.heartbeat(clock_offset_s=1.5)  # a second excursion: a second alert
    await wait_events(
        platform,
        enrolled.device_id,
        [
            "enrolled",
            "online",
            "source-down",
            "clock-offset",
            "source-up",
            "clock-ok",
            "clock-offset",
        ],
    )
    alerts = await platform.roles[0].state.read_events("alerts")  # type: ignore[attr-defined]
    clock = [a for _, a in alerts if a["kind"] == "clock-offset"]
    assert [a["offset_s"] for a in clock] == [2.5, 1.5]
    assert "clock off by +2.500 s" in clock[0]["message"]


async def test_a_dropped_track_is_an_event_and_an_alert_once(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin)
    agent = await connect_agent(platform, enrolled, agents)
    video = TrackHealth(kind="video", codec="h264", state="carried")
    second = TrackHealth(kind="audio", codec="pcmu", state="dropped: a second audio track")
    agent.sources[0] = SourceHealth(name="bench", state="up", tracks=[video, second])
    for _ in range(3):  # every heartbeat says so: one event
        await agent.heartbeat()
    agent.sources[0] = SourceHealth(name="bench", state="down", reason="unreachable")
    await agent.heartbeat()  # a camera away says nothing of its tracks
    agent.sources[0] = SourceHealth(name="bench", state="up", tracks=[video, second])
    await agent.heartbeat()
    await wait_events(
        platform,
        enrolled.device_id,
        ["enrolled", "online", "track-dropped", "source-down", "source-up"],
    )
    registry: DeviceRegistry = control(platform).devices
    [event] = [
        e for e in await registry.events(enrolled.device_id) if e["event"] == "track-dropped"
    ]
    assert (event["source"], event["track"], event["codec"]) == ("bench", "audio", "pcmu")
    assert event["reason"] == "a second audio track"
    row = (await admin.get(f"/api/v1/devices/{enrolled.device_id}")).json()
    assert row["sources"][0]["tracks"][1] == second.model_dump()
    alerts = await platform.roles[0].state.read_events("alerts")  # type: ignore[attr-defined]
    [dropped] = [a for _, a in alerts if a["kind"] == "track-dropped"]
    assert dropped["device"] == enrolled.device_id and "bench" in dropped["message"]


async def test_bad_credentials_are_refused_with_4403(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin)
    ws = f"ws://127.0.0.1:{platform.http_port}"
    assert await refused(ws, bearer(enrolled.device_id, "wrong")) == (
        WS_CLOSE_REFUSED,
        "wrong credentials",
    )
    assert await refused(ws, bearer("dev-12345678", "x")) == (WS_CLOSE_REFUSED, "unknown device")
    assert await refused(ws, "") == (WS_CLOSE_REFUSED, "unknown device")
    agent = await connect_agent(platform, enrolled, agents)
    await agent.heartbeat()
    answer = await admin.post(f"/api/v1/devices/{enrolled.device_id}/disable")
    assert answer.status_code == 200 and answer.json()["state"] == "disabled"
    assert await agent.closed() == (WS_CLOSE_REFUSED, "device disabled")
    assert await refused(ws, bearer(enrolled.device_id, enrolled.device_secret)) == (
        WS_CLOSE_REFUSED,
        "device disabled",
    )
    answer = await admin.post(f"/api/v1/devices/{enrolled.device_id}/enable")
    assert answer.json()["state"] in ("online", "offline")
    again = await connect_agent(platform, enrolled, agents)
    await again.heartbeat()


async def test_a_newer_connection_takes_over(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin)
    old = await connect_agent(platform, enrolled, agents)
    await old.heartbeat()
    new = await connect_agent(platform, enrolled, agents)
    code, reason = await old.closed()
    assert code == 4409 and "newer connection" in reason
    await new.heartbeat()


async def test_stop_with_agents_connected_is_prompt(tmp_path: Path) -> None:
    node = await start_platform(tmp_path / "data")
    agents: list[FakeAgent] = []
    try:
        admin = await signed_in(node, "ada", "admin")
        enrolled = await enrol(node, admin)
        await admin.aclose()
        agent = await connect_agent(node, enrolled, agents)
        agent.start_heartbeats(HEARTBEAT_S)
        await asyncio.sleep(HEARTBEAT_S)
    finally:
        started = time.monotonic()
        await node.stop()
        took = time.monotonic() - started
    code, _ = await agents[0].closed()
    await agents[0].close()
    assert code in (1001, 1012), code  # going away / service restart: the agent reconnects
    print(f"platform stop with an agent connected: {took:.2f} s (close code {code})")
    assert took < 4.0, took


async def test_bad_messages_are_ignored_and_a_binary_frame_closes_only_that_socket(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin)
    agent = await connect_agent(platform, enrolled, agents)
    assert agent.ws is not None
    for bad in (
        "not json",
        "[1, 2]",
        "{}",
        '{"type": "reboot"}',
        '{"type": "heartbeat", "sent_at": "yesterday"}',
        '{"type": "command-result", "ok": "maybe"}',
        "x" * 100_000,
    ):
        await agent.ws.send(bad)
    ack = await agent.heartbeat()  # the same socket still works after each of them
    assert ack.server_time > 0
    await wait_state(admin, enrolled.device_id, "online")

    other = await connect_agent(platform, await enrol(platform, admin, room="R2"), agents)
    await agent.ws.send(b"\x00\x01binary")
    assert await agent.closed() == (1003, "JSON text messages only")
    assert (await other.heartbeat()).server_time > 0, "other agents are not disturbed"
