"""Commands to a device through the API, over Redis pub/sub, to the agent's websocket and
back: an acknowledged round trip, a visible timeout, a snapshot JPEG stored and served."""

from __future__ import annotations

import base64
import io
import time
from fractions import Fraction

import av
import httpx
import numpy as np
import pytest

from courtcast.platform import Platform
from device_agents.protocol import Command, CommandResult
from tests.control_room.agent import FakeAgent
from tests.control_room.conftest import connect_agent, control, enrol, signed_in

pytestmark = pytest.mark.timeout(60)


def make_jpeg(width: int, height: int) -> bytes:
    """A real JPEG (PyAV's MJPEG encoder) of a gradient, as an agent would decode it."""
    gradient = np.linspace(0, 255, width, dtype=np.uint8)
    rgb = np.stack([np.tile(gradient, (height, 1))] * 3, axis=-1)
    codec = av.CodecContext.create("mjpeg", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuvj420p"
    codec.time_base = Fraction(1, 25)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)])


async def agent_answers(cmd: Command) -> CommandResult | None:
    if cmd.name == "snapshot":
        jpeg = make_jpeg(320, 180)
        return CommandResult(
            id=cmd.id,
            ok=True,
            data={"jpeg_b64": base64.b64encode(jpeg).decode(), "width": 320, "height": 180},
        )
    if cmd.name == "ptz":
        return CommandResult(id=cmd.id, ok=False, error="camera has no PTZ")
    if cmd.name == "reload":
        return None  # this agent never answers a reload
    return CommandResult(id=cmd.id, ok=True, data={"source": cmd.args.get("source")})


async def test_command_round_trip_timeout_and_audit(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin)
    agent = await connect_agent(platform, enrolled, agents)
    agent.handler = agent_answers
    await agent.heartbeat()
    operator = await signed_in(platform, "olga", "operator")
    url = f"/api/v1/devices/{enrolled.device_id}/commands"
    try:
        answer = await operator.post(url, json={"name": "restart", "args": {"source": "bench"}})
        assert answer.status_code == 200, answer.text
        assert answer.json()["ok"] is True and answer.json()["data"] == {"source": "bench"}
        assert [c.name for c in agent.commands] == ["restart"]
        failed = await operator.post(url, json={"name": "ptz", "args": {"preset": 2}})
        assert failed.json()["ok"] is False and failed.json()["error"] == "camera has no PTZ"

        started = time.monotonic()
        late = await operator.post(url, json={"name": "reload", "timeout_s": 0.5})
        took = time.monotonic() - started
        assert late.status_code == 504
        assert late.json()["detail"] == "device did not answer within 0.5 s"
        assert 0.5 <= took < 1.5, took
        clerk = await signed_in(platform, "cleo", "clerk")
        assert (await clerk.post(url, json={"name": "restart"})).status_code == 403
        await clerk.aclose()
    finally:
        await operator.aclose()
    row = (await admin.get(f"/api/v1/devices/{enrolled.device_id}")).json()
    timeouts = [e for e in row["events"] if e["event"] == "command-timeout"]
    assert len(timeouts) == 1 and timeouts[0]["name"] == "reload"
    audit = await platform.roles[0].state.read_events("audit")  # type: ignore[attr-defined]
    commands = [e for _, e in audit if e["action"] == "device.command"]
    assert [(e["who"], e["name"]) for e in commands] == [
        ("olga", "restart"),
        ("olga", "ptz"),
        ("olga", "reload"),
    ]
    assert commands[2]["outcome"] == "timeout" and commands[0]["ok"] is True


async def test_snapshot_is_stored_and_served_to_staff(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    enrolled = await enrol(platform, admin)
    agent = await connect_agent(platform, enrolled, agents)
    agent.handler = agent_answers
    answer = await admin.post(
        f"/api/v1/devices/{enrolled.device_id}/commands",
        json={"name": "snapshot", "args": {"source": "bench"}},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["ok"], body["width"], body["height"]) == (True, 320, 180)
    command_id = agent.commands[0].id
    assert body["url"] == f"/api/v1/devices/{enrolled.device_id}/snapshots/{command_id}.jpg"
    served = await admin.get(body["url"])
    assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
    stored = await control(platform).storage.objects.get(
        f"snapshots/{enrolled.device_id}/{command_id}.jpg"
    )
    assert stored == served.content
    with av.open(io.BytesIO(served.content), "r") as container:
        frame = next(container.decode(video=0))
    assert (frame.width, frame.height) == (320, 180)
    async with httpx.AsyncClient(base_url=str(admin.base_url)) as anonymous:
        assert (await anonymous.get(body["url"])).status_code == 401


async def test_a_command_to_an_unconnected_device_says_so(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    enrolled = await enrol(platform, admin)
    answer = await admin.post(
        f"/api/v1/devices/{enrolled.device_id}/commands", json={"name": "snapshot"}
    )
    assert answer.status_code == 409
    assert answer.json()["detail"] == f"device {enrolled.device_id} is not connected"
    missing = await admin.post("/api/v1/devices/dev-00000000/commands", json={"name": "stop"})
    assert missing.status_code == 404


async def test_technician_asks_for_an_h264_sub_stream(
    platform: Platform, admin: httpx.AsyncClient, agents: list[FakeAgent]
) -> None:
    """The route carries `sub-stream-h264` to the agent and its answer back (the agent's side
    against a real ONVIF camera: tests/device_agents/test_onvif_sub_stream.py)."""
    enrolled = await enrol(platform, admin)
    agent = await connect_agent(platform, enrolled, agents)
    agent.handler = agent_answers
    technician = await signed_in(platform, "tess", "technician")
    try:
        answer = await technician.post(
            f"/api/v1/devices/{enrolled.device_id}/commands",
            json={"name": "sub-stream-h264", "args": {"source": "bench"}},
        )
    finally:
        await technician.aclose()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["ok"], body["error"], body["data"]) == (True, "", {"source": "bench"})
    assert [(c.name, c.args) for c in agent.commands] == [("sub-stream-h264", {"source": "bench"})]
