"""Where the memory of LL-HLS outputs goes (issue 19): N streams of the ingest bench's clip
(720p 2 Mbit/s, 2 s GOP) published into a hub, not paced, each with an LL-HLS output;
then tracemalloc by line, and the window's bytes. Not paced is enough: the window and the
GOP cache hold what they hold in steady state. Results: bench/RESULTS.md.

    .venv/bin/python bench/hls_memory.py [--streams 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest_hls import make_clip
from media_server.hls.output import HlsOptions, HlsOutput
from media_server.hub import Hub
from tests.mediafiles import load_clip, looped, publish


async def measure(streams: int, clip: Path) -> None:
    tracks, packets = load_clip(clip)
    media = looped(tracks, packets, 10, 3)
    tracemalloc.start(3)
    hub = Hub()
    outputs = []
    for i in range(streams):
        pub = hub.publish(f"s{i}", tracks, "bench")
        outputs.append(HlsOutput(hub, f"s{i}", HlsOptions()))
        await publish(hub, f"s{i}", tracks, media, realtime=False, publication=pub, close=False)
    gc.collect()
    snap = tracemalloc.take_snapshot()
    total = sum(s.size for s in snap.statistics("filename"))
    print(f"Python allocations: {total / 1e6 / streams:.2f} MB per stream")
    for stat in snap.statistics("lineno")[:8]:
        print(f"{stat.size / 1e6 / streams:6.2f} MB per stream  {stat.traceback[0]}")
    seg = outputs[0].segmenter
    closed = sum(len(p.data) for s in seg.segments for p in s.parts)
    opened = sum(len(p.data) for p in (seg.open.parts if seg.open else []))
    gop = sum(len(p.data) for p in hub.stream("s0").gop())
    print(
        f"stream s0: {len(seg.segments)} closed segments {closed / 1e6:.2f} MB, open segment "
        f"{opened / 1e6:.2f} MB, GOP cache {gop / 1e6:.2f} MB (the clip's packets, shared)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hls-memory-") as tmp:
        clip = make_clip(Path(tmp) / "clip.mp4", 10)
        asyncio.run(measure(args.streams, clip))


if __name__ == "__main__":
    main()
