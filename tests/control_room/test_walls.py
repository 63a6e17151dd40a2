"""Walls over the API (issue 15, item 4): versions, layouts and their tile counts, court
scope (a stream out of scope answers as unknown, and shows as an empty tile), dispatch to
an operator's console, saved layouts per operator, and the audit trail of every change.
Against the real platform and the two cities of tests/control_room/cities.py."""

from __future__ import annotations

import pytest

from control_room.walls import LAYOUTS
from courtcast.platform import Platform
from tests.control_room.cities import Cities, scoped
from tests.control_room.test_audit import one, trail

pytestmark = pytest.mark.timeout(90)


async def test_a_put_makes_a_new_version_and_the_layout_decides_the_tile_count(
    platform: Platform, cities: Cities
) -> None:
    zz = cities.zz
    assert (await zz.get("/api/v1/walls/big")).status_code == 404
    first = await zz.put(
        "/api/v1/walls/big", json={"layout": "2x2", "tiles": ["zz-cam", None, None, None]}
    )
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1
    second = await zz.put("/api/v1/walls/big", json={"layout": "1", "tiles": ["zz-cam"]})
    assert second.json()["version"] == 2
    got = (await zz.get("/api/v1/walls/big")).json()
    assert got["layout"] == "1" and got["tiles"] == ["zz-cam"]
    assert got["version"] == 2 and got["acked_version"] == 0
    assert got["updated_by"] == "op-zz" and got["updated_at"] > 0
    assert [w["name"] for w in (await zz.get("/api/v1/walls")).json()] == ["big"]

    for layout, count in LAYOUTS.items():
        fits = await zz.put("/api/v1/walls/grid", json={"layout": layout, "tiles": [None] * count})
        assert fits.status_code == 200, (layout, fits.text)
        wrong = await zz.put(
            "/api/v1/walls/grid", json={"layout": layout, "tiles": [None] * (count - 1)}
        )
        assert wrong.status_code == 422
        assert f"layout {layout} has {count} tiles, the request gives {count - 1}" in wrong.text
    unknown = await zz.put("/api/v1/walls/grid", json={"layout": "6x6", "tiles": [None] * 36})
    assert unknown.status_code == 422
    assert (await zz.get("/api/v1/walls/grid")).json()["version"] == len(LAYOUTS)


async def test_scope_out_of_scope_is_unknown_and_shows_empty(
    platform: Platform, cities: Cities
) -> None:
    admin, zz, ly = cities.admin, cities.zz, cities.ly
    # Zhengzhou's operator cannot name Luoyang's camera: the same 404 as a made-up one
    theirs = await zz.put("/api/v1/walls/big", json={"layout": "1", "tiles": ["ly-cam"]})
    made_up = await zz.put("/api/v1/walls/big", json={"layout": "1", "tiles": ["no-such-cam"]})
    assert theirs.status_code == made_up.status_code == 404
    assert theirs.json()["detail"] == "stream 'ly-cam' not found"
    assert (await zz.get("/api/v1/walls/big")).status_code == 404  # nothing was written

    # the province's admin puts both; each operator sees only its own city's tile
    both = {"layout": "2x2", "tiles": ["zz-cam", "ly-cam", None, None]}
    assert (await admin.put("/api/v1/walls/big", json=both)).status_code == 200
    assert (await zz.get("/api/v1/walls/big")).json()["tiles"] == ["zz-cam", None, None, None]
    assert (await ly.get("/api/v1/walls/big")).json()["tiles"] == [None, "ly-cam", None, None]
    listed = (await zz.get("/api/v1/walls")).json()
    assert listed[0]["tiles"] == ["zz-cam", None, None, None]
    assert (await admin.get("/api/v1/walls/big")).json()["tiles"] == both["tiles"]

    # a clerk may not see walls; nobody signed in neither
    clerk = await scoped(platform, "clerk-zz", "clerk", "zz-mid")
    try:
        assert (await clerk.get("/api/v1/walls/big")).status_code == 403
        assert (await clerk.put("/api/v1/walls/big", json=both)).status_code == 403
    finally:
        await clerk.aclose()
    zz.cookies.clear()
    assert (await zz.get("/api/v1/walls/big")).status_code == 401


async def test_changes_and_dispatches_are_audited(platform: Platform, cities: Cities) -> None:
    admin, zz = cities.admin, cities.zz
    own = await zz.put("/api/v1/walls/@op-zz", json={"layout": "1", "tiles": ["zz-cam"]})
    assert own.status_code == 200, own.text
    to_ly = await zz.put(
        "/api/v1/walls/@op-ly", json={"layout": "2x2", "tiles": [None, "zz-cam", None, None]}
    )
    assert to_ly.status_code == 200, to_ly.text
    nobody = await zz.put("/api/v1/walls/@nobody", json={"layout": "1", "tiles": [None]})
    assert nobody.status_code == 404
    assert (await zz.put("/api/v1/walls/big", json={"layout": "1", "tiles": [None]})).is_success

    entries = await trail(admin, action="wall")
    change = one(entries, "wall.change", wall="@op-zz")
    assert change["who"] == "op-zz" and change["peer"] == "127.0.0.1"
    assert change["tiles"] == ["zz-cam"] and change["version"] == 1
    assert change["court"] == "zz-mid"
    dispatch = one(entries, "wall.dispatch", wall="@op-ly")
    assert dispatch["who"] == "op-zz" and dispatch["layout"] == "2x2"
    assert dispatch["tiles"] == [None, "zz-cam", None, None]
    one(entries, "wall.dispatch", wall="big")
    assert len(entries) == 3  # the refused dispatch wrote nothing


async def test_saved_layouts_are_each_operators_own(platform: Platform, cities: Cities) -> None:
    zz, ly = cities.zz, cities.ly
    body = {"layout": "2x2", "tiles": ["zz-cam", None, None, None]}
    assert (await zz.put("/api/v1/layouts/morning", json=body)).status_code == 200
    assert (await zz.put("/api/v1/layouts/早班", json={"layout": "1", "tiles": [None]})).is_success
    bad = await zz.put("/api/v1/layouts/x", json={"layout": "2x2", "tiles": [None]})
    assert bad.status_code == 422
    assert (
        await ly.put("/api/v1/layouts/x", json={"layout": "1", "tiles": ["zz-cam"]})
    ).status_code == 404
    mine = {x["name"]: x for x in (await zz.get("/api/v1/layouts")).json()}
    assert mine["morning"] == {"name": "morning", **body}
    assert set(mine) == {"morning", "早班"}
    assert (await ly.get("/api/v1/layouts")).json() == []
    assert (await ly.delete("/api/v1/layouts/morning")).status_code == 404
    assert (await zz.delete("/api/v1/layouts/morning")).status_code == 200
    assert [x["name"] for x in (await zz.get("/api/v1/layouts")).json()] == ["早班"]
