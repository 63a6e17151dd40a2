"""Disable and revoke reach everything at once: the agent's websocket is closed with 4403,
a real ffmpeg RTMP publisher on the device's stream is disconnected, and both are refused
when they come back; enable (after disable only) restores the same keys."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from courtcast.platform import Platform
from device_agents.protocol import WS_CLOSE_REFUSED, EnrolResponse, SourceInfo, bearer
from media_server.consumer import QueuedConsumer
from media_server.media import StreamEnd
from media_server.streams import StreamRegistry
from tests.control_room.agent import FakeAgent, refused
from tests.control_room.conftest import connect_agent, enrol, media

pytestmark = pytest.mark.timeout(60)


async def ffmpeg_publish(url: str) -> asyncio.subprocess.Process:
    """A live test pattern published over RTMP (H.264 + AAC), until killed."""
    return await asyncio.create_subprocess_exec(
        "ffmpeg",
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        "40",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-tune",
        "zerolatency",
        "-g",
        "25",
        "-c:a",
        "aac",
        "-f",
        "flv",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def wait_live(node: Platform, stream_id: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not ((s := media(node).hub.find(stream_id)) and s.live and s.tracks):
        assert time.monotonic() < deadline, f"{stream_id} never went live"
        await asyncio.sleep(0.05)


async def next_end(sub: QueuedConsumer) -> StreamEnd:
    async for item in sub:
        if isinstance(item, StreamEnd):
            return item
    raise AssertionError("subscription ended without a StreamEnd")


def publish_url(node: Platform, enrolled: EnrolResponse, source: str) -> str:
    cred = enrolled.streams[source].main
    assert enrolled.rtmp_url == f"rtmp://127.0.0.1:{media(node).rtmp_port}/live"
    return f"{enrolled.rtmp_url}/{cred.stream_id}?key={cred.key}"


async def test_revoke_closes_the_websocket_and_drops_the_publisher(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin, sources=[SourceInfo(name="bench", kind="test")])
    agent = await connect_agent(platform, enrolled, agents)
    await agent.heartbeat()
    stream_id = enrolled.streams["bench"].main.stream_id
    url = publish_url(platform, enrolled, "bench")
    publisher = await ffmpeg_publish(url)
    try:
        await wait_live(platform, stream_id)
        watcher = media(platform).hub.subscribe(stream_id, "test watcher")
        revoked_at = time.monotonic()
        answer = await admin.post(f"/api/v1/devices/{enrolled.device_id}/revoke")
        assert answer.status_code == 200 and answer.json()["state"] == "revoked"
        assert await agent.closed() == (WS_CLOSE_REFUSED, "device revoked")
        await asyncio.wait_for(publisher.wait(), 5)
        dropped_in = time.monotonic() - revoked_at
        assert publisher.returncode != 0
        assert dropped_in < 2.0, dropped_in
        end = await asyncio.wait_for(next_end(watcher), 5)
        assert end.reason == "stream disabled"
        watcher.close()
    finally:
        if publisher.returncode is None:
            publisher.kill()
            await publisher.wait()
    retry = await ffmpeg_publish(url)
    await asyncio.wait_for(retry.communicate(), 15)
    assert retry.returncode != 0
    assert not media(platform).hub.find(stream_id) or not media(platform).hub.find(stream_id).live
    ws = f"ws://127.0.0.1:{platform.http_port}"
    credential = bearer(enrolled.device_id, enrolled.device_secret)
    assert await refused(ws, credential) == (WS_CLOSE_REFUSED, "device revoked")
    again = await admin.post(f"/api/v1/devices/{enrolled.device_id}/enable")
    assert again.status_code == 409 and "revoked" in again.json()["detail"]
    definition = await StreamRegistry(platform.roles[0].state).get(stream_id)  # type: ignore
    assert definition is not None and not definition.enabled
    audit = await platform.roles[0].state.read_events("audit")  # type: ignore[attr-defined]
    assert ("device.revoke", "ada") in [(e["action"], e["who"]) for _, e in audit]


async def test_disable_then_enable_restores_the_same_keys(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    enrolled = await enrol(platform, admin)
    streams = StreamRegistry(platform.roles[0].state)  # type: ignore[attr-defined]
    cred = enrolled.streams["bench"].sub
    assert cred is not None
    await admin.post(f"/api/v1/devices/{enrolled.device_id}/disable")
    disabled = await streams.get(cred.stream_id)
    assert disabled is not None and not disabled.enabled
    answer = await admin.post(f"/api/v1/devices/{enrolled.device_id}/enable")
    assert answer.status_code == 200 and answer.json()["state"] == "never-seen"
    enabled = await streams.get(cred.stream_id)
    assert enabled is not None and enabled.enabled
    assert await streams.key_matches(cred.stream_id, cred.key)
