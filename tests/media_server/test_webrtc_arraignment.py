"""Remote arraignment rooms: one-time join codes, seat tokens that open only the seat's own
streams, and two Chromium pages (courtroom, detention centre) that see and hear each other
through /arraignment/{room}."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from media_server.webrtc.arraignment import (
    ArraignmentRooms,
    RoomError,
    StateRoomStore,
    parse_room_stream,
    room_stream,
)
from storage.redis_server import EmbeddedRedis
from storage.state import StateStore
from tests.media_server.test_webrtc_http import LiveServer, webrtc_clips  # noqa: F401


async def test_join_codes_are_one_time_and_tokens_open_only_their_seat() -> None:
    rooms = ArraignmentRooms()
    codes = await rooms.create(
        "r1", {"court": "Court 3", "detention": "Zhengzhou detention centre"}
    )
    assert set(codes) == {"court", "detention"} and codes["court"] != codes["detention"]
    court = await rooms.join("r1", codes["court"])
    assert (court.side, court.publish, court.play) == (
        "court",
        "arraignment-r1-court",
        "arraignment-r1-detention",
    )
    assert court.other_label == "Zhengzhou detention centre"
    with pytest.raises(RoomError, match="used already") as spent:
        await rooms.join("r1", codes["court"])
    assert spent.value.status == 403
    assert await rooms.may_publish(court.publish, court.token)
    assert await rooms.may_play(court.play, court.token)
    assert not await rooms.may_publish(court.play, court.token), "not as the other side"
    assert not await rooms.may_play(court.publish, court.token)
    assert not await rooms.may_play(court.play, "forged")
    assert not await rooms.may_play(court.play, None)
    assert not await rooms.may_play("arraignment-nosuch-court", court.token)
    await rooms.leave("r1", court.token)
    assert not await rooms.may_publish(court.publish, court.token), "leaving revokes it"
    again = await rooms.join("r1", await rooms.reissue("r1", "court"))
    assert await rooms.may_publish(again.publish, again.token)
    with pytest.raises(RoomError) as unknown:
        await rooms.join("nosuch", "123")
    assert unknown.value.status == 404
    with pytest.raises(RoomError):
        await rooms.create("bad id!")


async def test_optional_seats_play_every_other_seat() -> None:
    rooms = ArraignmentRooms()
    codes = await rooms.create("r2", {"lawyer": "Defence lawyer", "interpreter": ""})
    assert set(codes) == {"court", "detention", "lawyer", "interpreter"}
    lawyer = await rooms.join("r2", codes["lawyer"])
    assert lawyer.play == room_stream("r2", "court") and lawyer.label == "Defence lawyer"
    assert set(lawyer.plays) == {
        room_stream("r2", s) for s in ("court", "detention", "interpreter")
    }
    for stream in lawyer.plays:
        assert await rooms.may_play(stream, lawyer.token)
    assert await rooms.may_publish(room_stream("r2", "lawyer"), lawyer.token)
    assert parse_room_stream("arraignment-a-court-detention") == ("a-court", "detention")
    assert parse_room_stream("court1") is None
    with pytest.raises(RoomError, match="unknown seats"):
        await rooms.create("r3", {"judge": "x"})


async def test_rooms_survive_a_restart_in_the_state_store(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    await server.start()
    try:
        first = StateStore(server.url)
        await first.connect()
        codes = await ArraignmentRooms(StateRoomStore(first)).create("r9")
        court = await ArraignmentRooms(StateRoomStore(first)).join("r9", codes["court"])
        await first.close()
        again = StateStore(server.url)  # a new process: nothing in memory
        await again.connect()
        try:
            rooms = ArraignmentRooms(StateRoomStore(again))
            assert [r.id for r in await rooms.list()] == ["r9"]
            assert await rooms.may_publish(court.publish, court.token)
            with pytest.raises(RoomError, match="used already"):
                await rooms.join("r9", codes["court"])
            detention = await rooms.join("r9", codes["detention"])
            assert await rooms.may_play(court.publish, detention.token)
            record = await again.get_record("arraignment-room", "r9")
            assert record is not None and codes["court"] not in str(record)
            assert court.token not in str(record), "secrets are kept hashed"
            assert await rooms.close("r9") and await rooms.list() == []
        finally:
            await again.close()
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def server(webrtc_clips: dict[str, Path]) -> Iterator[LiveServer]:  # noqa: F811
    live = LiveServer({}).start()
    yield live
    live.stop()


def open_room(browser: Any, server: LiveServer, room: str) -> Any:
    page = browser.new_page()
    page.goto(f"{server.url}/arraignment/{room}")
    wait_for(page, "window.arraignment && window.arraignment.media", 10)
    return page


def wait_for(page: Any, expression: str, timeout_s: float) -> None:
    """Poll an expression through the DevTools protocol: Playwright's wait_for_function
    evaluates its predicate with eval, which the page's CSP (rightly) refuses."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(f"!!({expression})"):
        assert time.monotonic() < deadline, f"not true in {timeout_s} s: {expression}"
        time.sleep(0.05)


def join(page: Any, code: str) -> None:
    page.fill("#code", code)
    page.click("#join")


def remote_frames(page: Any) -> int:
    return int(
        page.evaluate("""async () => {
        let n = 0;
        (await window.arraignment.viewer.getStats()).forEach(s => {
            if (s.type === 'inbound-rtp' && s.kind === 'video') n = s.framesDecoded; });
        return n; }""")
    )


def test_courtroom_and_detention_centre_see_each_other(
    chromium_browser: Any, server: LiveServer
) -> None:
    assert server.service is not None
    rooms = server.service.rooms

    async def create() -> dict[str, str]:
        return await rooms.create("r7", {"court": "Courtroom 3", "lawyer": "Defence"})

    codes = server.call(create())
    court = open_room(chromium_browser, server, "r7")
    detention = open_room(chromium_browser, server, "r7")
    started = time.monotonic()
    join(court, codes["court"])
    wait_for(court, "document.getElementById('status').textContent.includes('Waiting')", 10)
    join(detention, codes["detention"])
    for page in (court, detention):
        wait_for(page, "window.arraignment.playing === true", 15)
        wait_for(page, "document.getElementById('remote').videoWidth > 0", 10)
    for page in (court, detention):  # a tile waits for the lawyer, who has not joined
        assert page.evaluate("document.querySelectorAll('main figure').length") == 3
    first = {p: remote_frames(p) for p in (court, detention)}
    time.sleep(1.0)
    for page in (court, detention):
        assert remote_frames(page) > first[page] > 0
    print(
        f"\narraignment: both sides see each other {time.monotonic() - started:.1f} s after "
        "the first join"
    )

    with httpx.Client(base_url=server.url) as client:
        reuse = client.post("/arraignment/r7/join", json={"code": codes["court"]})
        assert reuse.status_code == 403 and "used already" in reuse.json()["detail"]
        stranger = client.post(
            f"/whep/{room_stream('r7', 'court')}",
            content="v=0\n",
            headers={"Content-Type": "application/sdp"},
        )
        assert stranger.status_code == 403, "a room stream plays only for its seats"

    court.click("#leave")
    wait_for(court, "document.getElementById('status').textContent.includes('left')", 5)
    deadline = time.monotonic() + 5
    while (s := server.hub.find(room_stream("r7", "court"))) is not None and s.live:
        assert time.monotonic() < deadline, "the court's stream did not end on leave"
        time.sleep(0.1)
    detention.click("#leave")
    court.close()
    detention.close()


async def test_control_api_registers_private_streams_and_audits_every_step(tmp_path: Path) -> None:
    from fastapi import FastAPI, HTTPException, Request

    from core.audit import audit
    from media_server.access import Caller
    from media_server.hub import Hub
    from media_server.streams import StreamClass, StreamRegistry
    from media_server.webrtc import make_webrtc_router
    from media_server.webrtc.arraignment_http import RoomHooks

    server = EmbeddedRedis(tmp_path / "redis")
    await server.start()
    state = StateStore(server.url)
    await state.connect()
    registry = StreamRegistry(state)

    async def caller(request: Request) -> Caller | None:
        name, _, role = request.headers.get("x-user", "").partition("/")
        return Caller(name, role) if name else None

    async def authorize_play(request: Request, stream_id: str) -> None:
        found = await caller(request)
        if found is None or found.role != "operator":
            raise HTTPException(404, f"stream {stream_id!r} not found")

    async def authorize_publish(request: Request, stream_id: str, key: str | None) -> None:
        raise HTTPException(401, "no key")

    async def define(definitions: list[Any]) -> None:
        for d in definitions:
            await registry.define(d)

    async def write_audit(action: str, who: str, details: dict[str, Any]) -> None:
        await audit(state, action, who, **details)

    hooks = RoomHooks(
        resolve_caller=caller, store=StateRoomStore(state), audit=write_audit, define_streams=define
    )
    app = FastAPI()
    app.include_router(
        make_webrtc_router(Hub(), authorize_play, authorize_publish, room_hooks=hooks)
    )
    operator = {"x-user": "olga/operator"}
    sdp = {"Content-Type": "application/sdp"}
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://test"
        ) as client:
            body = {"room": "a1", "seats": {"court": "Court 5", "lawyer": "Defence"}}
            assert (await client.post("/api/v1/arraignments", json=body)).status_code == 401
            clerk = await client.post(
                "/api/v1/arraignments", json=body, headers={"x-user": "vic/viewer"}
            )
            assert clerk.status_code == 403 and "may not manage" in clerk.json()["detail"]
            made = await client.post("/api/v1/arraignments", json=body, headers=operator)
            assert made.status_code == 201, made.text
            codes = made.json()["codes"]
            assert set(codes) == {"court", "detention", "lawyer"}
            again = await client.post("/api/v1/arraignments", json=body, headers=operator)
            assert again.status_code == 409
            for seat in codes:
                d = await registry.get(room_stream("a1", seat))
                assert d is not None and d.stream_class == StreamClass.arraignment
                assert not d.is_public and d.room == "a1"

            wrong = await client.post("/arraignment/a1/join", json={"code": "00000000"})
            assert wrong.status_code == 403 and "not valid" in wrong.json()["detail"]
            court = (
                await client.post("/arraignment/a1/join", json={"code": codes["court"]})
            ).json()
            stranger = await client.post(
                f"/whep/{room_stream('a1', 'court')}", content="v=0\n", headers=sdp
            )
            assert stranger.status_code == 404, "a private seat stays hidden from the public"
            watch = await client.post(
                f"/whep/{room_stream('a1', 'court')}", content="v=0\n", headers={**sdp, **operator}
            )
            assert watch.status_code == 400, "let through (then the bad SDP is refused)"
            listed = (await client.get("/api/v1/arraignments", headers=operator)).json()
            seats = listed[0]["seats"]
            assert seats["court"]["joined"] and seats["detention"]["code_pending"]
            assert "code_digest" not in str(listed) and codes["court"] not in str(listed)
            left = await client.post(
                "/arraignment/a1/leave", headers={"Authorization": f"Bearer {court['token']}"}
            )
            assert left.json() == {"left": "court"}
            code = await client.post("/api/v1/arraignments/a1/seats/lawyer/code", headers=operator)
            assert code.status_code == 200 and code.json()["code"] != codes["lawyer"]
            closed = await client.delete("/api/v1/arraignments/a1", headers=operator)
            assert closed.json() == {"closed": "a1"}
            assert (
                await client.post("/arraignment/a1/join", json={"code": codes["detention"]})
            ).status_code == 404

        events = [e for _, e in await state.read_events("audit")]
        assert [(e["action"], e["who"]) for e in events] == [
            ("arraignment.create", "olga"),  # a wrong code alone is not audited: holds are
            ("arraignment.join", "seat court"),
            ("arraignment.watch", "olga"),
            ("arraignment.leave", "seat court"),
            ("arraignment.reissue", "olga"),
            ("arraignment.close", "olga"),
        ]
        assert all(e["room"] == "a1" and e["at"] > 0 for e in events)
        assert events[2]["seat"] == "court" and events[2]["stream"] == "arraignment-a1-court"
    finally:
        await state.close()
        await server.stop()


async def test_join_codes_are_long_and_expire() -> None:
    rooms = ArraignmentRooms(code_ttl_s=0.3)
    codes = await rooms.create("r2")
    assert all(len(c) >= 12 and c.isdigit() for c in codes.values()), codes
    await rooms.join("r2", codes["court"][:4] + " " + codes["court"][4:])  # spaces as read out
    await asyncio.sleep(0.4)
    with pytest.raises(RoomError, match="expired") as late:
        await rooms.join("r2", codes["detention"])
    assert late.value.status == 403
    fresh = await rooms.reissue("r2", "detention")  # a new code has a new lifetime
    assert (await rooms.join("r2", fresh)).side == "detention"


async def test_wrong_join_codes_hold_the_room_and_are_audited_in_aggregate(
    tmp_path: Path,
) -> None:
    """Through the platform (Redis-held attempts, the real audit trail)."""
    from core.audit import AUDIT_STREAM
    from tests.control_room.conftest import base_url, signed_in, start_platform

    node = await start_platform(tmp_path / "data")
    try:
        admin = await signed_in(node, "ada", "admin")
        made = await admin.post("/api/v1/arraignments", json={"room": "r3"})
        codes = made.json()["codes"]
        async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as seat:
            for n in range(10):
                wrong = await seat.post("/arraignment/r3/join", json={"code": f"{n:012d}"})
                assert wrong.status_code == 403, wrong.text
            held = await seat.post("/arraignment/r3/join", json={"code": codes["court"]})
            assert held.status_code == 429, "the right code too, while the room is held"
            assert int(held.headers["Retry-After"]) >= 1 and "try again" in held.json()["detail"]
            other = await admin.post("/api/v1/arraignments", json={"room": "r4"})
            fine = await seat.post(
                "/arraignment/r4/join", json={"code": other.json()["codes"]["court"]}
            )
            assert fine.status_code == 200, "only that room is held"
        await admin.aclose()
        state = next(r for r in node.roles if r.name == "storage").state
        events = [e for _, e in await state.latest_events(AUDIT_STREAM, 1000)]
        refused = [e for e in events if "refused" in e["action"] or "locked" in e["action"]]
        assert [e["action"] for e in refused] == ["arraignment.join-locked"], refused
        assert refused[0]["failures"] == 10 and refused[0]["room"] == "r3"
    finally:
        await node.stop()
