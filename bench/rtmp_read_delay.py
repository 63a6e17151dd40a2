"""What reading RTMP publishers in batches (SO_RCVLOWAT, media_server/rtmp/read_batching.py)
costs in delay and saves in reads: one ffmpeg publisher (-re, -c copy) into the RTMP server
running in this process on uvloop, with batching and without, on a constant-rate clip and
a variable-rate one.

A packet's delay is its arrival (when the server read it) minus its dts, less the
smallest such value of the run: how much later than the run's most punctual packet it was
read (ffmpeg -re sends by dts). Both modes share ffmpeg's pacing jitter; the difference
between them is what batching adds. The first 2 s are left out (the first ticks).

    .venv/bin/python bench/rtmp_read_delay.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from media_server.hub import Hub
from media_server.media import Packet, StreamStart
from media_server.rtmp import read_batching
from media_server.rtmp import server as rtmp_server
from media_server.rtmp import transport as rtmp_transport

SETTLE_S = 2.0
CLIPS = {
    # what bench/ingest_hls.py publishes: 2 Mbit/s held by the rate control
    "cbr-2M": ["-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M"],
    # quality-driven: keyframes several times the size of the frames between them
    "vbr-crf23": ["-crf", "23"],
}


@dataclass
class Run:
    clip: str
    batch_ms: float  # 0: no batching
    reads_per_s: float
    kbit_s: float
    video_ms: list[float]
    audio_ms: list[float]


def make_clip(path: Path, seconds: float, rate_args: list[str]) -> None:
    subprocess.run(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-bf",
            "0",
            "-g",
            "60",
            "-keyint_min",
            "60",
            "-sc_threshold",
            "0",
            *rate_args,
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-ac",
            "2",
            str(path),
        ],
        check=True,
        timeout=600,
    )


class _NoBatching:
    """Stands in for ReadBatching: plain reads."""

    def __init__(self, *_: object) -> None:
        pass

    def stop(self) -> None:
        pass


async def publish_once(clip: Path, name: str, batch_ms: float) -> Run:
    # the name the server calls when a publish starts
    setattr(rtmp_transport, "ReadBatching", _BATCHING if batch_ms else _NoBatching)  # noqa: B010
    read_batching.BATCH_S = batch_ms / 1000
    hub = Hub()
    sub = hub.subscribe("s", "bench", max_packets=100_000)
    server = rtmp_server.RtmpServer(hub, "127.0.0.1", 0)
    await server.start()
    got: list[tuple[bool, float]] = []  # (is video, arrival - dts)
    timescales: dict[int, int] = {}
    video: set[int] = set()

    async def collect() -> None:
        while True:
            item = await sub.get()
            if isinstance(item, StreamStart):
                timescales.update({t.index: t.timescale for t in item.tracks})
                video.update(t.index for t in item.tracks if t.is_video)
            elif isinstance(item, Packet):
                got.append((item.track in video, item.arrival - item.dts / timescales[item.track]))

    collector = asyncio.create_task(collect())
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        "-re",
        "-i",
        str(clip),
        "-c",
        "copy",
        "-f",
        "flv",
        f"rtmp://127.0.0.1:{server.port}/live/s",
    )
    await asyncio.sleep(SETTLE_S)
    reads, received, skip = server.stats.reads, server.stats.bytes_in, len(got)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await proc.wait()
    span = loop.time() - began
    reads, received = server.stats.reads - reads, server.stats.bytes_in - received
    collector.cancel()
    await server.stop()
    base = min(d for _, d in got[skip:])
    return Run(
        name,
        batch_ms,
        reads / span,
        received * 8 / span / 1000,
        [(d - base) * 1000 for v, d in got[skip:] if v],
        [(d - base) * 1000 for v, d in got[skip:] if not v],
    )


def quantiles(values: list[float]) -> str:
    cuts = statistics.quantiles(values, n=100)
    return f"{cuts[49]:6.1f} {cuts[94]:6.1f} {cuts[98]:6.1f} {max(values):6.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=2, help="rounds of every mode per clip")
    p.add_argument(
        "--batch-ms",
        default=f"{read_batching.BATCH_S * 1000:g},0",
        help="BATCH_S values to run, in ms, comma-separated (0: no batching)",
    )
    args = p.parse_args()
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, rate_args in CLIPS.items():
            clip = Path(tmp) / f"{name}.mp4"
            make_clip(clip, args.seconds + SETTLE_S, rate_args)
            for _ in range(args.rounds):
                for batch_ms in map(float, args.batch_ms.split(",")):
                    runs.append(uvloop.run(publish_once(clip, name, batch_ms)))
    print("delay in ms: p50 p95 p99 max, over the run's most punctual packet")
    print(
        f"{'clip':10s} {'batch ms':8s} {'reads/s':>7s} {'kbit/s':>7s}  "
        f"{'video p50    p95    p99    max':31s}  audio p50    p95    p99    max"
    )
    for r in runs:
        print(
            f"{r.clip:10s} {r.batch_ms:8g} {r.reads_per_s:7.1f} "
            f"{r.kbit_s:7.0f}  {quantiles(r.video_ms)}  {quantiles(r.audio_ms)}"
        )


_BATCHING = rtmp_transport.ReadBatching

if __name__ == "__main__":
    main()
