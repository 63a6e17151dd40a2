"""A real player for bench/ingest_hls.py: hls.js (defaults, so low-latency mode on) in
headless Chromium, one page per server, sampled once a second.

Each sample says which part or segment is at the playhead (its URI) and how far into it
the playhead is; the bench turns that into the wall-clock at which the frame on screen
left the publisher. The page is served from each server's own origin by Playwright
(route.fulfill), so no CORS is involved and nothing is added to the servers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
HLSJS_VERSION = "1.7.4"  # the version tests/media_server/test_hls_browser.py uses
CACHE = Path.home() / ".cache/courtcast-tests"

PAGE = """<!doctype html>
<video id="v" muted playsinline></video>
<script src="/bench-hls.min.js"></script>
<script>
  const video = document.getElementById("v");
  const [config, source] = JSON.parse(decodeURIComponent(location.hash.slice(1)));
  const hls = new Hls(config);
  window.errors = [];
  window.stalls = 0;
  hls.on(Hls.Events.ERROR, (e, d) => {
    window.errors.push((d.fatal ? "fatal " : "") + d.details);
  });
  video.addEventListener("waiting", () => { window.stalls += 1; });
  hls.loadSource(source);
  hls.attachMedia(video);
  hls.on(Hls.Events.MANIFEST_PARSED, () => video.play());
  const ahead = () => {
    const b = video.buffered;
    return b.length ? b.end(b.length - 1) - video.currentTime : 0;
  };
  window.sample = () => {
    const f = hls.streamController.currentFrag;
    // the newest LL-HLS segment is still open: its fragment has no URI yet, only an sn
    const uri = f ? (f.relurl || (f.sn !== undefined ? "seg-" + f.sn + ".m4s" : null)) : null;
    return {now: Date.now() / 1000, uri: uri,
            into: f ? video.currentTime - f.start : null,
            frames: video.getVideoPlaybackQuality().totalVideoFrames, stalls: window.stalls,
            rate: video.playbackRate, buffer: ahead(),
            hls_latency: hls.latency, target: hls.targetLatency, errors: window.errors};
  };
</script>
"""


def hlsjs() -> Path:
    """dist/hls.min.js of the pinned hls.js: the tests' cache, else `npm pack` once."""
    script = CACHE / f"hls.js-{HLSJS_VERSION}.min.js"
    if script.exists():
        return script
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to fetch hls.js")
    CACHE.mkdir(parents=True, exist_ok=True)
    tarball = CACHE / f"hls.js-{HLSJS_VERSION}.tgz"
    if not tarball.exists():
        subprocess.run(
            [npm, "pack", f"hls.js@{HLSJS_VERSION}", "--pack-destination", str(CACHE), "--silent"],
            check=True,
            timeout=120,
            capture_output=True,
        )
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("package/dist/hls.min.js")
        assert member is not None
        script.write_bytes(member.read())
    return script


# hls.js as it comes, and with catch-up: up to 1.5x speed while behind its target latency
PLAYERS = {"defaults": {}, "catch-up": {"maxLiveSyncPlaybackRate": 1.5}}


def play(
    urls: dict[str, str], warm_s: float, seconds: int
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """Play each URL (http://127.0.0.1:PORT/path.m3u8) with each of PLAYERS at once for
    warm_s + seconds: {player: {url key: the samples of the last `seconds`}}."""
    from playwright.sync_api import sync_playwright

    script = hlsjs()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            pages = {
                (player, key): _open(browser, url, config, script)
                for player, config in PLAYERS.items()
                for key, url in urls.items()
            }
            time.sleep(warm_s)
            samples: dict[str, dict[str, list[dict[str, Any]]]] = {p: {} for p in PLAYERS}
            for _ in range(seconds):
                for (player, key), page in pages.items():
                    samples[player].setdefault(key, []).append(page.evaluate("sample()"))
                time.sleep(1.0)
            return samples
        finally:
            browser.close()


def _open(browser: Any, url: str, config: dict[str, Any], script: Path) -> Any:
    origin, path = url.split("/", 3)[:3], "/" + url.split("/", 3)[3]
    base = "/".join(origin)
    page = browser.new_page()
    page.route(
        base + "/bench-player.html",
        lambda route: route.fulfill(body=PAGE, content_type="text/html"),
    )
    page.route(
        base + "/bench-hls.min.js",
        lambda route: route.fulfill(path=str(script), content_type="text/javascript"),
    )
    page.goto(f"{base}/bench-player.html#" + quote(json.dumps([config, path])))
    return page
