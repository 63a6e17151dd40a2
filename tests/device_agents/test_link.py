"""The control link against a small real websocket server speaking protocol.py: bearer
header, heartbeats, clock offset from acks, commands answered (unknown ones refused), and
close code 4403 makes the agent back off instead of hammering the server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from device_agents.agent import Agent
from device_agents.link import ClockOffset, ws_url
from device_agents.protocol import WS_CLOSE_REFUSED, WS_PATH, Heartbeat, HeartbeatAck
from tests.device_agents.helpers import agent_config, source, until
from tests.fixtures.rtsp_camera import free_port

pytestmark = pytest.mark.timeout(60)
SKEW_S = 100.0  # the server's clock runs this far ahead of the agent's


class ControlPlane:
    def __init__(self) -> None:
        self.beats: list[Heartbeat] = []
        self.results: dict[str, dict[str, Any]] = {}
        self.auth: list[str] = []
        self.paths: list[str] = []
        self.refuse = False
        self.connections = 0
        self.ws: ServerConnection | None = None

    async def handler(self, ws: ServerConnection) -> None:
        self.connections += 1
        self.paths.append(ws.request.path)
        self.auth.append(ws.request.headers.get("Authorization", ""))
        if self.refuse:
            await ws.close(WS_CLOSE_REFUSED, "device revoked")
            return
        self.ws = ws
        async for raw in ws:
            data = json.loads(raw)
            if data["type"] == "heartbeat":
                beat = Heartbeat.model_validate(data)
                self.beats.append(beat)
                await ws.send(
                    HeartbeatAck(
                        sent_at=beat.sent_at, server_time=time.time() + SKEW_S
                    ).model_dump_json()
                )
            else:
                self.results[data["id"]] = data

    async def command(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.ws is not None
        await self.ws.send(json.dumps({"type": "command", **body}))
        return await until(lambda: self.results.get(body["id"]), 15, f"result {body['id']}")


async def test_heartbeats_clock_commands_and_refusal(tmp_path: Path) -> None:
    plane = ControlPlane()
    async with serve(plane.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = agent_config(
            tmp_path,
            free_port(),
            {"pattern": source("test", "test:320x240", ("c-r-p", "k"))},
            server=f"http://127.0.0.1:{port}",
            heartbeat_s=0.2,
        )
        agent = Agent(config)
        await agent.start()
        try:
            await until(lambda: len(plane.beats) >= 4, 15, "heartbeats")
            assert plane.paths[0] == WS_PATH and plane.auth[0] == "Bearer dev-1.s3cret"
            beat = plane.beats[-1]
            assert beat.sources[0].name == "pattern" and beat.clock_offset_s is not None
            assert abs(beat.clock_offset_s - SKEW_S) < 0.1
            await until(lambda: plane.beats[-1].sources[0].state == "up", 15)

            shot = await plane.command({"id": "s1", "name": "snapshot", "args": {}})
            assert shot["ok"] and (shot["data"]["width"], shot["data"]["height"]) == (320, 240)
            unknown = await plane.command({"id": "u1", "name": "self-destruct"})
            assert not unknown["ok"] and "bad command" in unknown["error"]
            stop = await plane.command({"id": "x1", "name": "stop", "args": {"source": "nope"}})
            assert not stop["ok"] and "unknown source 'nope'" in stop["error"]
            stopped = await plane.command({"id": "x2", "name": "stop", "args": {}})
            assert stopped["ok"] and not agent.units["pattern"].publishers["c-r-p"].enabled
            started = await plane.command({"id": "x3", "name": "start", "args": {}})
            assert started["ok"] and agent.units["pattern"].publishers["c-r-p"].enabled

            # revoked: the server closes with 4403; the agent waits refused_retry_s
            assert agent.link is not None
            agent.link.refused_retry_s = 30.0
            plane.refuse = True
            assert plane.ws is not None
            await plane.ws.close(1012, "restart")
            await until(lambda: agent.link.state == "refused", 10)
            assert "device revoked" in agent.link.problem
            tries = plane.connections
            await asyncio.sleep(1.5)
            assert plane.connections == tries  # no retry storm
        finally:
            await agent.stop()


def test_clock_offset_is_the_midpoint_and_smoothed() -> None:
    clock = ClockOffset()
    assert clock.sample(sent_at=10.0, server_time=15.5, received_at=11.0) == 5.0
    clock.sample(sent_at=20.0, server_time=30.5, received_at=21.0)  # an outlier: 10 s
    assert clock.value == pytest.approx(5.0 + 0.2 * 5.0)
    assert ws_url("https://cc.example/") == "wss://cc.example" + WS_PATH
    assert ws_url("http://127.0.0.1:8080") == "ws://127.0.0.1:8080" + WS_PATH
