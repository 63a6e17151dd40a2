"""Control-room test setup: the real platform (embedded Redis, disk objects, RTMP) on free
ports with a short heartbeat, a signed-in HTTP client per role, and an agent stand-in that
speaks device_agents/protocol.py over a real websocket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import load_config
from courtcast.platform import Platform
from device_agents.protocol import ENROLL_PATH, EnrolResponse, SourceInfo
from tests.control_room.agent import FakeAgent

HEARTBEAT_S = 0.5
PASSWORD = "correct horse battery"


async def start_platform(data_dir: Path, **overrides: Any) -> Platform:
    config = load_config(
        overrides={
            "node.data_dir": str(data_dir),
            "http.port": 0,
            "rtmp.port": 0,
            "devices.heartbeat_s": HEARTBEAT_S,
            **overrides,
        },
        environ={},
    )
    node = Platform(config)
    await node.start()
    return node


@pytest.fixture
async def platform(tmp_path: Path) -> AsyncIterator[Platform]:
    node = await start_platform(tmp_path / "data")
    yield node
    await node.stop()


def control(node: Platform) -> Any:
    return next(r for r in node.roles if r.name == "control_room")


def media(node: Platform) -> Any:
    return next(r for r in node.roles if r.name == "media_server")


def base_url(node: Platform) -> str:
    return f"http://127.0.0.1:{node.http_port}"


async def signed_in(node: Platform, name: str, role: str) -> httpx.AsyncClient:
    """An HTTP client with the session of a new user of that role."""
    await control(node).users.add(name, role, PASSWORD)
    client = httpx.AsyncClient(base_url=base_url(node), timeout=10)
    answer = await client.post("/api/v1/login", json={"name": name, "password": PASSWORD})
    assert answer.status_code == 200, answer.text
    return client


@pytest.fixture
async def cities(platform: Platform, tmp_path: Path) -> AsyncIterator[Any]:
    """Two cities under one high court (tests/control_room/cities.py)."""
    from tests.control_room.cities import two_cities

    async with two_cities(platform, tmp_path) as made:
        yield made


@pytest.fixture
async def admin(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    client = await signed_in(platform, "ada", "admin")
    yield client
    await client.aclose()


async def enrol(
    node: Platform,
    admin: httpx.AsyncClient,
    court: str = "Zhengzhou High",
    room: str = "Room 3",
    sources: list[SourceInfo] | None = None,
    model: str = "Hikvision DS-2CD2143G2",
) -> EnrolResponse:
    made = await admin.post("/api/v1/devices/enrol-tokens", json={"court": court, "room": room})
    assert made.status_code == 201, made.text
    sources = (
        sources
        if sources is not None
        else [
            SourceInfo(name="bench", kind="rtsp", has_sub=True),
            SourceInfo(name="wide", kind="test"),
        ]
    )
    body = {
        "token": made.json()["token"],
        "model": model,
        "agent_version": "0.1.0",
        "sources": [s.model_dump() for s in sources],
    }
    async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as anonymous:
        answer = await anonymous.post(ENROLL_PATH, json=body)
    assert answer.status_code == 200, answer.text
    return EnrolResponse(**answer.json())


@pytest.fixture
async def agents(platform: Platform) -> AsyncIterator[list[FakeAgent]]:
    """Agents made by tests are closed at teardown."""
    made: list[FakeAgent] = []
    yield made
    for agent in made:
        await agent.close()


async def connect_agent(
    node: Platform, enrolled: EnrolResponse, agents: list[FakeAgent]
) -> FakeAgent:
    agent = FakeAgent(f"ws://127.0.0.1:{node.http_port}", enrolled)
    agents.append(agent)
    await agent.connect()
    return agent
