"""The technicians' /devices page in Debian's Chromium: sign in, see a device's row (court,
room, model, sources, state badge) change as its agent heartbeats, make an enrolment token,
disable and revoke. The platform and the agent run in a thread of their own (Playwright's
sync API refuses a running asyncio loop in the test's thread)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from courtcast.platform import Platform
from device_agents.protocol import SourceHealth, SourceInfo, TrackHealth
from tests.control_room.agent import FakeAgent
from tests.control_room.conftest import (
    HEARTBEAT_S,
    PASSWORD,
    base_url,
    connect_agent,
    enrol,
    signed_in,
    start_platform,
)

pytestmark = pytest.mark.timeout(90)
RED = "rgb(192, 57, 43)"  # common.css --bad
T = TypeVar("T")


class Background:
    """An asyncio loop in a thread: the platform under test and its agent live there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.close()


def test_devices_page_shows_devices_and_acts_on_them(
    chromium_browser: Any, background: Background, tmp_path: Path
) -> None:
    node: Platform = background.run(start_platform(tmp_path / "data"))
    agents: list[FakeAgent] = []

    async def setup() -> str:
        admin = await signed_in(node, "tess", "technician")
        enrolled = await enrol(
            node,
            admin,
            court="Kaifeng Basic",
            room="Tribunal 2",
            sources=[SourceInfo(name="bench", kind="rtsp", has_sub=True)],
            model="Uniview IPC3614",
        )
        await admin.aclose()
        agent = await connect_agent(node, enrolled, agents)
        agent.start_heartbeats(HEARTBEAT_S)
        return enrolled.device_id

    try:
        device_id = background.run(setup())
        page = chromium_browser.new_page()
        page.goto(f"{base_url(node)}/devices")
        page.get_by_text("Sign in to see the devices.").wait_for()
        page.get_by_label("User").fill("tess")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()

        row = page.locator(f"tr[data-device='{device_id}']")
        badge = row.locator("td").nth(4).locator(".badge")
        badge.filter(has_text="online").wait_for(timeout=10_000)
        text = row.inner_text()
        for seen in (
            "Kaifeng Basic",
            "Tribunal 2",
            device_id,
            "Uniview IPC3614",
            "bench",
            "up",
            "0.1.0",
            "s ago",
        ):
            assert seen in text, (seen, text)
        assert page.get_by_text("Signed in as tess (technician)").is_visible()

        page.get_by_label("Court").fill("Kaifeng Basic")
        page.get_by_label("Room").fill("Tribunal 3")
        page.get_by_role("button", name="Make enrolment token").click()
        token = page.locator("#token")
        token.filter(has_text="Enrolment token for Kaifeng Basic Tribunal 3").wait_for()
        assert len(token.inner_text().rsplit(": ", 1)[1].strip()) >= 32

        row.get_by_role("button", name="Disable").click()
        badge.filter(has_text="disabled").wait_for(timeout=5_000)
        row.get_by_role("button", name="Enable").wait_for()
        page.on("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Revoke").click()
        badge.filter(has_text="revoked").wait_for(timeout=5_000)
        assert row.get_by_role("button").count() == 0  # nothing left to do with it
        assert page.locator("#error").inner_text() == ""
    finally:

        async def teardown() -> None:
            for agent in agents:
                await agent.close()
            await node.stop()

        background.run(teardown())


TRACKS = [
    TrackHealth(kind="video", codec="h265", state="carried"),
    TrackHealth(kind="audio", codec="pcma", state="transcoded from pcma"),
    TrackHealth(kind="audio", codec="pcmu", state="dropped: a second audio track"),
]


@pytest.mark.parametrize(
    "locale, seen, dropped",
    [
        (
            "en-US",
            ["video h265: carried", "audio pcma: transcoded from pcma"],
            "audio pcmu: dropped: a second audio track",
        ),
        (
            "zh-CN",
            ["视频 h265: 直通", "音频 pcma: 转码自 pcma"],
            "音频 pcmu: 已丢弃\uff1aa second audio track",  # a full-width colon, as zh-CN writes
        ),
    ],
)
def test_devices_page_shows_each_sources_tracks_and_the_dropped_one(
    chromium_browser: Any,
    background: Background,
    tmp_path: Path,
    screenshot: Callable[[Any, str], Path],
    locale: str,
    seen: list[str],
    dropped: str,
) -> None:
    node: Platform = background.run(start_platform(tmp_path / "data"))
    agents: list[FakeAgent] = []

    async def setup() -> str:
        admin = await signed_in(node, "tess", "technician")
        enrolled = await enrol(
            node, admin, sources=[SourceInfo(name="bench", kind="rtsp")], model="Hikvision"
        )
        await admin.aclose()
        agent = await connect_agent(node, enrolled, agents)
        agent.sources[0] = SourceHealth(name="bench", state="up", publishing=True, tracks=TRACKS)
        agent.start_heartbeats(HEARTBEAT_S)
        return enrolled.device_id

    try:
        device_id = background.run(setup())
        context = chromium_browser.new_context(locale=locale)
        page = context.new_page()
        page.goto(f"{base_url(node)}/devices")
        page.fill("#signin-form [name=name]", "tess")  # by name: the labels are in zh-CN too
        page.fill("#signin-form [name=password]", PASSWORD)
        page.click("#signin-form [type=submit]")
        sources = page.locator(f"tr[data-device='{device_id}']").locator("td").nth(5)
        lost = sources.locator("li.dropped")
        lost.wait_for(timeout=10_000)
        assert lost.inner_text() == dropped
        assert lost.count() == 1
        # what a person sees: the dropped track in red, the others in the muted colour
        assert "dropped" in (lost.get_attribute("class") or "").split()
        assert lost.evaluate("e => getComputedStyle(e).color") == RED
        # the page refreshes every 3 s: an unchanged track keeps its element (a replaced
        # one is detached, and a detached element's computed colour reads '')
        held = lost.element_handle()
        shown = int(page.get_attribute("#rows", "data-shown") or 0)
        page.wait_for_function(  # the next refresh has been shown
            "n => Number(document.getElementById('rows').dataset.shown) > n",
            arg=shown,
            timeout=10_000,
        )
        assert held.evaluate("e => [e.isConnected, getComputedStyle(e).color]") == [True, RED]
        text = sources.inner_text()
        for line in seen:
            assert line in text, (line, text)
        shot = screenshot(page, "tracks")
        assert shot.stat().st_size > 5_000
        context.close()
    finally:

        async def teardown() -> None:
            for agent in agents:
                await agent.close()
            await node.stop()

        background.run(teardown())
