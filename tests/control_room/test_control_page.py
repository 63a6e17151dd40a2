"""The operator console /control in Debian's Chromium, against the real platform with
streams published by ffmpeg over RTMP: sign in, build a 2x2 from the court tree by
clicking, every tile decodes; maximising switches a tile from the room's sub stream to the
main one; a tile whose publisher stops turns offline and comes back by itself; a layout
dispatched to /wall/big (a second browser context) plays there and is acknowledged; the
page in zh-CN and en. The platform runs in a thread of its own (Playwright's sync API
refuses a running asyncio loop in the test's thread). Screenshots: build/test-artifacts/."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from courtcast.platform import Platform
from tests.control_room.conftest import PASSWORD, base_url, control, media, start_platform
from tests.control_room.test_devices_page import Background
from tests.courtcast.test_platform import cancel, run, wait_live
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(120)

COURT = {"id": "kf-mid", "name": "开封市中级人民法院", "name_en": "Kaifeng Intermediate"}
# room -> its streams; cam1's room has a sub stream, which tiles play until maximised
STREAMS = {"cam1": "Room 1", "cam1-sub": "Room 1", "cam2": "Room 2", "cam3": "Room 3"}
STREAMS |= {"cam4": "Room 4"}
GRID = ["cam1", "cam2", "cam3", "cam4"]  # what the 2x2 shows, clicked in this order


async def looped(clip: Path, url: str) -> tuple[int, str]:
    """ffmpeg publishes the clip over RTMP in real time, looped, until cancelled (push()
    stops at 60 s)."""
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-stream_loop"]
    return await run(*cmd, "-1", "-i", str(clip), "-c", "copy", "-f", "flv", url, timeout=3600)


@dataclass
class Site:
    node: Platform
    bg: Background
    clip: Path
    keys: dict[str, str]
    publishers: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return base_url(self.node)

    def publish(self, stream_id: str) -> None:
        port = media(self.node).rtmp_port
        url = f"rtmp://127.0.0.1:{port}/live/{stream_id}?key={self.keys[stream_id]}"

        async def start() -> Any:
            task = asyncio.create_task(looped(self.clip, url))
            await wait_live(self.node, stream_id)
            return task

        self.publishers[stream_id] = self.bg.run(start())

    def stop(self, stream_id: str) -> None:
        self.bg.run(cancel(self.publishers.pop(stream_id)))


@pytest.fixture
def background() -> Iterator[Background]:
    bg = Background()
    yield bg
    bg.close()


@pytest.fixture
def site(background: Background, tmp_path: Path) -> Iterator[Site]:
    """The platform, a court with four rooms, their cameras live, operators olga and otto.
    Tests ask for it before chromium_browser: the browser then closes (its websockets with
    it) before the platform stops."""
    node: Platform = background.run(start_platform(tmp_path / "data"))

    async def setup() -> dict[str, str]:
        await control(node).users.add("ada", "admin", PASSWORD)
        await control(node).users.add("olga", "operator", PASSWORD)
        await control(node).users.add("otto", "operator", PASSWORD)
        await control(node).users.add("tess", "technician", PASSWORD)
        async with httpx.AsyncClient(base_url=base_url(node), timeout=10) as admin:
            signed = await admin.post("/api/v1/login", json={"name": "ada", "password": PASSWORD})
            assert signed.status_code == 200, signed.text
            assert (await admin.post("/api/v1/courts", json=COURT)).status_code == 201
            keys = {}
            for stream_id, room in STREAMS.items():
                body = {"id": stream_id, "court": COURT["id"], "room": room}
                made = await admin.post("/api/v1/streams", json={**body, "stream_class": "trial"})
                assert made.status_code == 201, made.text
                keys[stream_id] = made.json()["key"]
        return keys

    keys = background.run(setup())
    # 2 s GOP, no B-frames, no audio: WebRTC plays it as is, nothing to transcode
    clip = make_clip(tmp_path, seconds=30, fps=25, gop=50, audio=None, size=(320, 240))
    made = Site(node, background, clip, keys)
    try:
        for stream_id in STREAMS:
            made.publish(stream_id)
        yield made
    finally:
        for stream_id in list(made.publishers):
            made.stop(stream_id)
        background.run(node.stop())


def open_page(browser: Any, url: str, locale: str = "en-US") -> tuple[Any, list[str]]:
    """A new browser profile on url; console errors and uncaught exceptions collected."""
    page = browser.new_context(locale=locale).new_page()
    errors: list[str] = []

    def console(message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    return page, errors


def sign_in(page: Any, name: str = "olga") -> None:
    """Through the page's own sign-in form (/control's and /wall's are alike)."""
    page.locator("#signin").wait_for(state="visible", timeout=10_000)
    page.locator("#signin-form [name=name]").fill(name)
    page.locator("#signin-form [name=password]").fill(PASSWORD)
    page.locator("#signin-form button[type=submit]").click()
    page.locator("#signin").wait_for(state="hidden", timeout=10_000)


def decoded(page: Any, selector: str) -> int:
    """Frames the tile's <video> has decoded so far (HTMLVideoElement playback quality)."""
    return int(
        page.evaluate(
            "(s) => document.querySelector(s).getVideoPlaybackQuality().totalVideoFrames",
            f"{selector} video",
        )
    )


def wait_playing(page: Any, selector: str, stream_id: str, timeout_ms: int = 30_000) -> None:
    """The tile plays stream_id: live, a picture (videoWidth > 0) and frames still coming."""
    try:
        page.wait_for_function(
            """([s, id]) => { const el = document.querySelector(s);
                 return el && el.dataset.stream === id && el.dataset.state === 'live'
                   && el.querySelector('video').videoWidth > 0; }""",
            arg=[selector, stream_id],
            timeout=timeout_ms,
        )
        before = decoded(page, selector)
        page.wait_for_function(
            "([s, n]) => document.querySelector(s + ' video')"
            ".getVideoPlaybackQuality().totalVideoFrames > n + 10",
            arg=[selector, before],
            timeout=5_000,
        )
    except Exception as exc:
        tiles = page.evaluate(
            "() => [...document.querySelectorAll('[data-tile]')].map((el) =>"
            " `${el.dataset.tile}:${el.dataset.stream}:${el.dataset.state}`)"
        )
        raise AssertionError(f"{selector} never played {stream_id}; tiles: {tiles}") from exc


def tile(index: int) -> str:
    return f"#grid [data-tile='{index}']"


def build_2x2(page: Any) -> None:
    page.click("#layouts [data-layout='2x2']")
    for stream_id in GRID:
        page.click(f"#tree [data-stream-id='{stream_id}'] .name")


def test_build_a_2x2_maximise_and_a_tile_recovers_by_itself(
    site: Site, chromium_browser: Any, screenshot: Callable[[Any, str], Path]
) -> None:
    page, errors = open_page(chromium_browser, f"{site.url}/control")
    sign_in(page)
    # the tree: court -> rooms -> streams, a sub stream under its main one, not beside it
    page.locator("#tree [data-court='kf-mid']").wait_for(timeout=10_000)
    assert page.locator("#tree [data-stream-id='cam1-sub']").count() == 0
    page.locator("#tree [data-stream-id='cam2'] [data-badge='state'].live").wait_for()
    build_2x2(page)
    assert page.locator("#grid [data-tile]").count() == 4
    # the room with a sub stream plays it; the others play their only stream
    for index, stream_id in enumerate(["cam1-sub", "cam2", "cam3", "cam4"]):
        wait_playing(page, tile(index), stream_id)
    screenshot(page, "2x2")

    page.dblclick(tile(0))
    wait_playing(page, tile(0), "cam1")
    assert page.locator(tile(0)).bounding_box()["width"] > 1.5 * page.locator(tile(1)).evaluate(
        "el => el.closest('.grid').clientWidth / 2.5"
    )
    screenshot(page, "maximised")
    page.dblclick(tile(0))
    wait_playing(page, tile(0), "cam1-sub")

    site.stop("cam2")
    page.wait_for_function(
        "s => document.querySelector(s).dataset.state === 'offline'", arg=tile(1), timeout=15_000
    )
    page.locator("#tree [data-stream-id='cam2'] [data-badge='state'].offline").wait_for(
        timeout=10_000
    )
    screenshot(page, "offline")
    site.publish("cam2")
    wait_playing(page, tile(1), "cam2", timeout_ms=20_000)
    page.locator("#tree [data-stream-id='cam2'] [data-badge='state'].live").wait_for(timeout=10_000)
    # drag and drop from the tree onto a tile
    page.drag_and_drop("#tree [data-stream-id='cam4'] .name", tile(1))
    wait_playing(page, tile(1), "cam4")
    # the console's layout is the operator's own wall @olga, for others to see and dispatch to
    own = olga_get(site, "/api/v1/walls/%40olga")
    assert (own["layout"], own["tiles"]) == ("2x2", ["cam1", "cam4", "cam3", "cam4"])
    assert own["acked_version"] == own["version"]
    assert errors == []


def olga_get(site: Site, path: str) -> Any:
    with httpx.Client(base_url=site.url, timeout=10) as http:
        signed = http.post("/api/v1/login", json={"name": "olga", "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        answer = http.get(path)
        assert answer.status_code == 200, answer.text
        return answer.json()


def test_dispatch_a_layout_to_a_wall_that_plays_it_and_acknowledges(
    site: Site, chromium_browser: Any
) -> None:
    page, errors = open_page(chromium_browser, f"{site.url}/control")
    sign_in(page)
    page.locator("#tree [data-stream-id='cam4']").wait_for(timeout=10_000)
    build_2x2(page)
    wall_page, wall_errors = open_page(chromium_browser, f"{site.url}/wall/big")
    sign_in(wall_page, "otto")
    page.fill("#dispatch-target", "big")
    page.click("#dispatch-form button[type=submit]")
    row = page.locator("#dispatches [data-dispatch='big']")
    row.wait_for(timeout=5_000)
    for index, stream_id in enumerate(GRID):
        selector = f"[data-tile='{index}']"
        wall_page.wait_for_function(
            """([s, id]) => { const el = document.querySelector(s);
                 return el && el.dataset.stream.startsWith(id) && el.dataset.state === 'live'
                   && el.querySelector('video').videoWidth > 0; }""",
            arg=[selector, stream_id],
            timeout=20_000,
        )
    page.wait_for_function(
        "() => document.querySelector(\"#dispatches [data-dispatch='big']\")"
        ".dataset.state === 'applied'",
        timeout=10_000,
    )
    big = olga_get(site, "/api/v1/walls/big")
    assert big["acked_version"] == big["version"] == int(row.get_attribute("data-version"))
    assert big["tiles"] == GRID

    # one tile to another operator's console: otto's screen takes it and acknowledges
    otto, otto_errors = open_page(chromium_browser, f"{site.url}/control")
    sign_in(otto, "otto")
    page.click(tile(2))  # select cam3's tile
    page.fill("#dispatch-target", "@otto")
    page.check("#dispatch-form [name=what][value=tile]")
    page.click("#dispatch-form button[type=submit]")
    wait_playing(otto, tile(2), "cam3")
    page.wait_for_function(
        "() => document.querySelector(\"#dispatches [data-dispatch='@otto']\")"
        ".dataset.state === 'applied'",
        timeout=10_000,
    )
    assert errors == [] and wall_errors == [] and otto_errors == []


@pytest.mark.parametrize(
    ("locale", "lang", "heading", "live"),
    [("zh-CN", "zh-CN", "指挥调度台", "在线"), ("en-US", "en", "Operator console", "live")],
    ids=["zh-CN", "en"],
)
def test_the_console_in_both_languages(
    site: Site,
    chromium_browser: Any,
    screenshot: Callable[[Any, str], Path],
    locale: str,
    lang: str,
    heading: str,
    live: str,
) -> None:
    page, errors = open_page(chromium_browser, f"{site.url}/control", locale)
    assert page.evaluate("() => document.documentElement.lang") == lang
    screenshot(page, f"{lang}-sign-in")
    sign_in(page)
    assert page.text_content("h1") == heading
    badge = page.locator("#tree [data-stream-id='cam3'] [data-badge='state']")
    badge.filter(has_text=live).wait_for(timeout=10_000)
    page.click("#tree [data-stream-id='cam3'] .name")
    wait_playing(page, tile(0), "cam3")
    page.click("#stats")
    page.wait_for_function(
        "() => /^[1-9]\\d* kbit\\/s\\n[1-9]/.test("
        "document.querySelector('#grid .cell .overlay').textContent)",
        timeout=5_000,
    )
    screenshot(page, lang)
    other = "en" if lang == "zh-CN" else "zh-CN"
    page.click(f"[data-lang-switch] [data-lang='{other}']")
    page.wait_for_function(f"() => document.documentElement.lang === '{other}'")
    assert page.text_content("h1") != heading
    screenshot(page, f"{lang}-switched-to-{other}")
    assert errors == []


def test_tours_and_saved_layouts(site: Site, chromium_browser: Any) -> None:
    page, errors = open_page(chromium_browser, f"{site.url}/control")
    sign_in(page)
    page.locator("#tree [data-stream-id='cam4']").wait_for(timeout=10_000)
    build_2x2(page)
    page.fill("#save-name", "morning")
    page.click("#save-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#saved').value === 'morning'")
    page.click("#clear")
    page.wait_for_function(
        "() => !document.querySelector(\"#grid [data-tile='0']\").dataset.stream"
    )
    page.click("#load")
    wait_playing(page, tile(3), "cam4")

    # a tour of cam2 and cam3 every 2 s in the first tile
    page.check("#tree [data-stream-id='cam2'] input[type=checkbox]")
    page.check("#tree [data-stream-id='cam3'] input[type=checkbox]")
    page.fill("#tour-period", "2")
    page.click(tile(0))
    page.click("#tour-start")
    wait_playing(page, tile(0), "cam2")
    wait_playing(page, tile(0), "cam3", timeout_ms=5_000)
    wait_playing(page, tile(0), "cam2", timeout_ms=5_000)
    page.locator(".cell").first.locator("[data-action=tour-stop]").click()
    shown = page.get_attribute(tile(0), "data-stream")
    page.wait_for_timeout(3_000)
    assert page.get_attribute(tile(0), "data-stream") == shown  # the tour has stopped

    page.click("#delete")
    page.wait_for_function("() => document.querySelector('#saved').options.length === 0")
    assert olga_get(site, "/api/v1/layouts") == []
    assert errors == []


def test_a_technician_is_told_the_console_is_not_theirs(site: Site, chromium_browser: Any) -> None:
    page, _ = open_page(chromium_browser, f"{site.url}/control")
    page.locator("#signin-form [name=name]").fill("tess")
    page.locator("#signin-form [name=password]").fill(PASSWORD)
    page.locator("#signin-form button[type=submit]").click()
    page.locator("#signin-prompt").filter(has_text="tess may not use the console").wait_for(
        timeout=10_000
    )
    assert page.locator("#console").is_hidden()


def test_the_console_on_a_tablet(
    site: Site, chromium_browser: Any, screenshot: Callable[[Any, str], Path]
) -> None:
    """A tablet (1024x768, touch, landscape): the operator builds a 2x2 by tapping the court
    tree, the tiles play, and nothing is wider than the screen. (Chromium only: Firefox is
    not tested here, Playwright drives only its own patched build of it.)"""
    context = chromium_browser.new_context(
        viewport={"width": 1024, "height": 768}, has_touch=True, is_mobile=True, locale="zh-CN"
    )
    page = context.new_page()
    page.goto(f"{site.url}/control")
    page.locator("#signin").wait_for(state="visible", timeout=10_000)
    page.locator("#signin-form [name=name]").fill("olga")
    page.locator("#signin-form [name=password]").fill(PASSWORD)
    page.locator("#signin-form button[type=submit]").tap()
    page.locator("#signin").wait_for(state="hidden", timeout=10_000)
    page.locator("#tree [data-stream-id='cam2'] [data-badge='state'].live").wait_for()
    page.tap("#layouts [data-layout='2x2']")
    for stream_id in GRID:
        page.tap(f"#tree [data-stream-id='{stream_id}'] .name")
    for index, stream_id in enumerate(["cam1-sub", "cam2", "cam3", "cam4"]):
        wait_playing(page, tile(index), stream_id)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 1024, f"the page is {width} px wide on a 1024 px screen"
    screenshot(page, "tablet")
    context.close()
