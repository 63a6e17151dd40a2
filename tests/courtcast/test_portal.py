"""The public's pages in Debian's Chromium against a real platform (issue 16, items 1 and
4): the portal (/) lists a live public session, its watch page plays it (frames decoded)
the broadcast delay behind live, a cut shows "broadcast paused" and a resume brings the
trial back; a scheduled session is upcoming; a finished session with a cut replays as VOD
without the cut, on its page too; zh-CN and en both render.

One platform for the module, in a thread of its own (Playwright's sync API refuses a
running asyncio loop in the test's thread), with ffmpeg publishing over RTMP. Screenshots
go to build/test-artifacts/screenshots/ (tests/fixtures/browser.py)."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from courtcast.platform import Platform
from tests.control_room.test_devices_page import Background
from tests.courtcast.test_platform import base_url, define, media_role, run, start_platform
from tests.courtcast.test_public_broadcast import open_session, signed_in
from tests.mediafiles import make_clip

pytestmark = pytest.mark.timeout(150)

DELAY_S = 6.0
SEGMENT_S = 2.0  # hls.segment_target_s; the clip has a keyframe every second
FPS = 25
PLAYING = "() => window.watch && window.watch.state"
# frames decoded and time moving, and the picture's program date-time
PROGRESS = """() => {
  const v = document.getElementById('video');
  const at = window.watch.playingDate();
  const hls = window.watch.hls;
  return {time: v.currentTime, frames: v.getVideoPlaybackQuality().totalVideoFrames,
          width: v.videoWidth, at: at ? at.getTime() / 1000 : null, now: Date.now() / 1000,
          holdBack: hls ? hls.targetLatency : null};
}"""


class Node:
    """The platform, an admin's API client and the RTMP publishers, on the background loop."""

    def __init__(self, background: Background, tmp: Path) -> None:
        self.bg = background
        self.platform: Platform = background.run(start_platform(tmp / "data"))
        self.url = base_url(self.platform)
        self.http: httpx.AsyncClient = background.run(signed_in(self.platform, "admin"))
        self.clip = make_clip(tmp, seconds=240, fps=FPS, gop=FPS, size=(320, 240))
        self.publishers: list[asyncio.Future[Any]] = []

    def camera(self, stream_id: str, room: str, court: str) -> None:
        """A trial camera in room, publishing the clip over RTMP until the module ends."""
        key = self.bg.run(define(self.platform, stream_id, public=True, room=room, court=court))
        port = media_role(self.platform).rtmp_port
        url = f"rtmp://127.0.0.1:{port}/live/{stream_id}?key={key}"
        publish = run(
            *("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re"),
            *("-i", str(self.clip), "-c", "copy", "-f", "flv", url),
            timeout=600,  # the whole module (push() of test_platform stops after 60 s)
        )
        self.publishers.append(asyncio.run_coroutine_threadsafe(publish, self.bg.loop))

    def api(self, method: str, path: str, **body: Any) -> dict[str, Any]:
        async def call() -> dict[str, Any]:
            answer = await self.http.request(method, path, json=body or None)
            assert answer.status_code in (200, 201), (path, answer.text)
            result: dict[str, Any] = answer.json()
            return result

        return self.bg.run(call())

    def open(self, room: str, **fields: Any) -> dict[str, Any]:
        return dict(self.bg.run(open_session(self.http, room, public=True, **fields)))

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=15)

    def close(self) -> None:
        for publisher in self.publishers:
            publisher.cancel()
        self.bg.run(self.http.aclose())
        self.bg.run(self.platform.stop())


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    background = Background()
    made = Node(background, tmp_path_factory.mktemp("portal"))
    try:
        made.camera("cam-live", "Courtroom 7", "Zhengzhou Intermediate People's Court")
        made.camera("cam-replay", "Courtroom 8", "Kaifeng Basic People's Court")
        yield made
    finally:
        made.close()
        background.close()


def browse(browser: Any, locale: str) -> tuple[Any, list[str]]:
    """A page in a new profile speaking locale; console errors and page errors collected."""
    page = browser.new_context(locale=locale, viewport={"width": 1100, "height": 760}).new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("console", lambda m: m.type == "warning" and print("browser:", m.text))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page, errors


def live_session(node: Node) -> dict[str, Any]:
    """The public session of Courtroom 7 (cam-live), opened by the first test that needs it."""
    for item in node.get("/api/v1/public/sessions").json()["live"]:
        if item["room"] == "Courtroom 7":
            return node.api("GET", f"/api/v1/sessions/{item['id']}")
    return node.open(
        "Courtroom 7", delay=DELAY_S, title="盗窃罪", parties="公诉机关 某区检察院 / 被告人 李某"
    )


def real_errors(errors: list[str]) -> list[str]:
    """Console errors but the 404 Chromium logs for a resource refused on purpose (a
    playlist of a broadcast that ended, /favicon.ico)."""
    return [e for e in errors if not e.startswith("Failed to load resource")]


def wait_state(page: Any, state: str, timeout_s: float) -> None:
    page.wait_for_function(
        f"() => window.watch && window.watch.state === '{state}'", timeout=timeout_s * 1000
    )


def assert_plays(page: Any, seconds: float = 2.0) -> dict[str, float]:
    """Time moves, frames are decoded, the picture has a size."""
    first = page.evaluate(PROGRESS)
    time.sleep(seconds)
    then = page.evaluate(PROGRESS)
    assert then["time"] > first["time"] + seconds / 2, (first, then)
    assert then["frames"] > first["frames"] + seconds * FPS / 2, (first, then)
    assert then["width"] == 320, then
    return dict(then)


def plays_within(page: Any, timeout_s: float) -> None:
    """The picture moves (assert_plays) at some point within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            assert_plays(page)
            return
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        wait_state(page, "live", timeout_s)


@pytest.mark.serial  # a playback latency bound
def test_the_portal_lists_a_live_trial_whose_page_plays_it_the_delay_late(
    chromium_browser: Any, node: Node, screenshot: Callable[[Any, str], Path]
) -> None:
    session = live_session(node)
    sid = session["id"]
    page, errors = browse(chromium_browser, "en-US")
    page.goto(node.url + "/")
    card = page.locator(f"[data-section=live] li[data-session='{sid}']")
    card.wait_for(timeout=10_000)
    text = card.inner_text()
    for seen in (
        "LIVE",
        session["case_number"],
        "盗窃罪",
        "被告人 李某",
        "Courtroom 7",
        "Zhengzhou",
    ):
        assert seen in text, (seen, text)
    assert page.title() == "Court trials live"
    screenshot(page, "portal-en")

    card.locator("a").click()
    page.wait_for_url(f"**/watch/{sid}")
    wait_state(page, "live", DELAY_S + 15)
    assert page.inner_text("#case-number") == session["case_number"]
    assert "6 s behind" in page.inner_text("#delay-note")
    progress = assert_plays(page)
    lags, hold_back = [], 0.0
    for _ in range(8):
        progress = page.evaluate(PROGRESS)
        lags.append(round(progress["now"] - progress["at"], 2))
        hold_back = float(progress["holdBack"])
        time.sleep(0.5)
    lag = sum(lags) / len(lags)
    print(
        f"the player shows what was captured {lag:.2f} s ago (delay {DELAY_S} s; of it "
        f"{hold_back:.2f} s is the player's own hold-back from the playlist's live edge); "
        f"samples {lags}"
    )
    # never earlier than the delay (a cut must find the media still held), and the
    # delay within a segment: the player's own LL-HLS hold-back included
    assert min(lags) >= DELAY_S, lags
    assert max(lags) <= DELAY_S + SEGMENT_S, (lags, hold_back)
    page.locator("#viewers").filter(has_text="1 watching").wait_for(timeout=10_000)
    screenshot(page, "watch-live-en")
    assert real_errors(errors) == []


def test_a_cut_shows_broadcast_paused_and_a_resume_brings_the_trial_back(
    chromium_browser: Any, node: Node, screenshot: Callable[[Any, str], Path]
) -> None:
    sid = live_session(node)["id"]
    page, errors = browse(chromium_browser, "zh-CN")
    warnings: list[str] = []
    page.on("console", lambda m: m.type == "warning" and warnings.append(m.text))
    page.goto(f"{node.url}/watch/{sid}")
    wait_state(page, "live", DELAY_S + 15)
    assert page.inner_text("#badge") == "直播中"

    node.api("POST", f"/api/v1/sessions/{sid}/cut")
    cut = time.monotonic()
    wait_state(page, "paused", SEGMENT_S + 6)
    print(f"paused shown {time.monotonic() - cut:.1f} s after the cut")
    assert page.inner_text("#overlay-text") == "庭审直播暂停"
    assert page.is_visible("#overlay")
    screenshot(page, "watch-paused-zh-CN")
    page.click("[data-lang-switch] [data-lang='en']")
    page.wait_for_function(
        "() => document.getElementById('overlay-text').textContent === 'Broadcast paused'",
        timeout=5_000,
    )
    screenshot(page, "watch-paused-en")

    node.api("POST", f"/api/v1/sessions/{sid}/resume")
    resumed = time.monotonic()
    wait_state(page, "live", DELAY_S + SEGMENT_S + 8)
    print(f"live again {time.monotonic() - resumed:.1f} s after the resume")
    assert not page.is_visible("#overlay")
    plays_within(page, 12)
    # hls.js played through both discontinuities: it refused the playlist at each
    # ("discontinuity sequence mismatch") and the page restarted the stream, until the
    # playlist kept its preload hint across a change of run
    assert not [w for w in warnings if "levelParsingError" in w], warnings
    assert real_errors(errors) == []


def test_a_scheduled_trial_is_upcoming_and_the_filters_narrow_the_lists(
    chromium_browser: Any, node: Node, screenshot: Callable[[Any, str], Path]
) -> None:
    node.bg.run(
        define(
            node.platform,
            "cam-later",
            public=True,
            room="Courtroom 9",
            court="Luoyang Basic People's Court",
        )
    )
    at = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 86400 * 3))
    later = node.open("Courtroom 9", at=at, title="著作权侵权纠纷", delay=30)
    page, errors = browse(chromium_browser, "zh-CN")
    page.goto(node.url + "/")
    card = page.locator(f"[data-section=upcoming] li[data-session='{later['id']}']")
    card.wait_for(timeout=10_000)
    assert "预告" in card.inner_text() and "著作权侵权纠纷" in card.inner_text()
    assert page.inner_text("[data-section=upcoming] h2") == "庭审预告"
    screenshot(page, "portal-zh-CN")

    page.select_option("#court", "Luoyang Basic People's Court")
    assert page.locator("[data-section=live] li").count() == 0
    assert page.locator("[data-section=upcoming] li").count() == 1
    assert "court=Luoyang" in page.url
    page.fill("#date", time.strftime("%Y-%m-%d", time.localtime()))  # not its day
    page.dispatch_event("#date", "change")
    assert page.locator("[data-section=upcoming] li").count() == 0
    assert page.is_visible("[data-section=upcoming] [data-empty]")
    page.click("#clear")
    assert page.locator("[data-section=live] li").count() >= 1

    page.click("[data-lang-switch] [data-lang='en']")
    page.wait_for_function("() => document.documentElement.lang === 'en'", timeout=5_000)
    assert page.inner_text("[data-section=upcoming] h2") == "Upcoming"
    assert "Starts" in card.inner_text()
    phone = chromium_browser.new_context(
        locale="zh-CN", viewport={"width": 390, "height": 844}, is_mobile=True
    ).new_page()
    phone.goto(node.url + "/")
    phone.locator("[data-section=live] li").first.wait_for(timeout=10_000)
    width = phone.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390, width  # nothing wider than the phone
    screenshot(phone, "portal-phone")
    assert real_errors(errors) == []


def test_a_finished_trial_replays_without_its_cut(
    chromium_browser: Any, node: Node, screenshot: Callable[[Any, str], Path], tmp_path: Path
) -> None:
    delay = 4.0
    session = node.open("Courtroom 8", delay=delay, title="民间借贷纠纷")
    sid = session["id"]
    time.sleep(16)
    node.api("POST", f"/api/v1/sessions/{sid}/cut")
    time.sleep(10)
    events = node.api("POST", f"/api/v1/sessions/{sid}/resume")["events"]
    time.sleep(12)
    node.api("POST", f"/api/v1/sessions/{sid}/close")
    cut_at = next(e["at"] for e in events if e["event"] == "cut")
    resume_at = next(e["at"] for e in events if e["event"] == "broadcast-resume")
    hidden = (cut_at - delay, resume_at)

    deadline = time.monotonic() + 20
    while True:  # listed with its replay once the recording is closed
        item = node.get(f"/api/v1/public/sessions/{sid}").json()
        playlist = node.get(f"/public/{sid}/replay/index.m3u8")
        if item["hls"] and "max-age=60" in playlist.headers.get("cache-control", ""):
            break
        assert time.monotonic() < deadline, (item, playlist.status_code)
        time.sleep(0.5)
    assert item["status"] == "finished" and item["hls"] == f"/public/{sid}/replay/index.m3u8"
    segments = replay_segments(playlist.text)
    assert segments, playlist.text
    for start, duration, _ in segments:  # program date-times: nothing of the hidden stretch
        assert start + duration <= hidden[0] or start >= hidden[1], (start, hidden)
    recording = node.api("GET", f"/api/v1/sessions/{sid}")["recordings"][0]["id"]
    manifest = node.api("GET", f"/api/v1/recordings/{recording}")["manifest"]
    assert playlist.text.count("#EXT-X-DISCONTINUITY") == 1, (
        playlist.text,
        hidden,
        [(s["seq"], s["start"], s["duration"]) for s in manifest["segments"]],
        manifest.get("gaps"),
        manifest.get("state"),
    )

    # the media says the same: each segment decodes to as many frames as it claims
    init = node.get(f"/public/{sid}/replay/init.mp4")
    assert init.headers["cache-control"].endswith("immutable")
    decoded = 0.0
    for _, duration, name in segments:
        answer = node.get(f"/public/{sid}/replay/{name}")
        assert answer.status_code == 200 and "immutable" in answer.headers["cache-control"]
        frames = count_frames(init.content + answer.content)
        assert abs(frames - duration * FPS) <= 1, (name, frames, duration)
        decoded += frames / FPS
    whole = sum(float(s["duration"]) for s in manifest["segments"])
    print(
        f"replay {decoded:.1f} s of a {whole:.1f} s recording; hidden {hidden[1] - hidden[0]:.1f} s"
    )
    assert decoded <= whole - (hidden[1] - hidden[0]) + 0.1
    # a segment of the cut stretch is not served, by name or by guess
    names = {name for _, _, name in segments}
    refused = [f"seg-{n}.m4s" for n in range(40) if f"seg-{n}.m4s" not in names]
    assert all(node.get(f"/public/{sid}/replay/{n}").status_code == 404 for n in refused[:8])
    # the recording itself (the cut included) is evidence: not for the public
    evidence = node.get(f"/api/v1/recordings/{recording}/index.m3u8")
    assert evidence.status_code == 401, evidence.text
    assert node.get(f"/api/v1/recordings/{recording}/seg-0.m4s").status_code == 401
    probe = ffprobe_frames(f"{node.url}/public/{sid}/replay/index.m3u8")
    assert abs(probe - decoded * FPS) <= 2, (probe, decoded)

    page, errors = browse(chromium_browser, "en-US")
    page.goto(f"{node.url}/watch/{sid}")
    wait_state(page, "replay", 15)
    assert page.inner_text("#badge") == "Replay"
    assert_plays(page)
    screenshot(page, "watch-replay-en")
    page.goto(node.url + "/")
    card = page.locator(f"[data-section=finished] li[data-session='{sid}']")
    card.wait_for(timeout=10_000)
    assert "Replay" in card.inner_text()
    assert real_errors(errors) == []

    # past its public retention the replay is gone from the public; the evidence stays
    recorder = next(r for r in node.platform.roles if r.name == "recorder")
    recorder.config.recorder.public_replay_days = 0
    try:
        assert node.get(f"/public/{sid}/replay/index.m3u8").status_code == 404
        assert node.get(f"/public/{sid}/replay/{segments[0][2]}").status_code == 404
        assert node.get(f"/api/v1/public/sessions/{sid}").json()["hls"] is None
        kept = node.api("GET", f"/api/v1/recordings/{recording}/verify")
        assert kept["ok"], kept
    finally:
        recorder.config.recorder.public_replay_days = 30


def replay_segments(playlist: str) -> list[tuple[float, float, str]]:
    """(program date-time, duration, name) of every segment of a playlist."""
    out, at, duration = [], 0.0, 0.0
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            at = datetime.fromisoformat(line.split(":", 1)[1]).timestamp()
        elif line.startswith("#EXTINF:"):
            duration = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            out.append((at, duration, line))
    return out


def count_frames(data: bytes) -> int:
    import av

    with av.open(io.BytesIO(data)) as container:
        return sum(1 for _ in container.decode(container.streams.video[0]))


def ffprobe_frames(url: str) -> int:
    import subprocess

    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return int(out.stdout.split()[0])  # one line per program, each with the stream
