"""Feed switch: WHEP POST -> first decoded frame in headless Chromium, 2 s GOP.

A 720p30 H.264 clip (keyframe every 2 s) loops in the hub; one Chromium page opens a new
WHEP session N times, each at a random moment within the GOP, and records the time from
the POST to the first frame handed to the <video> (requestVideoFrameCallback). The viewer
starts from the hub's cached GOP, so this should not depend on where in the GOP it joins.

    .venv/bin/python bench/webrtc_switch.py [--runs 12]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.browser import CHROMIUM, CHROMIUM_ARGS
from tests.media_server.test_webrtc_browser import PAGE
from tests.media_server.test_webrtc_http import LiveServer

SWITCH = """async () => {
  const r = await whepPlay('/whep/switch');
  if (r.status !== 201) return {status: r.status, text: r.text};
  const t = Date.now();
  while (window.firstFrame === undefined && Date.now() - t < 5000)
    await new Promise(ok => setTimeout(ok, 5));
  const out = {status: r.status, answer: window.tAnswer - window.t0,
               frame: window.firstFrame - window.t0};
  await hangUp(r.location);
  window.firstFrame = undefined;
  return out;
}"""


def switch_times(server: LiveServer, runs: int) -> list[dict[str, Any]]:
    from playwright import sync_api

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            page = browser.new_page()
            page.goto(f"{server.url}/test/page")
            results = []
            for _ in range(runs):
                time.sleep(random.uniform(0.3, 2.3))  # anywhere within the 2 s GOP
                results.append(page.evaluate(SWITCH))
            return results
        finally:
            browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args()
    from tests.fixtures.clip import make_test_clip

    with tempfile.TemporaryDirectory() as tmp:
        clip = make_test_clip(
            Path(tmp) / "switch.mp4", seconds=6, width=1280, height=720, gop=60, bitrate="2000k"
        )
        server = LiveServer({"switch": clip}, page=PAGE).start()
        try:
            results = switch_times(server, args.runs)
        finally:
            server.stop()
    frames = sorted(r["frame"] for r in results if r.get("status") == 201)
    answers = sorted(r["answer"] for r in results if r.get("status") == 201)
    p95 = frames[max(0, round(0.95 * len(frames)) - 1)]
    print(
        json.dumps(
            {
                "runs": len(results),
                "ok": len(frames),
                "post_to_frame_ms": {
                    "p50": statistics.median(frames),
                    "p95": p95,
                    "min": frames[0],
                    "max": frames[-1],
                },
                "post_to_answer_ms_p50": statistics.median(answers),
                "all_ms": [round(f) for f in frames],
            }
        )
    )


if __name__ == "__main__":
    main()
