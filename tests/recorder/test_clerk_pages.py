"""The clerks' pages in Debian's Chromium (issue 15, item 5): a clerk opens a trial session
from /sessions, two cameras record (one loses its publisher for a while), the clerk closes
it from the page; /recordings finds the recording by case number, draws each camera's
timeline with the gap and its cause, plays one camera and then both on one clock, exports
a range with a progress bar (the file decodes to the range) and verifies it, in words.
Both pages are looked at in en and zh-CN (screenshots in build/test-artifacts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from courtcast.platform import Platform
from tests.control_room.test_devices_page import Background, background  # noqa: F401
from tests.courtcast.test_platform import define, media_role, push, start_platform, wait_live
from tests.mediafiles import make_clip
from tests.recorder.conftest import ffprobe

pytestmark = pytest.mark.timeout(90)
PASSWORD = "correct horse battery"
FPS = 25
SEGMENT_S = 2.0
CASE = "(2026)汴01刑初15号"
ROOM = "Tribunal 15"


def role(node: Platform, name: str) -> Any:
    return next(r for r in node.roles if r.name == name)


def utc_input(at: float) -> str:
    """A datetime-local value for a browser running in UTC."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S")


class Cameras:
    """The courtroom's two cameras, published with ffmpeg over RTMP from the loop's thread."""

    def __init__(self, node: Platform, loop: Background, clip: Path) -> None:
        self.node, self.background, self.clip = node, loop, clip
        self.keys: dict[str, str] = {}
        self.running: dict[str, Future[Any]] = {}

    def define(self, stream: str) -> None:
        self.keys[stream] = self.background.run(
            define(self.node, stream, room=ROOM, court="bianliang")
        )

    def start(self, stream: str) -> None:
        port = media_role(self.node).rtmp_port
        url = f"rtmp://127.0.0.1:{port}/live/{stream}?key={self.keys[stream]}"
        self.running[stream] = asyncio.run_coroutine_threadsafe(
            push(self.clip, url), self.background.loop
        )
        self.background.run(wait_live(self.node, stream))

    def stop(self, stream: str) -> None:
        """Kills the publisher (cancelling push() kills and reaps its ffmpeg)."""
        future = self.running.pop(stream)
        future.cancel()
        deadline = time.monotonic() + 5
        while role(self.node, "media_server").hub.stream(stream).live:
            assert time.monotonic() < deadline, f"{stream} still live after its publisher died"
            time.sleep(0.1)

    def stop_all(self) -> None:
        for stream in list(self.running):
            self.running.pop(stream).cancel()


def advancing(page: Any, selector: str) -> None:
    """The <video> at selector plays: its time moves on and it has decoded a picture."""
    page.wait_for_function(
        f"""() => {{ const v = document.querySelector({selector!r});
            return v && v.videoWidth > 0 && v.currentTime > 0.5; }}""",
        timeout=15_000,
    )
    before = page.eval_on_selector(selector, "v => v.currentTime")
    page.wait_for_timeout(1200)
    after = page.eval_on_selector(selector, "v => v.currentTime")
    assert after > before + 0.5, (before, after)


def test_clerk_opens_closes_finds_plays_exports_and_verifies(
    chromium_browser: Any,
    background: Background,  # noqa: F811
    tmp_path: Path,
    screenshot: Callable[[Any, str], Path],
) -> None:
    clip = make_clip(tmp_path, seconds=40, fps=FPS, gop=FPS, size=(320, 240))
    node: Platform = background.run(
        start_platform(tmp_path, **{"recorder.segment_target_s": SEGMENT_S})
    )
    cameras = Cameras(node, background, clip)
    try:
        background.run(role(node, "control_room").users.add("clara", "clerk", PASSWORD))
        for stream in ("t15-judge", "t15-wide"):
            cameras.define(stream)
            cameras.start(stream)
        base = f"http://127.0.0.1:{node.http_port}"
        context = chromium_browser.new_context(locale="en-US", timezone_id="UTC")
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())

        # /sessions: sign in, open a session from the form
        page.goto(f"{base}/sessions")
        page.get_by_text("Sign in to continue.").wait_for()
        page.get_by_label("User").fill("clara")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_text("Signed in as clara (clerk)").wait_for()
        page.get_by_label("Case number").fill(CASE)
        page.get_by_label("Title", exact=True).fill("People v. Zhang")
        page.get_by_label("Parties").fill("Procuratorate v. Zhang San")
        page.get_by_label("Courtroom").select_option(ROOM)
        page.get_by_role("button", name="Open session").click()
        row = page.locator("tr[data-state='open']", has_text=CASE)
        row.wait_for(timeout=10_000)
        for seen in ("bianliang", ROOM, "People v. Zhang", "Zhang San", "no", "30 s"):
            assert seen in row.inner_text(), (seen, row.inner_text())

        # both cameras record; the wide one loses its publisher for a while
        page.wait_for_timeout(4000)
        cameras.stop("t15-wide")
        page.wait_for_timeout(2500)
        cameras.start("t15-wide")
        page.wait_for_timeout(4000)
        screenshot(page, "sessions-en")
        row.get_by_role("button", name="Close").click()
        page.locator("tr[data-state='closed']", has_text=CASE).wait_for(timeout=10_000)
        assert "session closed" in page.locator("#status").inner_text()
        cameras.stop_all()
        background.run(asyncio.sleep(0.5))  # the recorder reconciles on the change
        background.run(role(node, "recorder").wait_closed())

        # /recordings: search by case number, the timelines and the gap's cause
        page.get_by_role("link", name="Recordings", exact=True).first.click()
        page.get_by_label("Case number").fill(CASE)
        page.get_by_role("button", name="Search").click()
        page.get_by_text("2 recording(s) found.").wait_for(timeout=10_000)
        group = page.locator(f".room-group[data-room='{ROOM}']")
        judge = group.locator(".track", has_text="t15-judge")
        wide = group.locator(".track", has_text="t15-wide")
        assert judge.locator(".bar .rec").count() >= 1
        lost = wide.locator(".gap[data-cause='publisher-lost']")
        assert lost.count() >= 1
        assert "camera signal lost" in lost.first.inner_text()
        assert wide.locator(".bar .rec").count() >= 2  # recorded, lost, recorded again

        # playback: one camera, then the session's two cameras on one clock
        judge.get_by_role("button", name="Play").click()
        advancing(page, ".cam video")
        judge.get_by_role("button", name="All cameras").click()
        page.wait_for_function("() => document.querySelectorAll('.cam video').length === 2")
        advancing(page, ".cam:nth-child(1) video")
        advancing(page, ".cam:nth-child(2) video")
        # go to a moment after the wide camera's gap: there its media time runs ~2.5 s
        # behind the judge's, so only players aligned on program date-time agree
        wide_spans = page.evaluate(
            "() => { const p = window.recordingsPage; const r = p.recordings.find("
            "x => x.stream === 't15-wide'); return p.timelines[r.id].recorded; }"
        )
        moment = int(wide_spans[-1][0]) + 2
        page.locator("#goto").fill(utc_input(moment))
        page.get_by_role("button", name="Go", exact=True).click()
        page.wait_for_timeout(1500)
        clocks = [
            float(c)
            for c in page.eval_on_selector_all(
                ".wallclock", "els => els.map(e => e.dataset.wallclock)"
            )
        ]
        assert len(clocks) == 2 and abs(clocks[0] - clocks[1]) < 0.8, clocks
        assert all(moment - 0.5 <= c <= moment + 4 for c in clocks), (moment, clocks)
        times = page.eval_on_selector_all(".cam video", "vs => vs.map(v => v.currentTime)")
        assert abs(times[0] - times[1]) > 1.5, times  # one clock, not one media time
        assert "2026" in page.locator(".wallclock").first.inner_text()

        # export a range with a progress bar, then decode the download
        judge.get_by_role("button", name="Export / verify").click()
        spans = page.evaluate(
            "() => { const r = window.recordingsPage.selected;"
            " return window.recordingsPage.timelines[r.id].recorded; }"
        )
        start = int(spans[0][0]) + 2
        page.locator("#export-from").fill(utc_input(start))
        page.locator("#export-to").fill(utc_input(start + 5))
        page.get_by_role("button", name="Export", exact=True).click()
        page.locator("#export-percent[data-percent='100']").wait_for(timeout=20_000)
        assert page.locator("#export-progress").evaluate("p => p.value") == 100
        with page.expect_download() as download:
            page.get_by_role("link", name="Download the MP4").click()
        saved = tmp_path / "export.mp4"
        download.value.save_as(saved)
        exported = page.evaluate("() => window.recordingsPage.exported")
        # the bar counted the bytes against the answer's Content-Length, not a guess
        assert exported["total"] == exported["bytes"] == saved.stat().st_size > 0, exported
        info = ffprobe(saved)
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert video["width"] == 320 and int(video["nb_read_frames"]) > 0
        assert abs(float(info["format"]["duration"]) - 5.0) <= SEGMENT_S + 0.1, info["format"]
        assert "Exported:" in page.locator("#export-status").inner_text()

        # verify: in words
        page.get_by_role("button", name="Verify", exact=True).click()
        result = page.locator("#verify-result[data-ok='true']")
        result.wait_for(timeout=15_000)
        words = result.inner_text()
        assert words.startswith("Valid:") and "the signature is valid" in words, words
        screenshot(page, "recordings-en")

        # the same pages in zh-CN, by the shared switch
        page.locator("[data-lang-switch] [data-lang='zh-CN']").click()
        page.get_by_role("heading", name="庭审录像").wait_for()
        assert "摄像机信号中断" in lost.first.inner_text()
        assert result.inner_text().startswith("有效\uff1a")  # a full-width colon, as zh-CN writes
        screenshot(page, "recordings-zh-CN")
        page.goto(f"{base}/sessions")  # served in the saved choice from the first paint
        page.locator("tr[data-state='closed']", has_text=CASE).wait_for()
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        assert "已闭庭" in page.locator("tr[data-state='closed']").first.inner_text()
        screenshot(page, "sessions-zh-CN")
        context.close()
    finally:
        cameras.stop_all()
        background.run(node.stop())


def test_sessions_page_speaks_chinese_and_says_what_went_wrong(
    chromium_browser: Any,
    background: Background,  # noqa: F811
    tmp_path: Path,
    screenshot: Callable[[Any, str], Path],
) -> None:
    """A browser asking for Chinese gets the pages in zh-CN from the first paint; a refused
    action is said in words (a second session in a busy room, a recess with no reason);
    a recess shows on the timeline as a gap with its cause and reason."""
    clip = make_clip(tmp_path, seconds=40, fps=FPS, gop=FPS, size=(320, 240))
    node: Platform = background.run(
        start_platform(tmp_path, **{"recorder.segment_target_s": SEGMENT_S})
    )
    cameras = Cameras(node, background, clip)
    try:
        background.run(role(node, "control_room").users.add("clara", "clerk", PASSWORD))
        cameras.define("t15-judge")
        cameras.start("t15-judge")
        base = f"http://127.0.0.1:{node.http_port}"
        context = chromium_browser.new_context(locale="zh-CN")
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        served = page.goto(f"{base}/sessions")
        assert served is not None and served.headers["content-language"] == "zh-CN"
        page.get_by_text("请先登录。").wait_for()
        page.get_by_label("用户名").fill("clara")
        page.get_by_label("密码").fill(PASSWORD)
        page.get_by_role("button", name="登录").click()
        page.get_by_text("已登录\uff1aclara\uff08书记员\uff09").wait_for()

        def open_session(case: str, public: bool = False) -> None:
            page.get_by_label("案号").fill(case)
            page.get_by_label("公开\uff08准予直播\uff09").set_checked(public)
            page.locator("#room").select_option(ROOM)
            page.get_by_role("button", name="开庭", exact=True).click()

        open_session(CASE, public=True)
        row = page.locator("tr[data-session]", has_text=CASE)
        row.and_(page.locator("[data-state='open']")).wait_for(timeout=10_000)
        row.get_by_role("button", name="切断直播").click()  # a public one: its broadcast
        row.locator(".badge.cut", has_text="直播已切断").wait_for(timeout=10_000)
        row.get_by_role("button", name="恢复直播").click()
        row.get_by_role("button", name="切断直播").wait_for(timeout=10_000)
        assert row.locator(".badge.cut").count() == 0
        open_session("(2026)汴01民初2号")  # the room is busy: refused, in words
        status = page.locator("#status.error")
        status.wait_for()
        assert status.inner_text().startswith("当前无法执行"), status.inner_text()
        assert "already has session" in status.inner_text()
        assert page.locator("tr[data-session]").count() == 1

        row.get_by_role("button", name="休庭").click()  # no reason given
        page.locator("#status.error", has_text="休庭需要填写原因").wait_for()
        row.get_by_label("休庭原因").fill("证人未到")
        row.get_by_role("button", name="休庭").click()
        row.and_(page.locator("[data-state='recess']")).wait_for(timeout=10_000)
        assert "证人未到" in row.inner_text()
        page.wait_for_timeout(3000)
        row.get_by_role("button", name="继续开庭").click()
        row.and_(page.locator("[data-state='open']")).wait_for(timeout=10_000)
        page.wait_for_timeout(3000)
        screenshot(page, "sessions-zh-CN")
        row.get_by_role("button", name="闭庭").click()
        row.and_(page.locator("[data-state='closed']")).wait_for(timeout=10_000)
        cameras.stop_all()
        background.run(asyncio.sleep(0.5))
        background.run(role(node, "recorder").wait_closed())

        row.get_by_role("link", name="录像").click()  # this session's recordings
        recess = page.locator(".track .gap[data-cause='recess']")
        recess.wait_for(timeout=10_000)
        assert recess.inner_text() == "休庭 (证人未到)", recess.inner_text()
        assert page.get_by_role("heading", name="庭审录像").is_visible()
        screenshot(page, "recordings-zh-CN")
        context.close()
    finally:
        cameras.stop_all()
        background.run(node.stop())
