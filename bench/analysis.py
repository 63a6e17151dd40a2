"""Security analysis cost (issue 17): CPU per stream-second of media_server/analysis (decode,
scale, detectors, episodes) at 2 analysed pictures a second, so how many cameras one core
analyses; and what the analysis tap adds to the media path (the publisher's push).

    taskset -c 1 .venv/bin/python -m bench.analysis [--seconds 20]

Sources: testsrc2 (a busy, always-moving picture: every detector does its full work) with
sensor noise, H.264 (x264 veryfast, no B-frames), 25 fps: 1920x1080 at 4 Mbit/s (a
camera's main stream) with a keyframe a second or two, and 640x360 at 768 kbit/s (its
sub stream). Analysis CPU is the
worker's (its function run in this thread, time.thread_time); the media path's is the
publisher's thread with the worker running beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from media_server.analysis.detectors import Detectors
from media_server.analysis.episodes import Episodes
from media_server.analysis.sampler import Picture, Sampler
from media_server.analysis.service import StreamAnalysis
from media_server.analysis.settings import AnalysisSettings
from media_server.hub import Hub
from media_server.media import Packet, StreamStart, Track
from tests.mediafiles import load_clip


def make(path: Path, size: str, seconds: int, bitrate: str, gop: int = 25) -> Path:
    if not path.exists():
        subprocess.run(
            [
                "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                "-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25",
                "-vf", "noise=alls=5:allf=t", "-t", str(seconds),
                "-c:v", "libx264", "-preset", "veryfast", "-bf", "0", "-g", str(gop),
                "-keyint_min", str(gop), "-sc_threshold", "0", "-b:v", bitrate, str(path),
            ],
            check=True,
        )  # fmt: skip
    return path


def analysis_cpu(
    tracks: tuple[Track, ...], packets: list[Packet], settings: AnalysisSettings
) -> tuple[float, int]:
    """CPU seconds of the worker's whole job over the packets, and pictures analysed."""
    detectors, episodes = Detectors(settings), Episodes()

    def on_picture(picture: Picture) -> None:
        scores = detectors.scores(picture.grey)
        episodes.update(picture.media, picture.wall, scores)

    sampler = Sampler("bench", on_picture, lambda marker: None, settings.fps, settings.width)
    sampler.close()  # its thread ends: the worker's function runs here, timed
    handle = sampler._handle  # the worker's own step, timed here
    start = time.thread_time()
    handle(StreamStart(tracks, 1))
    for packet in packets:
        if packet.track == 0:
            handle(packet)
    return time.thread_time() - start, sampler.pictures


async def push_cpu(tracks: tuple[Track, ...], packets: list[Packet], analysed: bool) -> float:
    """The publisher's CPU seconds to push the packets into a hub stream (paced at 4x real
    time, so the worker keeps up as it would live), with or without the analysis tap."""
    hub = Hub()
    publication = hub.publish("cam", tracks, "bench")
    analysis: Any = None
    if analysed:
        settings = AnalysisSettings()
        analysis = StreamAnalysis(hub.stream("cam"), "", settings, None, None)  # type: ignore[arg-type]
    timescale = tracks[0].timescale
    cpu = 0.0
    began = time.monotonic()
    for packet in packets:
        due = began + packet.dts / timescale / 4
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        start = time.thread_time()
        publication.push(packet)
        cpu += time.thread_time() - start
    if analysis is not None:
        await analysis.close()
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=20)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # alerts with no writer behind them
    seconds = args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        clips = {
            "1080p25 4 Mbit/s, GOP 1 s": make(directory / "a.mp4", "1920x1080", seconds, "4M"),
            "1080p25 4 Mbit/s, GOP 0.48 s": make(
                directory / "b.mp4", "1920x1080", seconds, "4M", 12
            ),
            "360p25 768 kbit/s, GOP 1 s": make(directory / "c.mp4", "640x360", seconds, "768k"),
        }
        print("| source | settings | analysed pictures/s | CPU ms per stream-second | per core |")
        print("| --- | --- | --- | --- | --- |")
        for name, clip in clips.items():
            tracks, packets = load_clip(clip)
            for label, fps in (("fps 2 (the default)", 2.0), ("fps 0 (keyframes only)", 0.0)):
                cpu, pictures = analysis_cpu(tracks, packets, AnalysisSettings(fps=fps))
                per_s = cpu / seconds
                print(
                    f"| {name} | {label} | {pictures / seconds:.1f} | {per_s * 1000:.1f} "
                    f"| {1 / per_s:.0f} |"
                )
        tracks, packets = load_clip(clips["1080p25 4 Mbit/s, GOP 1 s"])
        off = asyncio.run(push_cpu(tracks, packets, analysed=False))
        on = asyncio.run(push_cpu(tracks, packets, analysed=True))
        print()
        print("| media path (publisher's push), 1080p25 | CPU ms per stream-second |")
        print("| --- | --- |")
        print(f"| analysis off | {off / seconds * 1000:.2f} |")
        print(f"| analysis on (tap: pre-roll ring + sampler queue) | {on / seconds * 1000:.2f} |")


if __name__ == "__main__":
    main()
