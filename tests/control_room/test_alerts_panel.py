"""The alerts panel of /control (issue 17) in Debian's Chromium, against the real platform:
an operator of Zhengzhou sees the alerts of the city's security camera, read at open from
GET /api/v1/alerts and then pushed over the websocket as the analysis writes them
(media_server/analysis/alerts.py's AlertWriter: the entries GET folds, and the live
channel); the type in words, a snapshot, a clip link; the camera put on the selected tile;
acknowledged with a note from the page, which GET and the audit trail then show; Luoyang's
camera's alerts never appear. Screenshots in zh-CN and en: build/test-artifacts/."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from courtcast.platform import Platform
from media_server.analysis.alerts import AlertWriter, new_id, snapshot_key
from tests.control_room.cities import HIGH, JINSHUI, LUOYANG, ZHENGZHOU
from tests.control_room.conftest import PASSWORD, base_url, control, start_platform
from tests.control_room.test_control_page import open_page, sign_in, tile
from tests.control_room.test_devices_page import Background
from tests.netutil import free_port

pytestmark = pytest.mark.timeout(90)

NOTE = "门口有人 已派保安"  # someone at the gate, a guard sent
CAMERAS = {"zz-gate": "zz-jinshui", "ly-gate": "ly-mid"}


@dataclass
class Site:
    node: Platform
    bg: Background
    writer: AlertWriter

    @property
    def url(self) -> str:
        return base_url(self.node)

    def raise_alert(self, stream: str, kind: str, snapshot: bool = False) -> str:
        """An alert's start as the analysis writes it: its entry, and the live message."""
        alert_id = new_id()
        objects = control(self.node).storage.objects

        async def write() -> None:
            key = None
            if snapshot:
                key = snapshot_key(alert_id)
                await objects.put(key, jpeg(), "image/jpeg")
            await self.writer.start(alert_id, stream, CAMERAS[stream], kind, time.time(), 0.9, key)

        self.bg.run(write())
        return alert_id

    def end_alert(self, alert_id: str, kind: str, clip_key: str) -> None:
        async def write() -> None:
            objects = control(self.node).storage.objects
            await objects.put(clip_key, b"\x00\x00\x00\x18ftypisom", "video/mp4")
            await self.writer.update(alert_id, kind, "clip", clip=clip_key)
            await self.writer.update(alert_id, kind, "end", end=time.time(), score=0.9)

        self.bg.run(write())


def jpeg() -> bytes:
    picture = np.zeros((90, 160, 3), np.uint8)
    picture[20:70, 40:120] = (40, 200, 240)  # a bright square, as the motion scenes have
    ok, data = cv2.imencode(".jpg", picture)
    assert ok
    return bytes(data.tobytes())


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.close()


@pytest.fixture
def site(background: Background, tmp_path: Path) -> Iterator[Site]:
    """Two cities, a security camera in each (not published: an alert needs its definition
    only), op-zz scoped to Zhengzhou. Asked for before chromium_browser, as in
    test_control_page.py: the browser closes before the platform stops."""
    # signed URLs (snapshot, clip) name the public URL: the port must be known beforehand
    port = free_port()
    public = {"http.port": port, "http.public_url": f"http://127.0.0.1:{port}"}
    node: Platform = background.run(start_platform(tmp_path / "data", **public))

    async def setup() -> None:
        await control(node).users.add("ada", "admin", PASSWORD)
        async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as admin:
            signed = await admin.post("/api/v1/login", json={"name": "ada", "password": PASSWORD})
            assert signed.status_code == 200, signed.text
            for court in (HIGH, ZHENGZHOU, JINSHUI, LUOYANG):
                assert (await admin.post("/api/v1/courts", json=court)).status_code == 201
            for stream_id, court in CAMERAS.items():
                body = {"id": stream_id, "court": court, "stream_class": "security"}
                made = await admin.post("/api/v1/streams", json=body)
                assert made.status_code == 201, made.text
        await control(node).users.add("op-zz", "operator", PASSWORD, "zz-mid")

    background.run(setup())
    state = control(node).storage.state
    writer = AlertWriter(state, "test", control(node).storage.objects.signed_url)
    try:
        yield Site(node, background, writer)
    finally:
        background.run(node.stop())


@contextmanager
def as_user(site: Site, name: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=10) as http:
        signed = http.post("/api/v1/login", json={"name": name, "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        yield http


def row(alert_id: str) -> str:
    return f"#alerts [data-alert-id='{alert_id}']"


def test_alerts_appear_live_and_are_acknowledged_from_the_page(
    site: Site, chromium_browser: Any, screenshot: Callable[[Any, str], Path]
) -> None:
    # before the page opens: one alert of each city, ended, with its clip
    earlier = site.raise_alert("zz-gate", "covered")
    site.end_alert(earlier, "covered", f"events/{earlier}/clip.mp4")
    theirs_before = site.raise_alert("ly-gate", "covered")
    page, errors = open_page(chromium_browser, f"{site.url}/control", "zh-CN")
    sign_in(page, "op-zz")
    page.locator(row(earlier)).wait_for(timeout=10_000)  # read by GET at open
    assert page.text_content(f"{row(earlier)} .type") == "镜头遮挡"
    assert page.get_attribute(row(earlier), "data-state") == "ended"
    clip = page.get_attribute(f"{row(earlier)} a.clip", "href")
    assert clip and httpx.get(clip).content.startswith(b"\x00\x00\x00\x18ftyp")
    assert page.text_content("#alerts-count") == "1"
    page.wait_for_function("() => document.querySelector('#link').classList.contains('live')")

    # live: Luoyang's first, then ours; ours shown means Luoyang's went by
    theirs = site.raise_alert("ly-gate", "motion", snapshot=True)
    raised = time.monotonic()
    mine = site.raise_alert("zz-gate", "motion", snapshot=True)
    page.locator(row(mine)).wait_for(timeout=5_000)
    latency = time.monotonic() - raised
    assert page.text_content(f"{row(mine)} .type") == "移动侦测"
    assert page.get_attribute(row(mine), "data-state") == "open"
    assert page.text_content("#alerts-count") == "2"
    # newest first; the snapshot is a JPEG the browser decoded
    assert page.locator("#alerts .alert").first.get_attribute("data-alert-id") == mine
    page.wait_for_function(
        "s => document.querySelector(s).naturalWidth === 160", arg=f"{row(mine)} img.snapshot"
    )
    for other in (theirs, theirs_before):
        assert page.locator(row(other)).count() == 0
    assert "ly-gate" not in page.text_content("#alerts")

    # the camera onto the selected tile, as a click in the court tree would
    page.click(tile(1))
    page.click(f"{row(mine)} .camera")
    page.wait_for_function(
        "s => document.querySelector(s).dataset.stream === 'zz-gate'", arg=tile(1)
    )

    page.fill(f"{row(mine)} .note", NOTE)
    page.click(f"{row(mine)} .ack-form button[type=submit]")
    page.locator(f"{row(mine)} .acked").wait_for(timeout=5_000)
    assert page.text_content(f"{row(mine)} .acked") == f"已由 op-zz 确认\uff1a{NOTE}"
    assert page.text_content("#alerts-count") == "1"
    screenshot(page, "zh-CN")

    with as_user(site, "op-zz") as http:
        items = http.get("/api/v1/alerts", params={"stream": "zz-gate"}).json()["items"]
        acked = next(item for item in items if item["id"] == mine)
        assert acked["ack"]["who"] == "op-zz" and acked["ack"]["note"] == NOTE
        assert {item["stream"] for item in http.get("/api/v1/alerts").json()["items"]} == {
            "zz-gate"
        }
    with as_user(site, "ada") as admin:
        log = admin.get("/api/v1/audit", params={"action": "alert.ack"}).json()["entries"]
        assert [(e["who"], e["alert"], e["note"]) for e in log] == [("op-zz", mine, NOTE)]

    # the other language: types and acknowledgements in English, as is a type unknown here
    unknown = site.raise_alert("zz-gate", "smoke")
    page.locator(row(unknown)).wait_for(timeout=5_000)
    page.click("[data-lang-switch] [data-lang='en']")
    page.wait_for_function("() => document.documentElement.lang === 'en'")
    assert page.text_content(f"{row(mine)} .type") == "motion"
    assert page.text_content(f"{row(earlier)} .type") == "camera covered"
    assert page.text_content(f"{row(unknown)} .type") == "alert: smoke"
    assert page.text_content(f"{row(mine)} .acked") == f"Acknowledged by op-zz: {NOTE}"
    screenshot(page, "en")
    print(f"alert on the page {latency * 1000:.0f} ms after it was raised")
    assert errors == []
