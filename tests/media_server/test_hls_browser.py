"""Headless Chromium plays the live stream with hls.js, in low-latency mode and without.

hls.js is the copy the pages use: fetched from the npm registry by `scripts/setup.sh venv`
(`make test` runs it) at the version pinned in core/web/package.json, never committed, and
served at /static/vendor/hls.min.js.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from core.web.assets import VENDOR_DIR
from media_server.hls.output import HlsOptions
from tests.media_server.test_hls_http import CLIP_S, LiveServer
from tests.mediafiles import make_clip

PLAYER = """<!doctype html>
<video id="v" muted playsinline></video>
<script src="/static/vendor/hls.min.js"></script>
<script>
  window.errors = [];
  const video = document.getElementById("v");
  const hls = new Hls({lowLatencyMode: LOW_LATENCY});
  hls.on(Hls.Events.ERROR, (e, d) => { if (d.fatal) window.errors.push(d.details); });
  hls.loadSource("/live/court-1/index.m3u8");
  hls.attachMedia(video);
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play());
  window.hls = hls;
</script>
"""


@pytest.fixture(scope="session")
def hlsjs() -> Path:
    """The vendored dist/hls.min.js of the pinned hls.js."""
    script = VENDOR_DIR / "hls.min.js"
    if not script.is_file():
        pytest.fail(f"{script} is missing: run scripts/setup.sh venv (make test does)")
    return script


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, hlsjs: Path) -> Iterator[LiveServer]:
    extra = APIRouter()

    @extra.get("/test/player-{mode}.html")
    async def player(mode: str) -> HTMLResponse:
        return HTMLResponse(PLAYER.replace("LOW_LATENCY", "true" if mode == "ll" else "false"))

    # B-frames as OBS sends them by default
    clip = make_clip(tmp_path_factory.mktemp("clips"), seconds=CLIP_S, fps=25, gop=25, bframes=2)
    server = LiveServer(clip, HlsOptions(), tmp_path_factory.mktemp("hls-window"), extra)
    server.publish_forever("court-1")
    try:
        server.wait_ready("court-1")
        yield server
    finally:
        server.close()


@pytest.mark.parametrize("mode", ["ll", "plain"])
def test_hlsjs_plays_the_stream(chromium_browser: Any, live: LiveServer, mode: str) -> None:
    requests: list[str] = []
    page = chromium_browser.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.goto(f"{live.url}/test/player-{mode}.html")
    page.wait_for_function("document.getElementById('v').currentTime > 0.5", timeout=20_000)
    first = page.evaluate("document.getElementById('v').currentTime")
    time.sleep(1.0)
    state = page.evaluate("""() => { const v = document.getElementById('v');
        return {width: v.videoWidth, height: v.videoHeight, time: v.currentTime,
                errors: window.errors, latency: window.hls.latency}; }""")
    assert state["errors"] == []
    assert (state["width"], state["height"]) == (320, 240)
    assert state["time"] > first + 0.5  # playing, not stalled
    blocking = [u for u in requests if "_HLS_msn=" in u]
    parts = [u for u in requests if "/part-" in u]
    if mode == "ll":
        assert blocking and parts
    else:  # whole segments only (hls.js still uses blocking reloads the server offers)
        assert not parts and any("/seg-" in u for u in requests)
    print(f"hls.js {mode}: latency {state['latency']:.2f} s behind the live edge")
