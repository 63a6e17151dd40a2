"""WebRTC session caps (issue 14, item 5): one anonymous address holds a few WHEP sessions
at most, and anonymous viewers never take the slots kept for signed-in users (the wall,
arraignment), however many addresses they come from."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiortc import RTCPeerConnection
from fastapi import FastAPI, Request

from core.rights import Caller
from media_server.patches.aiortc_ice_addresses import bind_candidate_addresses
from media_server.webrtc import IceConfig, WebRTCOptions, make_webrtc_router
from media_server.webrtc.arraignment_http import RoomHooks
from media_server.webrtc.ice import new_peer_connection
from tests.media_server.test_webrtc_http import (
    SDP,
    LiveServer,
    authorize_play,
    authorize_publish,
    webrtc_clips,  # noqa: F401 - the fixture, shared
)

STAFF = {"Authorization": "Bearer operator-session"}


async def staff_or_nobody(request: Request) -> Caller | None:
    """As the control room's resolver: a session token is a signed-in operator."""
    if request.headers.get("authorization") == STAFF["Authorization"]:
        return Caller("olga", "operator")
    return None


class CapsServer(LiveServer):
    def _app(self) -> FastAPI:
        app = FastAPI()
        router = make_webrtc_router(
            self.hub,
            authorize_play,
            authorize_publish,
            IceConfig(host_addresses=["127.0.0.1"]),
            self.options,
            RoomHooks(resolve_caller=staff_or_nobody),
        )
        self.service = router.webrtc  # type: ignore[attr-defined]
        app.include_router(router)
        return app


@pytest.fixture
def caps_server(webrtc_clips: dict[str, Path]) -> Iterator[CapsServer]:  # noqa: F811
    options = WebRTCOptions(max_sessions=6, staff_reserve=2, max_public_per_address=3)
    server = CapsServer({"court1": webrtc_clips["court1"]}, options=options).start()
    yield server
    server.stop()


async def offer(base: str, headers: dict[str, str] | None = None) -> httpx.Response:
    pc: RTCPeerConnection = new_peer_connection(IceConfig())
    pc.addTransceiver("video", direction="recvonly")
    bind_candidate_addresses(pc, ["127.0.0.1"])
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            return await client.post(
                "/whep/court1", content=pc.localDescription.sdp, headers={**SDP, **(headers or {})}
            )
    finally:
        await pc.close()


async def hang_up(base: str, answers: list[httpx.Response]) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        for answer in answers:
            if answer.status_code == 201:
                await client.delete(answer.headers["location"])


async def test_one_anonymous_address_holds_a_few_sessions(caps_server: CapsServer) -> None:
    base = caps_server.url
    answers = [await offer(base) for _ in range(4)]
    try:
        assert [a.status_code for a in answers[:3]] == [201, 201, 201]
        assert answers[3].status_code == 429, answers[3].text
        assert "3 WebRTC sessions per address" in answers[3].json()["detail"]
        staff = await offer(base, STAFF)  # the same address, signed in: not capped so
        answers.append(staff)
        assert staff.status_code == 201, staff.text
    finally:
        await hang_up(base, answers)


async def test_anonymous_viewers_never_take_the_reserved_slots(caps_server: CapsServer) -> None:
    """Anonymous viewers from many addresses (the per-address cap lifted in effect by
    counting the service's own view) fill the public share: 6 - 2 reserved = 4."""
    base = caps_server.url
    service = caps_server.service
    assert service is not None
    answers = [await offer(base) for _ in range(3)]
    service.options.max_public_per_address = 10  # as if the next ones came from elsewhere
    answers += [await offer(base) for _ in range(2)]
    try:
        assert [a.status_code for a in answers] == [201, 201, 201, 201, 503], [
            (a.status_code, a.text[:80]) for a in answers
        ]
        assert "kept for signed-in users" in answers[4].json()["detail"]
        for _ in range(2):  # the wall and arraignment still get their slots
            staff = await offer(base, STAFF)
            answers.append(staff)
            assert staff.status_code == 201, staff.text
        full = await offer(base, STAFF)
        answers.append(full)
        assert full.status_code == 503
    finally:
        await hang_up(base, answers)
        await asyncio.sleep(0.1)
