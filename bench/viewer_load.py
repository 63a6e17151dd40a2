"""Many LL-HLS viewers of one playlist, for bench/public_viewers.py: one process, one
uvloop, one keep-alive HTTP/1.1 connection per viewer (a raw asyncio Protocol: the
client must cost less than the server it loads).

- ll: what an LL-HLS player does: a blocking playlist request for the hinted part
  (_HLS_msn/_HLS_part of the preload hint), then that part; again.
- poll: for a plain file server (nginx serving the same files): the playlist every part
  duration (no blocking: files cannot wait), then the newest part if it is new. The
  same two requests per part per viewer.

    python bench/viewer_load.py '{"port": 8080, "base": "/public/s-1/", "n": 1000,
                                  "mode": "ll", "seconds": 15, "warmup_s": 5}'

Prints one JSON line: requests and errors in the window, parts per viewer-second,
part fetch times, playlist fetch times and, for blocking requests, how long after the
first viewer each viewer got the same playlist (p50/p99, ms).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import resource
import sys
import time
from typing import Any

HINT_RE = re.compile(rb'PRELOAD-HINT:TYPE=PART,URI="part-(\d+)\.(\d+)')
PART_RE = re.compile(rb'#EXT-X-PART:[^\n]*URI="part-(\d+)\.(\d+)\.m4s')
PART_S = 0.5


class Conn(asyncio.Protocol):
    """One keep-alive connection; one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.need = -1  # bytes of the whole response, once the headers are in
        self.body_at = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower() + b"\r\n"
            at, length = head.find(b"content-length:"), 0
            if at >= 0:
                length = int(head[at + 15 : head.find(b"\r\n", at)])
            self.body_at, self.need = end + 4, end + 4 + length
        if len(self.buf) >= self.need:
            status = int(self.buf[9:12])
            body = bytes(self.buf[self.body_at : self.need])
            del self.buf[: self.need]
            self.need = -1
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result((status, body))

    async def get(self, host: str, path: str) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        return await self.waiter


class Stats:
    def __init__(self) -> None:
        self.counting = False
        self.requests = 0
        self.errors = 0
        self.parts = 0
        self.part_ms: list[float] = []
        self.playlist_ms: list[float] = []
        self.answered: dict[tuple[int, int], list[float]] = {}  # blocking: when each got it

    def request(self, status: int, ms: float, into: list[float]) -> None:
        if self.counting:
            self.requests += 1
            self.errors += status != 200
            into.append(ms)


class Viewer:
    def __init__(self, spec: dict[str, Any], stats: Stats) -> None:
        self.host, self.port = spec.get("host", "127.0.0.1"), spec["port"]
        self.base: str = spec["base"]
        self.stats = stats
        self.conn: Conn | None = None

    async def get(self, path: str, into: list[float]) -> tuple[int, bytes]:
        if self.conn is None or self.conn.transport is None:
            loop = asyncio.get_running_loop()
            _, self.conn = await loop.create_connection(Conn, self.host, self.port)
        start = time.perf_counter()
        status, body = await self.conn.get(self.host, self.base + path)
        self.stats.request(status, (time.perf_counter() - start) * 1e3, into)
        return status, body

    async def ll(self) -> None:
        hint = None
        while True:
            if hint is None:
                _, body = await self.get("index.m3u8", self.stats.playlist_ms)
                hint = HINT_RE.search(body)
                if hint is None:
                    await asyncio.sleep(PART_S)
                    continue
            msn, index = int(hint[1]), int(hint[2])
            query = f"index.m3u8?_HLS_msn={msn}&_HLS_part={index}"
            status, body = await self.get(query, self.stats.playlist_ms)
            if self.stats.counting and status == 200:
                self.stats.answered.setdefault((msn, index), []).append(time.monotonic())
            hint = HINT_RE.search(body) if status == 200 else None
            if status == 200:
                await self.part(msn, index)

    async def poll(self) -> None:
        last = (0, 0)
        while True:
            due = time.monotonic() + PART_S
            status, body = await self.get("index.m3u8", self.stats.playlist_ms)
            parts = PART_RE.findall(body) if status == 200 else []
            if parts:
                newest = (int(parts[-1][0]), int(parts[-1][1]))
                if newest > last:
                    last = newest
                    await self.part(*newest)
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def part(self, msn: int, index: int) -> None:
        status, _ = await self.get(f"part-{msn}.{index}.m4s", self.stats.part_ms)
        if self.stats.counting and status == 200:
            self.stats.parts += 1

    async def run(self, mode: str, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            try:
                await (self.ll() if mode == "ll" else self.poll())
            except (ConnectionError, OSError, ValueError):
                self.stats.errors += self.stats.counting
                self.conn = None
                await asyncio.sleep(0.5)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


async def main(spec: dict[str, Any]) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stats = Stats()
    n, ramp = spec["n"], spec.get("ramp_s", 3.0)
    tasks = [
        asyncio.create_task(
            Viewer(spec, stats).run(spec["mode"], ramp * i / n + random.random() * PART_S)
        )
        for i in range(n)
    ]
    await asyncio.sleep(ramp + spec.get("warmup_s", 4.0))
    stats.counting = True
    started = time.monotonic()
    print("window", flush=True)  # the driver reads server CPU from here
    await asyncio.sleep(spec["seconds"])
    stats.counting = False
    span = time.monotonic() - started
    spread = [(t - min(times)) * 1e3 for times in stats.answered.values() for t in times]
    print(
        json.dumps(
            {
                "n": n,
                "mode": spec["mode"],
                "span_s": round(span, 2),
                "requests": stats.requests,
                "errors": stats.errors,
                "parts_per_viewer_s": round(stats.parts / n / span, 3),
                "part_ms": [pct(stats.part_ms, 0.5), pct(stats.part_ms, 0.99)],
                "playlist_ms": [pct(stats.playlist_ms, 0.5), pct(stats.playlist_ms, 0.99)],
                "spread_ms": [pct(spread, 0.5), pct(spread, 0.99)],
            }
        ),
        flush=True,
    )
    for task in tasks:
        task.cancel()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(json.loads(sys.argv[1])))
