"""Store-and-forward, the agent's half: upload the ring segments a recording missed.

While the uplink is down the publisher stops but the ring records on. When it is back the
agent asks the server for the gaps of each of its streams (BACKFILL_GAPS_PATH) and uploads
every ring segment overlapping one, its init first, oldest first. What was uploaded (or
refused as not needed) is remembered in a small state file next to the ring
(`{spool}/backfill.jsonl`), so an agent restart never uploads a segment twice; the server
also answers "duplicate" for content it has, as a second guard.

    backfill = Backfill(ring, config.server, bearer(id, secret), streams)
    backfill.start()          # every ~10 s, and at once when kick()ed
    backfill.kick()           # the publisher reconnected: the uplink is back
    backfill.pending          # segments still to upload, for the heartbeat
    await backfill.stop()

Network errors end a round; the next comes after a growing wait (1 s .. 30 s), reset by a
round that worked.

A gap whose end the ring has not recorded past yet (a short one: a media node died and the
publisher moved on within seconds) is asked about again in the next rounds, soon, until the
ring has its last segment: the server may mark it filled as soon as the first segments
cover it within its edge tolerance, and then no longer lists it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from device_agents.protocol import (
    BACKFILL_GAPS_PATH,
    BACKFILL_INIT_PATH,
    BACKFILL_SEGMENT_PATH,
    GapOut,
    RingEntry,
)
from device_agents.ring import Ring

log = logging.getLogger(__name__)

STATE_FILE = "backfill.jsonl"
INTERVAL_S = 10.0
MIN_OVERLAP_S = 0.1  # as the server (recorder/backfill.py): less is not worth sending
BACKOFF_FIRST_S, BACKOFF_CAP_S = 1.0, 30.0
POLL_S = 1.0  # how often the loop looks whether the uplink came back (sessions grew)
UNFINISHED_S = 2.0  # the next round, when the ring has not recorded past a gap's end yet
UNFINISHED_FOR_S = 60.0  # a gap's end this long ago: the ring will not get further (no source)


class UplinkDown(Exception):
    """The server could not be reached or answered 5xx: try again later."""


@dataclass
class _Todo:
    gap: GapOut
    entry: RingEntry


def overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


class Backfill:
    def __init__(
        self,
        ring: Ring,
        server_url: str,
        bearer: str,
        streams: list[str],
        *,
        state_path: Path | None = None,
        interval_s: float = INTERVAL_S,
        sessions: Callable[[], int] | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        """bearer: the Authorization header value (protocol.bearer()); sessions: how many
        publish sessions have started so far (it grows when the uplink comes back)."""
        self.ring = ring
        self.server_url = server_url.rstrip("/")
        self.bearer = bearer
        self.streams = list(streams)
        self.state_path = state_path or ring.root / STATE_FILE
        self.interval_s = interval_s
        self.sessions = sessions
        self.timeout_s = timeout_s
        self.pending = 0
        self.uploaded = 0  # segments stored by the server, this run
        self.bytes_uploaded = 0
        self.duplicates = 0
        self.upload_s = 0.0  # time spent in segment uploads that were stored (throughput)
        self.last_error = ""
        self._done = self._load_state()
        self._init_names: dict[tuple[str, str, str], str] = {}  # (rec, stream, file) -> name
        self._unfinished: dict[str, list[GapOut]] = {}  # stream -> gaps the ring is not past
        self._kicked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    # -- the loop --

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="backfill")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def kick(self) -> None:
        """Run a round now (the uplink is back)."""
        self._kicked.set()

    async def _loop(self) -> None:
        wait = BACKOFF_FIRST_S
        while True:
            self._kicked.clear()
            try:
                await self.run_once()
                wait = BACKOFF_FIRST_S
                delay = min(self.interval_s, UNFINISHED_S) if self.unfinished else self.interval_s
            except UplinkDown as exc:
                self.last_error = str(exc)
                delay, wait = wait, min(wait * 2, BACKOFF_CAP_S)
            except Exception:  # a bug must not end store-and-forward: log, retry later
                log.exception("backfill round failed")
                delay = BACKOFF_CAP_S
            await self._sleep(delay)

    async def _sleep(self, delay: float) -> None:
        """Until delay passes, kick() is called, or a new publish session began."""
        seen = self.sessions() if self.sessions else 0
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._kicked.wait(), min(left, POLL_S))
                return
            if self.sessions is not None and self.sessions() > seen:
                return

    # -- one round --

    async def run_once(self) -> int:
        """Ask the gaps of every stream and upload what overlaps them; the number of
        segments the server stored. UplinkDown when the server cannot be reached."""
        todo: list[_Todo] = []
        for stream in self.streams:
            gaps = await self._gaps(stream)
            gaps += [g for g in self._unfinished.get(stream, []) if g not in gaps]
            todo += self._overlapping(stream, gaps)
            self._unfinished[stream] = self._not_past(stream, gaps)
        self.pending = len(todo)
        stored = 0
        for item in todo:
            if await self._upload(item):
                stored += 1
            self.pending -= 1
        return stored

    @property
    def unfinished(self) -> int:
        """Gaps whose end the ring has not recorded past yet."""
        return sum(map(len, self._unfinished.values()))

    def _not_past(self, stream: str, gaps: list[GapOut]) -> list[GapOut]:
        newest = max((e.start + e.duration for e in self.ring.entries(stream)), default=0.0)
        now = time.time()
        return [g for g in gaps if g.end > newest and now - g.end < UNFINISHED_FOR_S]

    def _overlapping(self, stream: str, gaps: list[GapOut]) -> list[_Todo]:
        todo = []
        for entry in self.ring.entries(stream):
            end = entry.start + entry.duration
            gap = next(
                (g for g in gaps if overlap(entry.start, end, g.start, g.end) >= MIN_OVERLAP_S),
                None,
            )
            if gap is not None and (gap.recording_id, entry.sha256) not in self._done:
                todo.append(_Todo(gap, entry))
        return sorted(todo, key=lambda t: (t.gap.recording_id, t.entry.start))

    async def _gaps(self, stream: str) -> list[GapOut]:
        response = await self._request("GET", BACKFILL_GAPS_PATH, params={"stream": stream})
        if response.status_code != 200:
            log.warning(
                "backfill: gaps of %s refused (%d): %s",
                stream,
                response.status_code,
                response.text[:200],
            )
            return []
        return [GapOut.model_validate(g) for g in response.json()]

    async def _upload(self, item: _Todo) -> bool:
        stream, entry, rid = item.gap.stream, item.entry, item.gap.recording_id
        try:
            data = await asyncio.to_thread(self.ring.path(stream, entry.file).read_bytes)
        except FileNotFoundError:
            return False  # evicted meanwhile: the ring was too small for the outage
        init = await self._init(rid, stream, entry.init)
        if init is None:
            return False
        began = time.monotonic()
        response = await self._request(
            "PUT",
            BACKFILL_SEGMENT_PATH.format(recording_id=rid),
            content=data,
            params={
                "stream": stream,
                "start": entry.start,
                "duration": entry.duration,
                "init": init,
                "media_start": entry.media_start,
            },
            headers={"X-Content-SHA256": entry.sha256, "Content-Type": "video/iso.segment"},
        )
        code = response.status_code
        result = {201: "stored", 200: "duplicate", 409: "no gap"}.get(code)
        if result is None:  # 400 (damaged on the way: next round), 401/403, 413
            log.warning(
                "backfill: %s of %s refused (%d): %s", entry.file, rid, code, response.text[:200]
            )
            return False
        self._remember(rid, stream, entry, result)
        if result == "stored":
            self.uploaded += 1
            self.bytes_uploaded += len(data)
            self.upload_s += time.monotonic() - began
        elif result == "duplicate":
            self.duplicates += 1
        return result == "stored"

    async def _init(self, rid: str, stream: str, file: str) -> str | None:
        """The server's name for this ring init in this recording (uploaded once; the
        server answers a duplicate with the name it has)."""
        key = (rid, stream, file)
        if key in self._init_names:
            return self._init_names[key]
        try:
            data = await asyncio.to_thread(self.ring.path(stream, file).read_bytes)
        except FileNotFoundError:
            return None
        response = await self._request(
            "PUT",
            BACKFILL_INIT_PATH.format(recording_id=rid),
            content=data,
            headers={"Content-Type": "video/mp4"},
        )
        if response.status_code not in (200, 201):
            log.warning(
                "backfill: init %s for %s refused (%d): %s",
                file,
                rid,
                response.status_code,
                response.text[:200],
            )
            return None
        name = str(response.json()["init"])
        self._init_names[key] = name
        return name

    async def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: dict[str, str | float] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.server_url, timeout=self.timeout_s)
        try:
            response = await self._client.request(
                method,
                path,
                content=content,
                params=params,
                headers={"Authorization": self.bearer, **(headers or {})},
            )
        except httpx.HTTPError as exc:
            raise UplinkDown(f"{type(exc).__name__}: {exc}") from None
        if response.status_code >= 500:
            raise UplinkDown(f"server answered {response.status_code}: {response.text[:200]}")
        return response

    # -- what was sent --

    def _load_state(self) -> set[tuple[str, str]]:
        done: set[tuple[str, str]] = set()
        try:
            lines = self.state_path.read_text().splitlines()
        except FileNotFoundError:
            return done
        for line in lines:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                record = json.loads(line)
                done.add((record["recording"], record["sha256"]))
        return done

    def _remember(self, rid: str, stream: str, entry: RingEntry, result: str) -> None:
        """Appended (and flushed) before anything else happens: a restart right after
        sees it."""
        self._done.add((rid, entry.sha256))
        line = json.dumps(
            {
                "recording": rid,
                "stream": stream,
                "file": entry.file,
                "sha256": entry.sha256,
                "result": result,
                "at": time.time(),
            }
        )
        with open(self.state_path, "a") as f:
            f.write(line + "\n")
