"""/wall/{name} in Debian's Chromium (issue 15, item 4): anonymous gets 401 and the sign-in
form; signed in, a 2x2 wall of two live ffmpeg publishers plays over WHEP (frames decoded,
rising, videoWidth > 0) and the page acknowledges the version it applied; a killed
publisher turns its tile offline (video hidden: no frozen frame) and its return makes it
live again by itself; a new layout dispatched is applied and acknowledged. Screenshots in
zh-CN and en (build/test-artifacts/screenshots/). The platform runs in a thread of its own
(tests/control_room/test_devices_page.py's Background)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from courtcast.platform import Platform
from tests.control_room.cities import Cities, two_cities
from tests.control_room.conftest import PASSWORD, base_url, control, media, start_platform
from tests.control_room.test_devices_page import Background, background  # noqa: F401
from tests.courtcast.test_platform import cancel, push, wait_live
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(120)

STATS = "async (i) => await window.wall.tiles[i].stats()"
VIDEO_WIDTH = "(i) => document.querySelector(`[data-tile='${i}'] video`).videoWidth"
VIDEO_HIDDEN = "(i) => document.querySelector(`[data-tile='${i}'] video`).hidden"
STATUS = "(i) => document.querySelector(`[data-tile='${i}'] .tile-status`).textContent"


def tile(i: int, state: str, stream: str | None = None) -> str:
    where = f"[data-tile='{i}'][data-state='{state}']"
    return where + (f"[data-stream='{stream}']" if stream is not None else "")


def test_a_wall_plays_acknowledges_and_recovers_by_itself(
    chromium_browser: Any,
    background: Background,  # noqa: F811
    tmp_path: Path,
    screenshot: Callable[[Any, str], Path],
) -> None:
    node: Platform = background.run(start_platform(tmp_path / "data"))
    stack = contextlib.AsyncExitStack()
    try:
        cities: Cities = background.run(stack.enter_async_context(two_cities(node, tmp_path)))
        admin = cities.admin

        async def api(method: str, path: str, **kw: Any) -> Any:
            answer = await admin.request(method, path, **kw)
            assert answer.is_success, answer.text
            return answer.json()

        wall = {"layout": "2x2", "tiles": ["zz-cam", "ly-cam", None, None]}
        assert background.run(api("PUT", "/api/v1/walls/big", json=wall))["version"] == 1

        page = chromium_browser.new_context(locale="zh-CN").new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # console errors (a CSP violation, a missing message); HTTP refusals are the page's
        page.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        first = page.goto(f"{base_url(node)}/wall/big")
        assert first is not None and first.status == 401
        page.get_by_text("请登录以显示此电视墙。").first.wait_for()
        page.get_by_label("用户名").fill("ada")
        page.get_by_label("密码").fill(PASSWORD)
        page.get_by_role("button", name="登录").click()

        # both publishers play: frames decoded and rising, a picture; empty tiles say so
        for i, stream in enumerate(["zz-cam", "ly-cam"]):
            page.wait_for_selector(tile(i, "live", stream), timeout=15_000)
        for i in (2, 3):
            assert page.query_selector(tile(i, "offline", "")) is not None
            assert page.evaluate(STATUS, i) == "无视频"
        before = [page.evaluate(STATS, i) for i in (0, 1)]
        page.wait_for_timeout(1000)
        after = [page.evaluate(STATS, i) for i in (0, 1)]
        for i in (0, 1):
            assert after[i]["framesDecoded"] > before[i]["framesDecoded"] > 0, after[i]
            assert page.evaluate(VIDEO_WIDTH, i) == 320
            assert after[i]["width"] == 320 and after[i]["bitrate"] > 0
        assert background.run(api("GET", "/api/v1/walls/big"))["acked_version"] == 1
        screenshot(page, "zh-CN")

        # Luoyang's camera drops: its tile goes offline, the video hidden, no frozen frame
        dropped = time.monotonic()
        background.run(cancel(cities.publishers["ly-cam"]))
        page.wait_for_selector(tile(1, "offline", "ly-cam"), timeout=5_000)
        offline_s = time.monotonic() - dropped
        assert page.evaluate(VIDEO_HIDDEN, 1) is True
        assert page.evaluate(STATUS, 1) in ("离线", "无信号")
        assert page.query_selector(tile(0, "live", "zz-cam")) is not None
        screenshot(page, "zh-CN-offline")

        # ... and comes back: the tile is live again with nobody touching the page
        async def restart(stream_id: str) -> None:
            clip = make_clip(tmp_path, seconds=60, fps=25, gop=25, size=(320, 240))
            port = media(node).rtmp_port
            url = f"rtmp://127.0.0.1:{port}/live/{stream_id}?key={cities.keys[stream_id]}"
            cities.publishers[stream_id] = asyncio.create_task(push(clip, url))
            await wait_live(node, stream_id)

        background.run(restart("ly-cam"))
        back = time.monotonic()
        page.wait_for_selector(tile(1, "live", "ly-cam"), timeout=15_000)
        recovered_s = time.monotonic() - back
        print(f"tile offline {offline_s:.2f} s after the kill, live {recovered_s:.2f} s after")

        # a new layout dispatched is applied and acknowledged
        five = {"layout": "1+5", "tiles": ["ly-cam", "zz-cam", None, None, None, None]}
        assert background.run(api("PUT", "/api/v1/walls/big", json=five))["version"] == 2
        page.wait_for_selector("#wall[data-layout='1+5'] [data-tile='5']", timeout=5_000)
        page.wait_for_selector(tile(0, "live", "ly-cam"), timeout=15_000)
        page.wait_for_selector(tile(1, "live", "zz-cam"), timeout=15_000)
        for _ in range(50):
            if background.run(api("GET", "/api/v1/walls/big"))["acked_version"] == 2:
                break
            time.sleep(0.1)
        assert background.run(api("GET", "/api/v1/walls/big"))["acked_version"] == 2

        # without the server's news (a node that died says nothing) the tile sees the frames
        # stop by itself, and its own retries bring it back
        control(node).events.board.listeners.clear()
        dropped = time.monotonic()
        background.run(cancel(cities.publishers["zz-cam"]))
        page.wait_for_selector(tile(1, "offline", "zz-cam"), timeout=6_000)
        stalled_s = time.monotonic() - dropped
        assert page.evaluate(VIDEO_HIDDEN, 1) is True
        background.run(restart("zz-cam"))
        back = time.monotonic()
        page.wait_for_selector(tile(1, "live", "zz-cam"), timeout=15_000)
        print(f"without news: offline {stalled_s:.2f} s, live {time.monotonic() - back:.2f} s")

        page.click("[data-lang-switch] [data-lang='en']")
        page.wait_for_function("() => document.documentElement.lang === 'en'", timeout=5_000)
        assert page.evaluate(STATUS, 2) == "No stream"
        assert page.text_content("#status") == "Version 2 shown"
        screenshot(page, "en")
        assert errors == []
    finally:
        background.run(stack.aclose(), timeout=30)
        background.run(node.stop(), timeout=30)
