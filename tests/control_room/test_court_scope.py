"""Court tree and court-scoped roles (issue 15, items 1 and 2), on the real platform: two
cities under one high court, each with a private courtroom camera published by ffmpeg over
RTMP, an operator scoped to each city and a province-wide admin. Each operator sees and
plays only its own courts' streams and recordings, over the API, WHEP, LL-HLS and RTMP;
what is out of its scope answers exactly as what does not exist."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from core.identity import GUARD_MARK, PUBLIC_MARK
from courtcast.platform import Platform
from tests.control_room.cities import (
    HIGH,
    LUOYANG,
    ZHENGZHOU,
    Cities,
    rtmp_bytes,
    scoped,
    wait_recording,
)
from tests.control_room.conftest import base_url, enrol, signed_in
from tests.media_server.test_webrtc_http import frames, open_viewer

pytestmark = pytest.mark.timeout(180)


def same_as_unknown(out_of_scope: httpx.Response, unknown: httpx.Response, ids: tuple[str, str]):  # type: ignore[no-untyped-def]
    """The two answers are one, but for the id they name."""
    assert out_of_scope.status_code == unknown.status_code == 404, out_of_scope.text
    assert out_of_scope.text.replace(ids[0], "X") == unknown.text.replace(ids[1], "X")
    assert out_of_scope.headers.get("content-type") == unknown.headers.get("content-type")


async def test_each_city_sees_and_plays_only_its_own_courts(
    platform: Platform, cities: Cities
) -> None:
    zz, ly, admin = cities.zz, cities.ly, cities.admin
    # the court tree: each its own subtree, the province all of it
    assert [c["id"] for c in (await zz.get("/api/v1/courts")).json()] == ["zz-mid", "zz-jinshui"]
    assert [c["id"] for c in (await ly.get("/api/v1/courts")).json()] == ["ly-mid"]
    tree = (await admin.get("/api/v1/courts")).json()
    assert [c["id"] for c in tree] == ["hn-high", "ly-mid", "zz-mid", "zz-jinshui"]
    assert next(c for c in tree if c["id"] == "zz-jinshui")["rooms"] == ["Room 1"]
    same_as_unknown(
        await zz.get("/api/v1/courts/ly-mid"),
        await zz.get("/api/v1/courts/nope"),
        ("ly-mid", "nope"),
    )

    # stream list and details
    assert [s["id"] for s in (await zz.get("/api/v1/streams")).json()] == ["zz-cam"]
    assert [s["id"] for s in (await ly.get("/api/v1/streams")).json()] == ["ly-cam"]
    assert [s["id"] for s in (await admin.get("/api/v1/streams")).json()] == ["ly-cam", "zz-cam"]
    assert (await zz.get("/api/v1/streams/zz-cam")).status_code == 200
    same_as_unknown(
        await zz.get("/api/v1/streams/ly-cam"),
        await zz.get("/api/v1/streams/nope"),
        ("ly-cam", "nope"),
    )
    same_as_unknown(
        await ly.get("/api/v1/streams/zz-cam/play-url"),
        await ly.get("/api/v1/streams/nope/play-url"),
        ("zz-cam", "nope"),
    )

    # LL-HLS with the session
    assert (await zz.get("/live/zz-cam/index.m3u8")).status_code == 200
    assert (await admin.get("/live/ly-cam/index.m3u8")).status_code == 200
    same_as_unknown(
        await zz.get("/live/ly-cam/index.m3u8"),
        await zz.get("/live/nope/index.m3u8"),
        ("ly-cam", "nope"),
    )

    # WHEP with the session cookie (open_viewer is anonymous: use a token minted in scope)
    token = (await zz.get("/api/v1/streams/zz-cam/play-url")).json()["token"]
    viewer = await open_viewer(base_url(platform), f"zz-cam?token={token}")
    try:
        assert viewer.response.status_code == 201, viewer.response.text
        assert len(await frames(viewer.track("video"), 5)) == 5
    finally:
        await viewer.close()
    # a token is for its stream only: Luoyang's token does not open Zhengzhou's camera
    ly_token = (await ly.get("/api/v1/streams/ly-cam/play-url")).json()["token"]
    refused = await open_viewer(base_url(platform), f"zz-cam?token={ly_token}")
    await refused.close()
    unknown = await open_viewer(base_url(platform), f"nope?token={ly_token}")
    await unknown.close()
    same_as_unknown(refused.response, unknown.response, ("zz-cam", "nope"))
    whep = await ly.post(
        "/whep/zz-cam", content=b"v=0", headers={"content-type": "application/sdp"}
    )
    whep_unknown = await ly.post(
        "/whep/nope", content=b"v=0", headers={"content-type": "application/sdp"}
    )
    same_as_unknown(whep, whep_unknown, ("zz-cam", "nope"))
    assert (
        await zz.post("/whep/zz-cam", content=b"v=0", headers={"content-type": "application/sdp"})
    ).status_code != 404  # let in (the SDP itself is then refused)

    # RTMP play: with a token minted in scope; another city's token is refused
    assert await rtmp_bytes(platform, f"zz-cam?key={token}") > 10_000
    assert await rtmp_bytes(platform, f"zz-cam?key={ly_token}") < 2_000
    assert await rtmp_bytes(platform, f"ly-cam?key={ly_token}") > 10_000

    # a scoped operator cannot put a stream in another city, nor change one there
    for answer in (
        await zz.patch("/api/v1/streams/ly-cam", json={"title": "x"}),
        await zz.post("/api/v1/streams/ly-cam/rotate-key"),
    ):
        assert answer.status_code in (403, 404)  # operators may not define streams at all


async def test_recordings_and_sessions_are_scoped(platform: Platform, cities: Cities) -> None:
    admin = cities.admin
    zz_clerk = await scoped(platform, "clerk-zz", "clerk", "zz-mid")
    ly_clerk = await scoped(platform, "clerk-ly", "clerk", "ly-mid")
    try:
        opened = await zz_clerk.post(
            "/api/v1/sessions", json={"room": "Room 1", "case_number": "(2026)豫01刑初1号"}
        )
        assert opened.status_code == 201, opened.text
        sid = opened.json()["id"]
        # a clerk cannot open a session in another city's room: as a room without cameras
        same_as_unknown_400 = (
            await ly_clerk.post("/api/v1/sessions", json={"room": "Room 1", "case_number": "X"}),
            await ly_clerk.post("/api/v1/sessions", json={"room": "Room 9", "case_number": "X"}),
        )
        assert [a.status_code for a in same_as_unknown_400] == [400, 400]
        assert same_as_unknown_400[0].text.replace("Room 1", "R") == same_as_unknown_400[
            1
        ].text.replace("Room 9", "R")
        record = await wait_recording(zz_clerk, "Room 1")
        rid = record["id"]
        assert record["court"] == "zz-jinshui"
        assert (await ly_clerk.get("/api/v1/recordings", params={"room": "Room 1"})).json() == {
            "recordings": []
        }
        assert [
            r["id"] for r in (await cities.zz.get("/api/v1/recordings")).json()["recordings"]
        ] == [rid]
        for path in ("", "/index.m3u8", "/verify", "/init-0.mp4", "/timeline"):
            same_as_unknown(
                await cities.ly.get(f"/api/v1/recordings/{rid}{path}"),
                await cities.ly.get(f"/api/v1/recordings/nope{path}"),
                (rid, "nope"),
            )
        assert (await cities.zz.get(f"/api/v1/recordings/{rid}/index.m3u8")).status_code == 200
        assert (await admin.get(f"/api/v1/recordings/{rid}/verify")).status_code == 200
        # the rooms /sessions offers: each clerk its own city's, with the session open there
        rooms = {
            r["room"]: r for r in (await zz_clerk.get("/api/v1/sessions/rooms")).json()["rooms"]
        }
        assert list(rooms) == ["Room 1"] and rooms["Room 1"]["session"] == sid, rooms
        assert rooms["Room 1"]["court"] == "zz-jinshui" and rooms["Room 1"]["streams"] == ["zz-cam"]
        assert [
            r["room"] for r in (await ly_clerk.get("/api/v1/sessions/rooms")).json()["rooms"]
        ] == ["Room 2"]
        assert (await cities.zz.get("/api/v1/sessions/rooms")).status_code == 403  # operator
        # sessions: list, detail, changes
        assert [s["id"] for s in (await ly_clerk.get("/api/v1/sessions")).json()["sessions"]] == []
        same_as_unknown(
            await ly_clerk.get(f"/api/v1/sessions/{sid}"),
            await ly_clerk.get("/api/v1/sessions/s-nope"),
            (sid, "s-nope"),
        )
        same_as_unknown(
            await ly_clerk.post(f"/api/v1/sessions/{sid}/close"),
            await ly_clerk.post("/api/v1/sessions/s-nope/close"),
            (sid, "s-nope"),
        )
        await asyncio.sleep(2.5)
        closed = await zz_clerk.post(f"/api/v1/sessions/{sid}/close")
        assert closed.status_code == 200, closed.text
        window = {"from": "+0", "to": "+2"}
        same_as_unknown(
            await ly_clerk.get(f"/api/v1/recordings/{rid}/export.mp4", params=window),
            await ly_clerk.get("/api/v1/recordings/nope/export.mp4", params=window),
            (rid, "nope"),
        )
    finally:
        await zz_clerk.aclose()
        await ly_clerk.aclose()


async def test_media_files_tokens_and_lists_do_not_cross_cities(
    platform: Platform, cities: Cities
) -> None:
    """Not only the playlist: LL-HLS init, segments and parts of the other city's stream
    answer as those of an unknown one, with the session or with the other city's token;
    the other city's recordings are not listed."""
    zz, ly = cities.zz, cities.ly
    playlist = await zz.get("/live/zz-cam/index.m3u8", params={"_HLS_msn": 1})
    assert playlist.status_code == 200, playlist.text
    names = re.findall(r"(init-\d+\.mp4|seg-\d+\.m4s|part-\d+\.\d+\.m4s)", playlist.text)
    kinds = {name.split("-")[0]: name for name in names}
    assert set(kinds) == {"init", "seg", "part"}, playlist.text
    ly_token = (await ly.get("/api/v1/streams/ly-cam/play-url")).json()["token"]
    async with httpx.AsyncClient(base_url=base_url(platform), timeout=20) as anonymous:
        for name in ("index.m3u8", *kinds.values()):
            assert (await zz.get(f"/live/zz-cam/{name}")).status_code == 200, name
            same_as_unknown(
                await ly.get(f"/live/zz-cam/{name}"),
                await ly.get(f"/live/nope/{name}"),
                ("zz-cam", "nope"),
            )
            same_as_unknown(
                await anonymous.get(f"/live/zz-cam/{name}", params={"token": ly_token}),
                await anonymous.get(f"/live/nope/{name}", params={"token": ly_token}),
                ("zz-cam", "nope"),
            )
    opened = await cities.admin.post(
        "/api/v1/sessions", json={"room": "Room 1", "case_number": "(2026)豫01刑初2号"}
    )
    assert opened.status_code == 201, opened.text
    rid = (await wait_recording(zz, "Room 1"))["id"]
    assert (await ly.get("/api/v1/recordings")).json() == {"recordings": []}
    assert [r["id"] for r in (await zz.get("/api/v1/recordings")).json()["recordings"]] == [rid]


async def test_devices_are_scoped(platform: Platform) -> None:
    admin = await signed_in(platform, "ada", "admin")
    try:
        for court in (HIGH, ZHENGZHOU, LUOYANG):
            assert (await admin.post("/api/v1/courts", json=court)).status_code == 201
        tech = await scoped(platform, "tech-zz", "technician", "zz-mid")
        try:
            made = await tech.post(
                "/api/v1/devices/enrol-tokens", json={"court": "郑州市中级人民法院", "room": "R1"}
            )
            assert made.status_code == 201, made.text
            assert made.json()["court"] == "zz-mid"
            elsewhere = await tech.post(
                "/api/v1/devices/enrol-tokens", json={"court": "ly-mid", "room": "R1"}
            )
            unknown = await tech.post(
                "/api/v1/devices/enrol-tokens", json={"court": "nope", "room": "R1"}
            )
            same_as_unknown(elsewhere, unknown, ("ly-mid", "nope"))
            await enrol(platform, admin, court="zz-mid", room="R1")
            await enrol(platform, admin, court="洛阳市中级人民法院", room="R2")
            devices = (await admin.get("/api/v1/devices")).json()
            assert sorted(d["court"] for d in devices) == ["ly-mid", "zz-mid"]
            [mine] = (await tech.get("/api/v1/devices")).json()
            other = next(d["id"] for d in devices if d["court"] == "ly-mid")
            assert (await tech.get(f"/api/v1/devices/{mine['id']}")).status_code == 200
            same_as_unknown(
                await tech.get(f"/api/v1/devices/{other}"),
                await tech.get("/api/v1/devices/nope"),
                (other, "nope"),
            )
            command = {"name": "snapshot", "timeout_s": 1}
            same_as_unknown(
                await tech.post(f"/api/v1/devices/{other}/commands", json=command),
                await tech.post("/api/v1/devices/nope/commands", json=command),
                (other, "nope"),
            )
            same_as_unknown(
                await tech.post(f"/api/v1/devices/{other}/disable"),
                await tech.post("/api/v1/devices/nope/disable"),
                (other, "nope"),
            )
        finally:
            await tech.aclose()
    finally:
        await admin.aclose()


async def test_every_route_is_guarded_or_says_it_is_public(platform: Platform) -> None:
    """A route that neither resolves the caller (a guard) nor is marked public(reason) is
    a route someone forgot to protect."""
    app = platform.app
    docs = {app.openapi_url, app.docs_url, app.redoc_url, "/docs/oauth2-redirect"}
    seen, unmarked = [], []
    for route in iter_route_contexts(app.routes):
        seen.append(route.path)
        if route.path in docs:
            continue
        dependant = getattr(route, "dependant", None)
        if dependant is None:  # a raw route or a mount: its endpoint (or app) says
            target = route.endpoint if route.endpoint is not None else getattr(route, "app", None)
            if not hasattr(target, PUBLIC_MARK):
                unmarked.append(route.path)
            continue
        calls, pending = [], [dependant]
        while pending:
            current = pending.pop()
            calls.append(current.call)
            pending.extend(current.dependencies)
        if not any(hasattr(c, GUARD_MARK) or hasattr(c, PUBLIC_MARK) for c in calls):
            unmarked.append(route.path)
    for path in (
        "/api/v1/audit",
        "/api/v1/courts",
        "/live/{stream_id}/index.m3u8",
        "/whep/{stream_id}",
    ):
        assert path in seen
    assert unmarked == [], unmarked
