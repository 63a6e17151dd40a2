"""Recorder bench: CPU per stream-second, streams per core, segment closed -> durable.

    .venv/bin/python -m bench.recorder [--streams 1,10,50] [--seconds 20]
        [--store null|disk|s3] [--segment-s 4]

Two runs per stream count, in this process:
- CPU: a 640x360 25 fps H.264 + AAC clip is pushed into N hub streams as fast as the loop
  allows, once with nobody recording (the publish cost) and once with a Recording per
  stream; the difference in process CPU time (threads included: the object store's) over
  the media seconds recorded is the recorder's CPU per stream-second, and 1 s divided by it
  the streams one core could record.
  With --store null the objects go nowhere: the recorder's own work (segmenting,
  spooling, hashing, the manifest), without a store client's (the disk store fsyncs
  every object; the S3 client signs and sends it).
- Latency: N streams in real time for --seconds; for every segment, the time from its
  close to its object being stored (p50 / p99), on the chosen object store (s3: a
  SeaweedFS started here, as the tests do).

Segments are --segment-s long (the recorder's default, 4 s, unless given; the clip has a
1 s GOP). Part of the cost is per segment (a file in the spool, a SHA-256, two PUTs: the
segment and the manifest checkpoint), so 2 s segments cost more per stream-second. All N
streams start together, so their segments close at the same moments: the worst case for
the latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from media_server.hub import Hub
from media_server.media import Packet, Track
from recorder.index import RecordingIndex
from recorder.manifest import Manifest
from recorder.recording import RecorderOptions, Recording
from recorder.signing import Signer
from storage.objects import ObjectInfo, ObjectNotFound, ObjectStore, open_object_store
from storage.redis_server import EmbeddedRedis
from storage.state import StateStore
from tests.mediafiles import load_clip, looped, make_clip, publish

CLIP_S = 10


class _TmpFactory:
    def __init__(self, root: Path) -> None:
        self.root = root

    def mktemp(self, name: str) -> Path:
        path = self.root / name
        path.mkdir()
        return path


def start_s3(root: Path) -> tuple[Any, Any]:
    """A SeaweedFS like the tests' (the fixture's generator, driven by hand)."""
    from tests.fixtures import s3

    fixture = s3.s3_server._get_wrapped_function()  # type: ignore[attr-defined]
    gen = fixture(_TmpFactory(root))
    return next(gen), gen


class NullStore(ObjectStore):
    """Keeps only sizes: the recorder's own CPU, without any store client's."""

    backend = "null"

    @property
    def label(self) -> str:
        return "null"

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}

    async def put(self, key: str, data: Any, content_type: str = "") -> ObjectInfo:
        self.sizes[key] = len(data)
        return ObjectInfo(key, len(data), None, datetime.now(UTC), content_type)

    async def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        raise ObjectNotFound(key)

    async def stream(
        self, key: str, start: int | None = None, end: int | None = None
    ) -> AsyncIterator[bytes]:
        raise ObjectNotFound(key)
        yield b""  # pragma: no cover - makes this an async generator

    async def stat(self, key: str) -> ObjectInfo:
        raise ObjectNotFound(key)

    async def list(self, prefix: str = "") -> list[ObjectInfo]:
        return []

    async def delete(self, key: str) -> None:
        self.sizes.pop(key, None)

    async def signed_url(self, key: str, expires_s: int = 3600) -> str:
        return ""

    async def health(self, probe: bool = False) -> dict[str, Any]:
        return {"state": "ok", "error": None}


def make_store(kind: str, root: Path, s3_server: Any) -> ObjectStore:
    if kind == "null":
        return NullStore()
    if kind == "disk":
        return open_object_store(
            "disk", root=root / "objects", signing_secret=secrets.token_bytes(32)
        )
    return open_object_store(
        "s3",
        endpoint=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        bucket=f"bench-{secrets.token_hex(6)}",
    )


async def run_streams(
    n: int,
    tracks: tuple[Track, ...],
    packets: list[Packet],
    realtime: bool,
    record: bool,
    store: ObjectStore,
    index: RecordingIndex,
    signer: Signer,
    spool: Path,
    segment_s: float = RecorderOptions.segment_target_s,
) -> tuple[float, list[Recording]]:
    """Publish into n streams (recorded or not); returns process CPU seconds used."""
    hub = Hub()
    recordings: list[Recording] = []
    options = RecorderOptions(segment_target_s=segment_s, spool_dir=spool)
    pubs = [hub.publish(f"s{i}", tracks, "bench") for i in range(n)]
    cpu = time.process_time()
    if record:
        for i in range(n):
            manifest = Manifest(
                recording_id=f"bench-{secrets.token_hex(4)}-{i}",
                stream=f"s{i}",
                opened_at=time.time(),
            )
            recordings.append(Recording(hub, store, index, signer, manifest, options))
            await recordings[-1].start()
    await asyncio.gather(
        *(
            publish(
                hub, f"s{i}", tracks, packets, realtime=realtime, publication=pubs[i], close=False
            )
            for i in range(n)
        )
    )
    await asyncio.gather(*(r.close(timeout_s=120) for r in recordings))
    return time.process_time() - cpu, recordings


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def bench(args: argparse.Namespace, root: Path, s3_server: Any) -> None:
    redis = EmbeddedRedis(root / "redis")
    await redis.start()
    state = StateStore(redis.url)
    await state.connect()
    index, signer = RecordingIndex(state), Signer.for_data_dir(root / "data")
    clip = make_clip(root, seconds=CLIP_S, fps=25, gop=25, size=(640, 360))
    tracks, one = load_clip(clip)
    try:
        store = make_store(args.store, root, s3_server)
    except BaseException:
        await state.close()
        await redis.stop()
        raise
    print(
        f"store: {args.store}; {args.segment_s:g} s segments; clip 640x360 25 fps H.264 "
        f"+ AAC, {sum(len(p.data) for p in one) * 8 / CLIP_S / 1000:.0f} kbit/s; "
        f"load average {load()} (other work on this machine shares its cores)"
    )
    print(
        f"{'streams':>7} {'media s':>8} {'cpu ms/stream-s':>16} {'streams/core':>13} "
        f"{'durable p50 ms':>15} {'p99 ms':>8} {'segments':>9}"
    )
    try:
        for n in args.streams:
            fast = looped(tracks, one, CLIP_S, max(1, args.cpu_seconds // CLIP_S))
            media_s = n * len(fast) and n * CLIP_S * max(1, args.cpu_seconds // CLIP_S)
            common = (store, index, signer, root / "spool", args.segment_s)
            base, _ = await run_streams(n, tracks, fast, False, False, *common)
            used, _ = await run_streams(n, tracks, fast, False, True, *common)
            per = max(0.0, used - base) / media_s
            live = looped(tracks, one, CLIP_S, max(1, args.seconds // CLIP_S))
            _, recs = await run_streams(n, tracks, live, True, True, *common)
            lat = [x for r in recs for x in r.upload_latencies]
            print(
                f"{n:>7} {media_s:>8} {per * 1000:>16.3f} {1 / per if per else 0:>13.0f} "
                f"{statistics.median(lat) * 1000:>15.1f} {pct(lat, 0.99) * 1000:>8.1f} "
                f"{len(lat):>9}"
            )
        print(f"load average at the end {load()}")
    finally:
        await store.close()
        await state.close()
        await redis.stop()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--streams", default="1,10,50", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--seconds", type=int, default=20, help="real-time run length")
    parser.add_argument(
        "--cpu-seconds", type=int, default=60, help="media seconds per stream in the CPU run"
    )
    parser.add_argument(
        "--store",
        choices=["null", "disk", "s3"],
        default="disk",
        help="null: the recorder's own CPU, no store client",
    )
    parser.add_argument(
        "--segment-s",
        type=float,
        default=RecorderOptions.segment_target_s,
        help="segment target (the recorder's default unless given)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="courtcast-bench-") as tmp:
        root = Path(tmp)
        server, gen = start_s3(root) if args.store == "s3" else (None, None)
        try:
            asyncio.run(bench(args, root, server))
        finally:
            if gen is not None:
                for _ in gen:  # runs the fixture's teardown (stops weed)
                    pass


if __name__ == "__main__":
    main()
