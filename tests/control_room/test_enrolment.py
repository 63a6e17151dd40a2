"""Enrolment over real HTTP against the real platform (embedded Redis): one-time tokens,
their clear refusals, the atomic spend, and the credentials and streams a device gets."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from control_room.devices import DeviceAuthError, DeviceRegistry
from courtcast.platform import Platform
from device_agents.protocol import ENROLL_PATH, EnrolRequest, SourceInfo, bearer
from media_server.streams import StreamRegistry
from tests.control_room.conftest import base_url, control, enrol, signed_in

pytestmark = pytest.mark.timeout(60)


async def post_enroll(node: Platform, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as http:
        return await http.post(ENROLL_PATH, json={"token": token, "model": "X"})


async def test_token_enrols_once_and_credentials_work(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    made = await admin.post(
        "/api/v1/devices/enrol-tokens", json={"court": "Zhengzhou High", "room": "Room 3"}
    )
    assert made.status_code == 201
    token = made.json()["token"]
    body = {
        "token": token,
        "model": "Hikvision",
        "agent_version": "0.1.0",
        "sources": [
            {"name": "bench", "kind": "rtsp", "has_sub": True},
            {"name": "wide", "kind": "test"},
        ],
    }
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        first = await http.post(ENROLL_PATH, json=body)
        again = await http.post(ENROLL_PATH, json=body)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert answer["court"] == "Zhengzhou High" and answer["room"] == "Room 3"
    port = control(platform).rtmp_port()
    assert answer["rtmp_url"] == f"rtmp://127.0.0.1:{port}/live" and port > 0
    assert answer["heartbeat_s"] == 0.5
    bench = answer["streams"]["bench"]
    assert bench["main"]["stream_id"] == "zhengzhou-high-room-3-bench"
    assert bench["sub"]["stream_id"] == "zhengzhou-high-room-3-bench-sub"
    assert answer["streams"]["wide"]["sub"] is None
    assert again.status_code == 409
    assert again.json()["detail"].startswith("enrolment token already used")

    state = platform.roles[0].state  # type: ignore[attr-defined]
    registry = DeviceRegistry(state)
    device = await registry.authenticate(bearer(answer["device_id"], answer["device_secret"]))
    assert device.streams == [
        "zhengzhou-high-room-3-bench",
        "zhengzhou-high-room-3-bench-sub",
        "zhengzhou-high-room-3-wide",
    ]
    with pytest.raises(DeviceAuthError, match="wrong credentials"):
        await registry.authenticate(bearer(answer["device_id"], "guess"))
    with pytest.raises(DeviceAuthError, match="unknown device"):
        await registry.authenticate(bearer("dev-00000000", "guess"))
    # keys were shown once; only their digests are stored, and they match
    streams = StreamRegistry(state)
    assert await streams.key_matches(bench["main"]["stream_id"], bench["main"]["key"])
    definition = await streams.get(bench["sub"]["stream_id"])
    assert definition is not None and definition.room == "Room 3"
    assert definition.title == "Zhengzhou High Room 3 bench (sub)"
    raw = await state.raw.hgetall(f"cc:rec:device:{answer['device_id']}")
    assert answer["device_secret"] not in str(raw)  # the secret is kept hashed
    assert await state.get_record("court", "Zhengzhou High") is not None
    assert await state.get_record("room", "Zhengzhou High/Room 3") is not None


async def test_unknown_and_expired_tokens_are_refused_clearly(platform: Platform) -> None:
    unknown = await post_enroll(platform, "not-a-token")
    assert unknown.status_code == 401
    assert "enrolment token unknown" in unknown.json()["detail"]
    registry = control(platform).devices
    token = await registry.make_enrol_token("C", "R", ttl_s=0.2)
    await asyncio.sleep(0.3)
    expired = await post_enroll(platform, token)
    assert expired.status_code == 410
    assert "enrolment token expired" in expired.json()["detail"]


async def test_concurrent_enrolments_with_one_token_one_wins(platform: Platform) -> None:
    registry: DeviceRegistry = control(platform).devices
    token = await registry.make_enrol_token("C", "R")
    assert token.startswith("enrol-"), "never '-' first: `--token -x` would be an option"
    answers = await asyncio.gather(*(post_enroll(platform, token) for _ in range(8)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] + [409] * 7, codes
    # and straight at the registry, no HTTP between: still exactly one device
    token = await registry.make_enrol_token("C", "R2")
    results = await asyncio.gather(
        *(
            registry.enroll(
                EnrolRequest(token=token, sources=[SourceInfo(name="a", kind="test")]),
                "rtmp://x/live",
            )
            for _ in range(8)
        ),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert len(await registry.list()) == 2


async def test_who_may_make_tokens(platform: Platform) -> None:
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as anonymous:
        r = await anonymous.post("/api/v1/devices/enrol-tokens", json={"court": "C", "room": "R"})
        assert r.status_code == 401
        assert (await anonymous.get("/api/v1/devices")).status_code == 401
    operator = await signed_in(platform, "olga", "operator")
    tech = await signed_in(platform, "tom", "technician")
    try:
        r = await operator.post("/api/v1/devices/enrol-tokens", json={"court": "C", "room": "R"})
        assert r.status_code == 403
        r = await tech.post(
            "/api/v1/devices/enrol-tokens",
            json={"court": "C", "room": "R", "stream_class": "security"},
        )
        assert r.status_code == 201
        enrolled = await enrol(platform, tech, court="C", room="R9")
        listed = (await operator.get("/api/v1/devices")).json()
        assert [d["id"] for d in listed] == [enrolled.device_id]
        assert listed[0]["state"] == "never-seen"
        assert [s["name"] for s in listed[0]["sources"]] == ["bench", "wide"]
        audit = await platform.roles[0].state.read_events("audit")  # type: ignore[attr-defined]
        actions = [(e["action"], e["who"]) for _, e in audit]
        assert ("device.enrol-token", "tom") in actions
        assert ("device.enrolled", f"device {enrolled.device_id}") in actions
    finally:
        await operator.aclose()
        await tech.aclose()


async def test_a_stream_in_use_is_not_taken_over(
    platform: Platform, admin: httpx.AsyncClient
) -> None:
    first = await enrol(platform, admin, court="C", room="R")
    made = await admin.post("/api/v1/devices/enrol-tokens", json={"court": "C", "room": "R"})
    token = made.json()["token"]
    body = {"token": token, "sources": [{"name": "bench", "kind": "test"}]}
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=10) as http:
        taken = await http.post(ENROLL_PATH, json=body)
        assert taken.status_code == 409
        assert taken.json()["detail"].startswith("stream c-r-bench is already in use")
        # the replaced camera's device is revoked: its stream ids are free again
        await admin.post(f"/api/v1/devices/{first.device_id}/revoke")
        replaced = await http.post(ENROLL_PATH, json=body)  # the same token: not spent
        assert replaced.status_code == 200, replaced.text
    key = replaced.json()["streams"]["bench"]["main"]["key"]
    streams = StreamRegistry(platform.roles[0].state)  # type: ignore[attr-defined]
    assert await streams.key_matches("c-r-bench", key)
    assert not await streams.key_matches("c-r-bench", first.streams["bench"].main.key)
