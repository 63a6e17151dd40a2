"""CPU of the WebRTC wall rendition (media_server/webrtc/rendition.py): 1080p30 H.265 (or
H.264 with B-frames) decoded, scaled to 640x360 and encoded H.264 constrained baseline.

Two measures, both on 10 s 1080p30 test clips made here with the ffmpeg CLI (testsrc2, a
moving picture; 4 Mbit/s; H.265 x265 ultrafast bframes=0 as cameras send it, H.264 x264
veryfast with its default B-frames as OBS sends it):

- offline: the clip fed to one Downscaler as fast as it goes; the worker's thread CPU
  (decode + scale + encode, all on that one thread) per second of video, and the speed.
- live: N streams played into a hub in real time, each with a rendition as its first
  WHEP viewer would start it; the process's CPU per stream-second over a window (hub,
  event loop and thread hand-offs included), against the same streams with no rendition,
  and the frames each rendition put out per second (30 if it keeps up).

    .venv/bin/python bench/rendition.py [--codec h265|h264] [--streams 1 2 3] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from media_server.hub import Hub
from media_server.webrtc.downscale import Downscaler
from media_server.webrtc.rendition import Renditions
from tests.fixtures.clip import Clip, ClipPublisher, load_clip

FPS = 30
CLIP_S = 10
ENCODERS = {
    "h265": ["-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1",
             "-x265-params", f"log-level=error:bframes=0:keyint={2 * FPS}"],
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-g", str(2 * FPS)],
}  # fmt: skip


def make_1080p(directory: Path, codec: str) -> Path:
    path = directory / f"{codec}-1080p30.mp4"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc2=size=1920x1080:rate={FPS}", "-t", str(CLIP_S), "-pix_fmt", "yuv420p",
         *ENCODERS[codec], "-b:v", "4M", str(path)],
        check=True, timeout=600,
    )  # fmt: skip
    return path


def offline(clip: Clip) -> None:
    scaler = Downscaler(clip.tracks[0], FPS)
    started = time.monotonic()
    out = sum(len(scaler.feed(p)) for p in clip.packets if p.track == 0)
    wall = time.monotonic() - started
    per_s = scaler.cpu_s / CLIP_S
    print(
        f"offline: {scaler.frames_in} frames in, {out} out at {scaler.size[0]}x{scaler.size[1]}"
        f" in {wall:.2f} s ({scaler.frames_in / wall:.0f} fps); worker CPU "
        f"{scaler.cpu_s * 1000 / scaler.frames_in:.1f} ms per frame, {per_s * 1000:.0f} ms per "
        f"stream-second: {1 / per_s:.1f} streams per core"
    )


async def live(clip: Clip, streams: int, seconds: float, render: bool) -> tuple[float, float]:
    """(CPU seconds per stream-second, output frames per second per rendition)."""
    hub = Hub()
    ids = [f"cam{i}" for i in range(streams)]
    tasks = [asyncio.create_task(ClipPublisher(hub, sid, clip).run()) for sid in ids]
    renditions = Renditions(hub)
    egresses = [renditions.acquire(sid) for sid in ids] if render else []
    await asyncio.sleep(2.0)  # past the start (the cached GOP caught up)
    frames0 = {sid: r.frames_out for sid, r in renditions.running.items()}
    cpu0, wall0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    fps = [(r.frames_out - frames0[sid]) / wall for sid, r in renditions.running.items()]
    for egress in egresses:
        renditions.release(egress)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return cpu / wall / streams, min(fps) if fps else 0.0


async def live_table(clip: Clip, counts: list[int], seconds: float) -> None:
    for n in counts:
        base, _ = await live(clip, n, seconds, render=False)
        with_r, fps = await live(clip, n, seconds, render=True)
        print(
            f"live: {n} stream(s): {with_r * 1000:.0f} ms CPU per stream-second with a "
            f"rendition, {base * 1000:.0f} without: rendition {(with_r - base) * 1000:.0f} ms "
            f"({1 / (with_r - base):.1f} per core); slowest rendition {fps:.1f} fps out"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codec", choices=sorted(ENCODERS), default="h265")
    parser.add_argument("--streams", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = load_clip(make_1080p(Path(tmp), args.codec))
    print(f"source: 1080p{FPS} {args.codec}, {len(clip.packets)} packets")
    offline(clip)
    asyncio.run(live_table(clip, args.streams, args.seconds))


if __name__ == "__main__":
    main()
