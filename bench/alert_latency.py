"""Alert latency (issue 17): event in the video -> the alert's start on the staff websocket.

Security cameras (synthetic scenes, tests/fixtures/scenes.py: 320x240, 10 fps, a keyframe a
second, sensor noise) are published by ffmpeg over RTMP at the media's pace (-re). In each, a
bright square crosses the view for 1 s every 8 s (motion's episode ends 5 s after the last
motion, so each square is an alert of its own); the cameras' squares are staggered. The default
analysis (whole frame, 2 analysed frames a second) runs in the media server; an operator is
signed in to /api/v1/events.

Times are taken on one clock (the machine's), to the websocket message `{"type": "alert",
"phase": "start"}` of that camera, from:
- the event's packet: the arrival in the hub of the video packet of the first frame showing
  the square (a tap on the stream), as the analysis tests measure; this includes waiting
  for the next analysed picture (2 a second: up to 0.5 s, here up to 0.3 s by the phases);
- the analysed picture's arrival (the alert's `start`): the pipeline alone (decode, detect,
  snapshot, Redis, the event hub, the websocket).
(ffmpeg -re sends its first packets ahead of the media's pace, so the first packet's
arrival + the scene time is no better a clock than the packet's own arrival.)

    .venv/bin/python bench/alert_latency.py [--cameras 6] [--seconds 56]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import websockets

from media_server.media import Item, Packet
from media_server.streams import StreamClass
from media_server.tap import tap
from tests.control_room.conftest import base_url, media, signed_in, start_platform
from tests.courtcast.test_platform import cancel, define, run
from tests.fixtures.scenes import Scene, Square, make_scene

PERIOD_S = 8.0
FIRST_S = 3.0
RTMP_MS = 1000
SEND = ("ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-i")
FLV = ("-c", "copy", "-f", "flv")  # RTMP timestamps are milliseconds


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def events_of(camera: int, seconds: float) -> list[float]:
    """The scene times (s) at which this camera's squares appear."""
    times, t = [], FIRST_S + (camera % 8) * 0.37  # staggered, at any phase of the sampling
    while t + 1 < seconds - 1:
        times.append(round(t, 2))
        t += PERIOD_S
    return times


class Arrivals:
    """Arrival wall-clock of each video packet of one stream, by its media time."""

    def __init__(self) -> None:
        self.first_pts: int | None = None
        self.by_time: list[tuple[float, float]] = []  # (media s from the first, arrival)

    def on_item(self, item: Item) -> None:
        if not isinstance(item, Packet) or item.track != 0:
            return
        if self.first_pts is None:
            self.first_pts = item.pts
        self.by_time.append(((item.pts - self.first_pts) / RTMP_MS, item.arrival))

    def packet_of(self, t: float) -> float | None:
        """Arrival of the first packet at or after media time t."""
        return next((arrival for at, arrival in self.by_time if at >= t - 1e-3), None)


async def bench(cameras: int, seconds: float, work: Path) -> None:
    node = await start_platform(work / "data")
    try:
        await measure(node, cameras, seconds, work)
    finally:
        await node.stop()


async def measure(node: Any, cameras: int, seconds: float, work: Path) -> None:
    operator = await signed_in(node, "op", "operator")
    ids = [f"sec-{n}" for n in range(cameras)]
    keys, clips, arrivals = {}, {}, {}
    for n, sid in enumerate(ids):
        keys[sid] = await define(node, sid, stream_class=StreamClass.security)
        squares = [Square(t, t + 1, (0.1, 0.9), 0.5) for t in events_of(n, seconds)]
        clips[sid] = make_scene(work / f"{sid}.mp4", seconds, Scene(squares=squares, seed=n))
        arrivals[sid] = Arrivals()
        tap(media(node).hub.stream(sid), "bench-clock", arrivals[sid].on_item)
    told: list[tuple[str, float, dict[str, Any]]] = []
    url = base_url(node).replace("http://", "ws://") + "/api/v1/events"
    cookie = {"Cookie": f"cc_session={operator.cookies['cc_session']}"}
    async with websockets.connect(url, additional_headers=cookie) as ws:
        listener = asyncio.create_task(listen(ws, told))
        port = media(node).rtmp_port
        pushes = [
            asyncio.create_task(
                run(
                    *SEND,
                    str(clips[s]),
                    *FLV,
                    f"rtmp://127.0.0.1:{port}/live/{s}?key={keys[s]}",
                    timeout=seconds + 30,
                )
            )
            for s in ids
        ]
        await asyncio.gather(*pushes, return_exceptions=True)
        await asyncio.sleep(2)
        await cancel(listener)
    await operator.aclose()
    report(cameras, seconds, ids, arrivals, told)


async def listen(ws: Any, told: list[tuple[str, float, dict[str, Any]]]) -> None:
    async for raw in ws:
        message = json.loads(raw)
        if message.get("type") == "alert" and message.get("phase") == "start":
            told.append((message["alert"]["stream"], time.time(), message["alert"]))


def report(
    cameras: int,
    seconds: float,
    ids: list[str],
    arrivals: dict[str, Arrivals],
    told: list[tuple[str, float, dict[str, Any]]],
) -> None:
    from_packet, from_picture, missed, extra = [], [], 0, 0
    for n, sid in enumerate(ids):
        mine = sorted((t, a) for s, t, a in told if s == sid and a["type"] == "motion")
        events = events_of(n, seconds)
        extra += max(0, len(mine) - len(events))
        for event in events:
            packet = arrivals[sid].packet_of(event)
            near = [(t, a) for t, a in mine if packet and abs(a["start"] - packet) < 1.5]
            if packet is None or not near:
                missed += 1
                continue
            told_at, alert = near[0]
            from_packet.append((told_at - packet) * 1000)
            from_picture.append((told_at - alert["start"]) * 1000)
    others = sorted({a["type"] for _, _, a in told if a["type"] != "motion"})
    print(
        f"{cameras} cameras x {seconds:.0f} s, {len(from_packet)} events matched, "
        f"{missed} missed, {extra} extra motion alerts, other types: {others or 'none'}"
    )
    print("| event -> alert start on the websocket, from | p50 ms | p95 ms | max ms |")
    print("| --- | ---: | ---: | ---: |")
    picture = "the analysed picture's arrival (the alert's start)"
    for label, values in (("the event's packet arrival", from_packet), (picture, from_picture)):
        if values:
            print(
                f"| {label} | {statistics.median(values):.0f} | {percentile(values, 95):.0f} "
                f"| {max(values):.0f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=56.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        asyncio.run(bench(args.cameras, args.seconds, Path(work)))


if __name__ == "__main__":
    main()
