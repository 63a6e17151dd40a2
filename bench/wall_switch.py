"""Feed switch on a wall: dispatch (PUT /api/v1/walls/{name}) -> the tile of /wall/{name}
shows the new stream's first frame, in headless Chromium, 2 s GOP.

The whole path of a dispatch: the API writes the wall, Redis pub/sub tells the control
room's event hub, the websocket tells the page, the page's tile (static/js/tile.js) opens a
WHEP session and shows its first frame (requestVideoFrameCallback). Two ffmpeg publishers
(640x360, 30 fps, keyframe every 2 s) feed the hub over RTMP; the one-tile wall alternates
between them, each switch at a random moment within the GOP. Times are taken on one clock
(the machine's): the PUT's start, the tile's "connecting" (the wall message applied) and
its "live" (first frame shown).

    .venv/bin/python bench/wall_switch.py [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.control_room.conftest import PASSWORD, base_url, media, signed_in, start_platform
from tests.control_room.test_devices_page import Background
from tests.courtcast.test_platform import cancel, run, wait_live
from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS
from tests.mediafiles import make_clip

STREAMS = ("cam-a", "cam-b")
LOOP = ("ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i")
FLV = ("-c", "copy", "-f", "flv")
WATCH = """() => {
  window.marks = {};
  document.addEventListener("tile:state", (e) => {
    window.marks[e.detail.stream + ":" + e.detail.state] ??= Date.now();
  });
}"""
MARKS = "() => window.marks"
RESET = "() => { window.marks = {}; }"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    bg = Background()
    with tempfile.TemporaryDirectory() as tmp:
        node = bg.run(start_platform(Path(tmp) / "data"))
        admin = bg.run(signed_in(node, "ada", "admin"))
        clip = make_clip(Path(tmp), seconds=20, fps=30, gop=60, size=(640, 360))

        async def publish() -> list[asyncio.Task[Any]]:
            tasks = []
            for stream_id in STREAMS:
                made = await admin.post("/api/v1/streams", json={"id": stream_id})
                key = made.json()["key"]
                url = f"rtmp://127.0.0.1:{media(node).rtmp_port}/live/{stream_id}?key={key}"
                tasks.append(asyncio.create_task(run(*LOOP, str(clip), *FLV, url, timeout=3600)))
            for stream_id in STREAMS:
                await wait_live(node, stream_id)
            return tasks

        publishers = bg.run(publish())
        try:
            results = run_browser(bg, node, admin, args.runs)
        finally:
            for task in publishers:
                bg.run(cancel(task))
            bg.run(admin.aclose())
            bg.run(node.stop())
    bg.close()
    report(results)


def run_browser(bg: Background, node: Any, admin: Any, runs: int) -> list[dict[str, float]]:
    from playwright import sync_api

    def put(stream_id: str) -> float:
        started = time.time() * 1000
        answer = bg.run(
            admin.put("/api/v1/walls/bench", json={"layout": "1", "tiles": [stream_id]})
        )
        assert answer.status_code == 200, answer.text
        return started

    results = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(locale="en").new_page()
            whep: list[str] = []
            page.on("console", lambda m: whep.append(f"console {m.type}: {m.text}"))
            put(STREAMS[0])
            page.goto(f"{base_url(node)}/wall/bench")
            page.get_by_label("User").fill("ada")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_selector(
                f"[data-tile='0'][data-stream='{STREAMS[0]}'][data-state='live']"
            )
            page.evaluate(WATCH)
            for n in range(runs):
                stream_id = STREAMS[(n + 1) % 2]
                time.sleep(random.uniform(0.3, 2.3))  # anywhere within the 2 s GOP
                page.evaluate(RESET)
                started = put(stream_id)
                try:
                    page.wait_for_selector(
                        f"[data-tile='0'][data-stream='{stream_id}'][data-state='live']",
                        timeout=10_000,
                    )
                except sync_api.TimeoutError:
                    tile = page.evaluate("() => document.querySelector('[data-tile]').outerHTML")
                    print("\n".join(whep[-6:]))
                    raise SystemExit(f"switch {n} to {stream_id} never went live: {tile}") from None
                marks = page.evaluate(MARKS)
                applied = marks[f"{stream_id}:connecting"] - started
                shown = marks[f"{stream_id}:live"] - started
                results.append({"applied": applied, "shown": shown})
        finally:
            browser.close()
    return results


def report(results: list[dict[str, float]]) -> None:
    print(f"{len(results)} switches, 2 s GOP, 640x360 30 fps, one-tile wall")
    print("| from the PUT to | p50 ms | p95 ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    for what, label in (
        ("applied", "wall message applied (tile connecting)"),
        ("shown", "first frame shown (tile live)"),
    ):
        values = [r[what] for r in results]
        print(
            f"| {label} | {statistics.median(values):.0f} | {percentile(values, 95):.0f} "
            f"| {max(values):.0f} |"
        )


if __name__ == "__main__":
    main()
