"""Alerts in the control room (issue 17, items 2 and 3): a security camera's alert (a
synthetic scene, tests/fixtures/scenes.py, published by ffmpeg over RTMP) reaches the staff
websocket of its city's operator and not the other city's; an alert rule puts the camera on a
wall's tile with a new version and brings the previous stream back after its hold, audited,
once in a cluster of two control rooms; the rules API's rights, scope and checks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_room.alert_rules import RuleEngine
from control_room.walls import WallStore
from core.courts import CourtTree
from courtcast.platform import Platform
from media_server.analysis.alerts import LIVE_CHANNEL
from tests.control_room.cities import Cities, scoped
from tests.control_room.conftest import control, media
from tests.control_room.test_events import events, next_message
from tests.courtcast.test_platform import cancel, push
from tests.fixtures.scenes import Scene, Square, make_scene

pytestmark = pytest.mark.timeout(90)

# a bright square crosses the view from t = 3 s: whole-frame motion (the default analysis)
SQUARE = Scene(squares=[Square(3, 7, (0.2, 0.8), 0.5)])
RULE = {"types": ["motion"], "court": "zz-mid", "wall": "big", "tile": 1, "hold_s": 2}


async def security_camera(cities: Cities, stream_id: str, court: str) -> str:
    made = await cities.admin.post(
        "/api/v1/streams", json={"id": stream_id, "court": court, "stream_class": "security"}
    )
    assert made.status_code == 201, made.text
    return str(made.json()["key"])


def publish(node: Platform, clip: Path, stream_id: str, key: str) -> asyncio.Task[Any]:
    url = f"rtmp://127.0.0.1:{media(node).rtmp_port}/live/{stream_id}?key={key}"
    return asyncio.create_task(push(clip, url))


def alert_of(stream_id: str, phase: str = "start") -> Any:
    def wanted(message: dict[str, Any]) -> bool:
        alert = message.get("alert") or {}
        return bool(message["type"] == "alert" and message["phase"] == phase) and (
            alert.get("stream") == stream_id
        )

    return wanted


async def test_an_alert_reaches_its_citys_operators_only(
    platform: Platform, cities: Cities, tmp_path: Path
) -> None:
    keys = {
        "zz-gate": await security_camera(cities, "zz-gate", "zz-jinshui"),
        "ly-gate": await security_camera(cities, "ly-gate", "ly-mid"),
    }
    clip = make_scene(tmp_path / "square.mp4", 10, SQUARE)
    publishers = []
    async with events(platform, cities.zz) as zz, events(platform, cities.ly) as ly:
        try:
            publishers = [publish(platform, clip, s, k) for s, k in keys.items()]
            mine = await next_message(zz, alert_of("zz-gate"), timeout=20)
            theirs = await next_message(ly, alert_of("ly-gate"), timeout=10)
        finally:
            for task in publishers:
                await cancel(task)
        assert mine["alert"]["type"] == "motion" and mine["alert"]["court"] == "zz-jinshui"
        assert mine["alert"]["snapshot"].startswith("http")
        assert set(mine["alert"]) >= {"id", "stream", "type", "start", "end", "score", "clip"}
        assert theirs["alert"]["type"] == "motion"
        # the alert is the one the API lists, and its ack comes over the websocket too
        acked = await cities.zz.post(f"/api/v1/alerts/{mine['alert']['id']}/ack", json={})
        assert acked.status_code == 200, acked.text
        ack = await next_message(zz, alert_of("zz-gate", "ack"), timeout=5)
        assert ack["alert"]["ack"]["who"] == "op-zz"
        # neither heard anything of the other city's camera
        for ws, other in ((zz, "ly-gate"), (ly, "zz-gate")):
            with pytest.raises(TimeoutError):
                await next_message(ws, lambda m, o=other: o in json.dumps(m), timeout=0.5)


async def wall_rule_audit(admin: httpx.AsyncClient, **match: str) -> list[dict[str, Any]]:
    """The `wall.rule` entries with those fields, oldest first."""
    answer = await admin.get("/api/v1/audit", params={"action": "wall.rule"})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["entries"]
    found = (e for e in items if all(e.get(k) == v for k, v in match.items()))
    return sorted(found, key=lambda e: float(e["at"]))


async def wait_wall(client: httpx.AsyncClient, version: int, timeout: float = 15) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            wall: dict[str, Any] = (await client.get("/api/v1/walls/big")).json()
            if wall["version"] >= version:
                return wall
            await asyncio.sleep(0.05)


async def test_a_rule_puts_the_camera_on_a_tile_and_brings_the_old_one_back(
    platform: Platform, cities: Cities, tmp_path: Path
) -> None:
    admin, zz, ly = cities.admin, cities.zz, cities.ly
    key = await security_camera(cities, "zz-gate", "zz-jinshui")
    set_wall = {"layout": "2x2", "tiles": ["zz-cam", "ly-cam", None, None]}
    assert (await admin.put("/api/v1/walls/big", json=set_wall)).json()["version"] == 1
    put = await zz.put("/api/v1/alert-rules/gate-to-big", json=RULE)
    assert put.status_code == 200, put.text
    assert put.json()["updated_by"] == "op-zz" and put.json()["court"] == "zz-mid"
    # a second control room on the same Redis: the cluster still pushes once
    state = control(platform).storage.state
    twin = RuleEngine(state, WallStore(state), CourtTree(state))
    await twin.start()
    clip = make_scene(tmp_path / "square.mp4", 10, SQUARE)
    publisher = publish(platform, clip, "zz-gate", key)
    try:
        pushed = await wait_wall(admin, 2, timeout=20)
        assert pushed["tiles"] == ["zz-cam", "zz-gate", None, None]
        assert pushed["updated_by"] == "rule:gate-to-big"
        assert (await ly.get("/api/v1/walls/big")).json()["tiles"][1] is None  # not Luoyang's
        restored = await wait_wall(admin, 3, timeout=2 + 5)
        assert restored["tiles"] == set_wall["tiles"]
        await asyncio.sleep(0.5)
        assert (await admin.get("/api/v1/walls/big")).json()["version"] == 3  # pushed once
    finally:
        await cancel(publisher)
        await twin.stop()
    entries = await wall_rule_audit(admin, stream="zz-gate")
    alerts = (await admin.get("/api/v1/alerts", params={"stream": "zz-gate"})).json()["items"]
    assert entries[0]["alert"] in {a["id"] for a in alerts if a["type"] == "motion"}
    assert [(e["phase"], e["version"]) for e in entries] == [("push", 2), ("restore", 3)]
    for entry in entries:
        assert entry["rule"] == "gate-to-big" and entry["stream"] == "zz-gate"
        assert entry["who"] == "rule:gate-to-big" and entry["wall"] == "big"
    assert entries[0]["before"] == "ly-cam" and entries[1]["restored"] == "ly-cam"


async def start_alert(platform: Platform, alert_id: str, stream: str, court: str) -> None:
    """An alert's start as the analysis publishes it (media_server/analysis/alerts.py)."""
    alert = {"id": alert_id, "stream": stream, "type": "motion", "court": court}
    await control(platform).storage.state.publish(
        LIVE_CHANNEL, {"type": "alert", "phase": "start", "alert": alert}
    )


async def test_a_wall_changed_during_the_hold_is_left_as_it_is(
    platform: Platform, cities: Cities
) -> None:
    admin = cities.admin
    await security_camera(cities, "zz-gate", "zz-jinshui")
    await security_camera(cities, "zz-yard", "zz-jinshui")
    await admin.put(
        "/api/v1/walls/big", json={"layout": "2x2", "tiles": ["ly-cam", None, None, None]}
    )
    rule = {**RULE, "streams": ["zz-gate", "zz-yard"], "court": None, "hold_s": 1.5}
    assert (await admin.put("/api/v1/alert-rules/r", json=rule)).status_code == 200
    # two alerts one after the other: the second keeps the first one's "before"
    await start_alert(platform, "a1", "zz-gate", "zz-jinshui")
    assert (await wait_wall(admin, 2))["tiles"][1] == "zz-gate"
    await start_alert(platform, "a2", "zz-yard", "zz-jinshui")
    assert (await wait_wall(admin, 3))["tiles"][1] == "zz-yard"
    # an alert of a type or stream no rule names moves nothing
    await start_alert(platform, "a3", "zz-cam", "zz-jinshui")
    restored = await wait_wall(admin, 4, timeout=5)
    assert restored["tiles"] == ["ly-cam", None, None, None]  # the tile before either push
    assert [e["phase"] for e in await wall_rule_audit(admin, alert="a1")] == ["push"]
    assert [e["phase"] for e in await wall_rule_audit(admin, alert="a2")] == ["push", "restore"]

    # the operator changes the wall during a hold: the rule leaves it as they set it
    await start_alert(platform, "a4", "zz-gate", "zz-jinshui")
    assert (await wait_wall(admin, 5))["tiles"][1] == "zz-gate"
    mine = {"layout": "2x2", "tiles": ["ly-cam", "zz-gate", "zz-cam", None]}
    assert (await admin.put("/api/v1/walls/big", json=mine)).json()["version"] == 6
    await asyncio.sleep(2.5)
    after = (await admin.get("/api/v1/walls/big")).json()
    assert (after["version"], after["tiles"]) == (6, mine["tiles"])
    assert [e["phase"] for e in await wall_rule_audit(admin, alert="a4")] == ["push"]


async def test_rules_api_rights_scope_and_checks(platform: Platform, cities: Cities) -> None:
    admin, zz, ly = cities.admin, cities.zz, cities.ly
    await security_camera(cities, "zz-gate", "zz-jinshui")
    mine = {**RULE, "court": None, "streams": ["zz-gate"]}
    assert (await zz.put("/api/v1/alert-rules/zz-1", json=mine)).status_code == 200
    by_name = {**RULE, "court": "洛阳市中级人民法院"}
    made = await ly.put("/api/v1/alert-rules/ly-1", json=by_name)
    assert made.status_code == 200 and made.json()["court"] == "ly-mid", made.text
    # each operator sees and changes only its city's rules; the admin sees both
    assert [r["name"] for r in (await zz.get("/api/v1/alert-rules")).json()] == ["zz-1"]
    assert [r["name"] for r in (await ly.get("/api/v1/alert-rules")).json()] == ["ly-1"]
    assert len((await admin.get("/api/v1/alert-rules")).json()) == 2
    assert (await zz.delete("/api/v1/alert-rules/ly-1")).status_code == 404
    assert (await zz.put("/api/v1/alert-rules/ly-1", json=mine)).status_code == 404
    others = {**RULE, "court": None, "streams": ["ly-cam"]}
    assert (await zz.put("/api/v1/alert-rules/x", json=others)).status_code == 404
    assert (
        await zz.put("/api/v1/alert-rules/x", json={**RULE, "court": "ly-mid"})
    ).status_code == 404
    # checks: one target, known types, a wall name, a tile, a rule name
    for bad in (
        {**RULE, "streams": ["zz-gate"]},
        {**RULE, "court": None},
        {**RULE, "types": ["smoke"]},
        {**RULE, "wall": "no/such"},
        {**RULE, "tile": 25},
        {**RULE, "hold_s": 0},
    ):
        answer = await zz.put("/api/v1/alert-rules/x", json=bad)
        assert answer.status_code == 422, (bad, answer.text)
    assert (await zz.put("/api/v1/alert-rules/a:b", json=RULE)).status_code == 422
    # a clerk may not change rules; nobody signed in may not read them
    clerk = await scoped(platform, "clerk-zz", "clerk", "zz-mid")
    try:
        assert (await clerk.put("/api/v1/alert-rules/y", json=RULE)).status_code == 403
    finally:
        await clerk.aclose()
    async with httpx.AsyncClient(base_url=str(zz.base_url)) as nobody:
        assert (await nobody.get("/api/v1/alert-rules")).status_code == 401
    # changes and deletions are audited with before and after
    assert (await zz.delete("/api/v1/alert-rules/zz-1")).status_code == 200
    assert (await zz.get("/api/v1/alert-rules")).json() == []
    log = await admin.get("/api/v1/audit", params={"action": "alert_rule"})
    items = log.json()["entries"]
    seen = sorted((e["action"], e["rule"], e["who"]) for e in items)
    assert seen == [
        ("alert_rule.change", "ly-1", "op-ly"),
        ("alert_rule.change", "zz-1", "op-zz"),
        ("alert_rule.delete", "zz-1", "op-zz"),
    ]
