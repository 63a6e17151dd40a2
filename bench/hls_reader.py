"""HLS readers for bench/ingest_hls.py, run in their own process (their CPU is not the
server's). One asyncio loop, one keep-alive HTTP/1.1 connection per stream.

- ll: an LL-HLS player's request pattern: blocking playlist reloads (_HLS_msn/_HLS_part
  of the preload hint), then every new part. For courtcast.
- poll: a plain HLS player: reload the playlist every poll_s, fetch every new segment.
  For nginx-rtmp.

Streams named in "latency" record, for every part/segment they receive, the wall-clock
of its arrival and the media time of its first video sample (fMP4 tfdt, MPEG-TS PTS).

    python bench/hls_reader.py '{"port": 8080, "kind": "ll", "streams": ["s0"], ...}'

stdin commands: "mark" (reset counters and records), "report" (print them as one JSON
line); EOF ends the process.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

PART_RE = re.compile(r'URI="part-(\d+)\.(\d+)\.m4s[^"]*"')
MAP_RE = re.compile(r'#EXT-X-MAP:URI="([^"]+)"')


# -- a minimal HTTP/1.1 client (keep-alive, Content-Length bodies) --


class Http:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._rw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, path: str) -> tuple[int, bytes]:
        for attempt in (0, 1):
            try:
                return await self._get(path)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _get(self, path: str) -> tuple[int, bytes]:
        if self._rw is None:
            self._rw = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._rw
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        status = int((await reader.readline()).split()[1])
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and "close" in value.lower():
                close = True
        body = await reader.readexactly(length)
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self._rw is not None:
            self._rw[1].close()
            self._rw = None


# -- media time of a part or segment --


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISO-BMFF boxes in data[start:end]."""
    end = len(data) if end is None else end
    out = []
    while start + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, start)
        head = 8
        if size == 1:
            size, head = struct.unpack_from(">Q", data, start + 8)[0], 16
        if size < head:
            break
        out.append((kind, start + head, start + size))
        start += size
    return out


def child(data: bytes, box: tuple[bytes, int, int], kind: bytes) -> tuple[bytes, int, int] | None:
    return next((b for b in boxes(data, box[1], box[2]) if b[0] == kind), None)


def video_track(init: bytes) -> tuple[int, int]:
    """(track_ID, timescale) of the video trak of an fMP4 init segment."""
    moov = next(b for b in boxes(init) if b[0] == b"moov")
    for trak in (b for b in boxes(init, moov[1], moov[2]) if b[0] == b"trak"):
        tkhd, mdia = child(init, trak, b"tkhd"), child(init, trak, b"mdia")
        assert tkhd is not None and mdia is not None
        hdlr, mdhd = child(init, mdia, b"hdlr"), child(init, mdia, b"mdhd")
        assert hdlr is not None and mdhd is not None
        if init[hdlr[1] + 8 : hdlr[1] + 12] != b"vide":
            continue
        v1 = init[tkhd[1]] == 1
        track_id = struct.unpack_from(">I", init, tkhd[1] + (20 if v1 else 12))[0]
        ts_at = mdhd[1] + (20 if init[mdhd[1]] == 1 else 12)
        return track_id, struct.unpack_from(">I", init, ts_at)[0]
    raise ValueError("no video track in the init segment")


def fmp4_video_start(data: bytes, track_id: int, timescale: int) -> float | None:
    """Decode time (s) of the first video sample of a part: its tfdt."""
    for moof in (b for b in boxes(data) if b[0] == b"moof"):
        for traf in (b for b in boxes(data, moof[1], moof[2]) if b[0] == b"traf"):
            tfhd, tfdt = child(data, traf, b"tfhd"), child(data, traf, b"tfdt")
            if tfhd is None or tfdt is None:
                continue
            if struct.unpack_from(">I", data, tfhd[1] + 4)[0] != track_id:
                continue
            v1 = data[tfdt[1]] == 1
            value = struct.unpack_from(">Q" if v1 else ">I", data, tfdt[1] + 4)[0]
            return float(value) / timescale
    return None


def ts_video_pts(data: bytes) -> float | None:
    """PTS (s) of the first video PES of an MPEG-TS segment."""
    for off in range(0, len(data) - 187, 188):
        pkt = data[off : off + 188]
        if pkt[0] != 0x47 or not pkt[1] & 0x40:
            continue
        start = 4 + (1 + pkt[4] if pkt[3] & 0x20 else 0)
        pes = pkt[start:]
        if pes[:3] != b"\x00\x00\x01" or not 0xE0 <= pes[3] <= 0xEF or not pes[7] & 0x80:
            continue
        p = pes[9:14]
        pts = ((p[0] >> 1) & 7) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1
        return pts / 90000
    return None


# -- readers --


@dataclass
class Counters:
    requests: int = 0
    errors: int = 0
    media: int = 0  # parts or segments received
    bytes: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)


class Reader:
    def __init__(self, spec: dict[str, Any], stream: str) -> None:
        self.http = Http(spec.get("host", "127.0.0.1"), spec["port"])
        self.path = spec["path"].format(id=stream)
        self.base = self.path.rsplit("/", 1)[0] + "/"
        self.latency = stream in spec.get("latency", [])
        self.poll_s = spec.get("latency_poll_s" if self.latency else "poll_s", 1.0)
        self.c = Counters()

    async def fetch(self, path: str) -> tuple[int, bytes]:
        status, body = await self.http.get(path)
        self.c.requests += 1
        if status != 200:
            self.c.errors += 1
        return status, body

    async def playlist(self, query: str = "") -> str | None:
        status, body = await self.fetch(self.path + query)
        return body.decode() if status == 200 else None

    async def first_playlist(self) -> str:
        while (text := await self.playlist()) is None:
            await asyncio.sleep(0.05 if self.latency else 0.5)
        return text


class LlReader(Reader):
    """Blocking reloads for the hinted part, then the new parts."""

    async def run(self) -> None:
        text = await self.first_playlist()
        track: tuple[int, int] | None = None
        listed = parts_of(text)
        last = listed[-1][:2] if listed else (-1, -1)  # start at the live edge
        while True:
            init = MAP_RE.findall(text)
            if self.latency and init and track is None:
                status, data = await self.fetch(self.base + init[-1])
                track = video_track(data) if status == 200 else None
            for msn, idx, dur, pdt in parts_of(text):
                if (msn, idx) > last:
                    await self.part(msn, idx, dur, pdt, track)
                    last = (msn, idx)
            hint = re.search(r'PRELOAD-HINT:TYPE=PART,URI="part-(\d+)\.(\d+)', text)
            if hint is None:
                await asyncio.sleep(0.1)
                text = await self.first_playlist()
                continue
            query = f"?_HLS_msn={hint[1]}&_HLS_part={hint[2]}"
            text = await self.playlist(query) or await self.first_playlist()

    async def part(
        self, msn: int, idx: int, dur: float, pdt: float, track: tuple[int, int] | None
    ) -> None:
        status, data = await self.fetch(f"{self.base}part-{msn}.{idx}.m4s")
        if status != 200:
            return
        now = time.time()
        self.c.media += 1
        self.c.bytes += len(data)
        if self.latency and track is not None:
            self.c.records.append(
                {
                    "t": now,
                    "msn": msn,
                    "idx": idx,
                    "dur": dur,
                    "pdt": pdt,
                    "media": fmp4_video_start(data, *track),
                }
            )


def parts_of(text: str) -> list[tuple[int, int, float, float]]:
    """(msn, index, duration, program date-time of the part) of every listed part."""
    out = []
    pdt, offset = 0.0, 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt, offset = parse_pdt(line.split(":", 1)[1]), 0.0
        elif line.startswith("#EXT-X-PART:"):
            m = PART_RE.search(line)
            dur = float(re.search(r"DURATION=([\d.]+)", line)[1])  # type: ignore[index]
            if m:
                out.append((int(m[1]), int(m[2]), dur, pdt + offset))
            offset += dur
    return out


def parse_pdt(value: str) -> float:
    """'2026-01-02T03:04:05.678Z' -> UNIX seconds."""
    import calendar

    whole, _, frac = value.rstrip("Z").partition(".")
    t = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return t + (float("0." + frac) if frac else 0.0)


class PollReader(Reader):
    """Plain HLS: reload every poll_s, fetch the segments that are new."""

    async def run(self) -> None:
        seen: set[str] = set()
        first = True
        while True:
            text = await self.playlist()
            if text is not None:
                segs = segments_of(text)
                for uri, dur in segs:
                    if uri not in seen:
                        seen.add(uri)
                        if not first or self.latency:
                            await self.segment(uri, dur)
                first = not segs
            await asyncio.sleep(self.poll_s)

    async def segment(self, uri: str, dur: float) -> None:
        status, data = await self.fetch(self.base + uri)
        if status != 200:
            return
        now = time.time()
        self.c.media += 1
        self.c.bytes += len(data)
        if self.latency:
            self.c.records.append({"t": now, "uri": uri, "dur": dur, "media": ts_video_pts(data)})


def segments_of(text: str) -> list[tuple[str, float]]:
    out, dur = [], 0.0
    for line in text.splitlines():
        if line.startswith("#EXTINF:"):
            dur = float(line[8:].split(",")[0])
        elif line and not line.startswith("#"):
            out.append((line.strip(), dur))
    return out


# -- process --


async def main(spec: dict[str, Any]) -> None:
    kind = LlReader if spec["kind"] == "ll" else PollReader
    readers = {s: kind(spec, s) for s in spec["streams"]}
    tasks = [asyncio.create_task(guard(r)) for r in readers.values()]
    commands: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    threading.Thread(target=stdin_lines, args=(loop, commands), daemon=True).start()
    while (cmd := await commands.get()) != "":
        if cmd == "mark":
            for r in readers.values():
                r.c = Counters()
        elif cmd == "report":
            print(json.dumps({s: vars(r.c) for s, r in readers.items()}), flush=True)
    for task in tasks:
        task.cancel()


async def guard(reader: Reader) -> None:
    """A reader that fails starts over (a stream that ended, a refused connection)."""
    while True:
        try:
            await reader.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # count it, wait, retry
            reader.c.errors += 1
            reader.http.close()
            print(f"reader {reader.path}: {exc!r}", file=sys.stderr, flush=True)
            await asyncio.sleep(0.5)


def stdin_lines(loop: asyncio.AbstractEventLoop, out: asyncio.Queue[str]) -> None:
    for line in sys.stdin:
        loop.call_soon_threadsafe(out.put_nowait, line.strip())
    loop.call_soon_threadsafe(out.put_nowait, "")


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
