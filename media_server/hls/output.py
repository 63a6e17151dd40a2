"""LL-HLS outputs: one per watched stream, made on the first request, dropped when idle.

An output taps the hub: the segmenter runs inside the publisher's push (a few microseconds
per packet, no thread, no task wake-up per packet) and keeps the window of parts and
segments in memory. Nobody watching means no output: nothing subscribes, nothing is muxed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from media_server.hls import playlist
from media_server.hls.segmenter import Change, Part, Segment, Segmenter
from media_server.hls.window_files import WindowFiles, WindowSpill
from media_server.hub import Hub
from media_server.tap import tap

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HlsOptions:
    """Knobs; the first five have the names of core.config.HlsConfig's fields, so
    `HlsOptions(**config.hls.model_dump())` works."""

    segment_target_s: float = 2.0
    part_target_s: float = 0.5
    window_segments: int = 6
    idle_timeout_s: float = 30.0
    window_in_files: bool = False  # HlsOutputs given WindowFiles: see core.config.HlsConfig
    first_segment_wait_s: float = 4.0  # a first playlist request waits this long for video
    max_age_s: int = 60  # Cache-Control of init, parts and segments (their names never repeat)
    prft: bool = True  # wall-clock (prft box) at the start of each segment

    @property
    def block_timeout_s(self) -> float:
        """How long a blocking request waits: three target durations, as the spec says."""
        return 3 * self.segment_target_s


class SegmentWindow:
    """The window of parts and segments one segmenter holds, rendered as a playlist and
    awaited by blocking requests. What feeds the segmenter is the subclass's business."""

    def __init__(self, options: HlsOptions, spill: WindowSpill | None = None) -> None:
        self.options = options
        self._spill = spill  # None: the window's parts stay in memory
        # time-based first number: names (seg-N, part-N.i, init-N) of a later output for
        # the same stream never repeat an earlier one's, so caches cannot serve stale media
        self.first_msn = int(time.time())
        self.segmenter = Segmenter(
            options.segment_target_s,
            options.part_target_s,
            options.window_segments,
            first_msn=self.first_msn,
            prft=options.prft,
        )
        self._changed = asyncio.Event()
        self._rendered: tuple[str, str, bytes] | None = None  # query, text, body
        self.segmenter.listen(self._on_change)

    def _on_change(self, change: Change, segment: Segment | None) -> None:
        self._rendered = None
        if self._spill is not None and segment is not None:
            if change is Change.part:
                self._spill.part_closed(segment)
            elif change is Change.segment:
                self._spill.keep_from(self.segmenter.segments[0].msn)
        self._wake()

    def part_bytes(self, part: Part) -> bytes | None:
        """A part's bytes, from memory or its file; None if its file failed us."""
        return part.data if self._spill is None else self._spill.part_bytes(part)

    def segment_bytes(self, seg: Segment) -> bytes | None:
        return seg.data() if self._spill is None else self._spill.segment_bytes(seg)

    def drop_files(self) -> None:
        """Let go of the window's files (the output closed): from now on a part whose bytes
        were in a file is answered as gone (None), never as an empty body."""
        if self._spill is not None:
            self._spill.close()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def playlist(self, query: str = "") -> str:
        """The rendered playlist, rendered once per change (many viewers, one render)."""
        return self._render(query)[1]

    def playlist_bytes(self, query: str = "") -> bytes:
        """The playlist as the HTTP body (UTF-8), encoded once per render."""
        return self._render(query)[2]

    def _render(self, query: str) -> tuple[str, str, bytes]:
        cached = self._rendered  # dropped by every change
        if cached is None or cached[0] != query:
            text = playlist.render(self.segmenter, query)
            cached = self._rendered = (query, text, text.encode())
        return cached

    async def wait_for(self, msn: int, part: int | None, timeout: float) -> bool:
        """Wait until the playlist holds segment msn (or its part), up to timeout seconds."""
        return await self._wait(lambda: self.segmenter.has(msn, part), timeout)

    async def wait_first_segment(self, timeout: float) -> bool:
        return await self._wait(lambda: self.segmenter.last_msn is not None, timeout)

    async def wait_part(self, msn: int, index: int, timeout: float) -> bool:
        """Wait for a part that is still to come (the preload hint)."""
        seg = self.segmenter
        return await self._wait(
            lambda: seg.part(msn, index) is not None or not seg.is_future_part(msn, index), timeout
        )

    async def _wait(self, ready: Callable[[], bool], timeout: float) -> bool:
        """False at the timeout, or at once when the output closes (its waiters are
        woken: a viewer blocked on a closed output is answered, not left hanging)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0 or self.closed:
                return False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # no task per wait, unlike wait_for
                    await self._changed.wait()
        return True

    @property
    def closed(self) -> bool:
        return False


class HlsOutput(SegmentWindow):
    """The LL-HLS rendition of one stream."""

    def __init__(
        self, hub: Hub, stream_id: str, options: HlsOptions, files: WindowFiles | None = None
    ) -> None:
        # the window's closed segments, the open one, one free
        slots = options.window_segments + 2
        super().__init__(options, files.window(stream_id, slots) if files is not None else None)
        self.stream_id = stream_id
        self.last_request = time.monotonic()
        # the segmenter listens before the tap: the tap replays the GOP at once
        self._tap = tap(hub.stream(stream_id), "hls", self.segmenter.feed, self._start_over)

    def _start_over(self) -> None:
        # after a segmenter bug (the tap logged it): a new run from the next keyframe
        log.warning("hls %s: starting over at the next keyframe", self.stream_id)
        self.segmenter.end_run()

    def touch(self) -> None:
        self.last_request = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._tap.closed

    async def close(self) -> None:
        self._tap.close()
        self.drop_files()
        self._wake()


class HlsOutputs:
    """All LL-HLS outputs of this node: get-or-create on request, drop when idle."""

    def __init__(
        self, hub: Hub, options: HlsOptions | None = None, files: WindowFiles | None = None
    ) -> None:
        self.hub = hub
        self.options = options or HlsOptions()
        self.files = files  # None: windows in memory
        self._outputs: dict[str, HlsOutput] = {}
        self._reaper: asyncio.Task[None] | None = None

    def get(self, stream_id: str) -> HlsOutput | None:
        """The stream's output, made now if the stream is live; None if it is not live and
        nobody was watching it. Every call counts as a request for the idle timer."""
        output = self._outputs.get(stream_id)
        if output is None:
            stream = self.hub.find(stream_id)
            if stream is None or not stream.live:
                return None
            output = HlsOutput(self.hub, stream_id, self.options, self.files)
            self._outputs[stream_id] = output
            log.info("hls %s: output started", stream_id)
            self._start_reaper()
        output.touch()
        return output

    def __len__(self) -> int:
        return len(self._outputs)

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._outputs

    def _start_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap(), name="hls idle")

    async def _reap(self) -> None:
        period = min(5.0, self.options.idle_timeout_s / 3)
        while self._outputs:
            await asyncio.sleep(period)
            await self.drop_idle()

    async def drop_idle(self) -> None:
        now = time.monotonic()
        for stream_id, output in list(self._outputs.items()):
            if now - output.last_request > self.options.idle_timeout_s:
                del self._outputs[stream_id]
                await output.close()
                log.info("hls %s: nobody watching, output stopped", stream_id)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        outputs, self._outputs = list(self._outputs.values()), {}
        for output in outputs:
            await output.close()
        if self.files is not None:
            self.files.close()
