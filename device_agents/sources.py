"""Camera feeds: each stream a source offers (RTSP main / sub, a looped file, a test pattern,
a local video device) pulled into the agent's own hub, remuxed, never transcoded.

The feed ids in the agent hub are `cam/{source}/main` and `cam/{source}/sub`; what leaves
the agent (publisher, ring) reads the output streams the selector fills from them.
RTSP and files reuse media_server.rtsp.pull.RtspPull (its worker thread, timeouts, loop
with continued timestamps, reasons); the test pattern reuses the demo courtroom's
generator (it must encode: it is a picture made here).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any, Protocol

import av
import av.container

from core.backoff import Backoff
from device_agents.protocol import SourceHealth, SourceState, TrackHealth
from media_server.demo import DemoCourtroom
from media_server.hub import Hub, Stream
from media_server.rtsp.pull import RtspPull

log = logging.getLogger(__name__)

TEST_SIZE = (640, 360)
TEST_FPS = 25
TEST_LOOP_S = 10.0  # encoded once, then replayed: a short loop keeps the start cheap


def feed_id(source: str, which: str) -> str:
    return f"cam/{source}/{which}"


class Ingest(Protocol):
    async def stop(self) -> None: ...


class V4l2Pull(RtspPull):
    """A local video device that outputs H.264 itself (UVC H.264 cameras); raw-video
    devices would need an encoder, which is not the agent's job."""

    def __init__(self, hub: Hub, stream_id: str, device: str, **kw: Any) -> None:
        super().__init__(hub, stream_id, device, **kw)
        self.is_file = False  # a live device: no pacing, no looping

    def _open(self) -> av.container.InputContainer:
        return av.open(
            self._url,
            format="v4l2",
            options={"input_format": "h264"},
            timeout=(self.open_timeout_s, self.timeout_s),
        )


class Feed:
    """One camera stream into the agent hub; start() / stop(), restartable."""

    def __init__(
        self, hub: Hub, source: str, which: str, kind: str, url: str, timeout_s: float = 5.0
    ) -> None:
        self.hub, self.source, self.which = hub, source, which
        self.kind, self.url, self.timeout_s = kind, url, timeout_s
        self.id = feed_id(source, which)
        self._ingest: RtspPull | DemoCourtroom | None = None
        self.restarts = 0  # restarts asked for by a command (RtspPull counts its own)

    @property
    def stream(self) -> Stream:
        return self.hub.stream(self.id)

    async def start(self) -> None:
        if self.kind == "test":
            await self._start_test()
            return
        backoff = Backoff(first_s=0.5, cap_s=15.0)
        if self.kind == "v4l2":
            pull: RtspPull = V4l2Pull(
                self.hub, self.id, self.url, timeout_s=self.timeout_s, backoff=backoff
            )
        else:
            pull = RtspPull(self.hub, self.id, self.url, timeout_s=self.timeout_s, backoff=backoff)
        self._ingest = pull
        pull.start()

    async def _start_test(self) -> None:
        width, height = _test_size(self.url)
        demo = DemoCourtroom(
            self.hub, self.id, self.source, width, height, TEST_FPS, gop_s=2.0, loop_s=TEST_LOOP_S
        )
        self._ingest = demo
        state = self.stream.source
        state.state, state.reason, state.since = "connecting", "", time.time()
        await demo.start()  # waits for the first encoded frame only
        state.state, state.since = "live", time.time()

    async def stop(self) -> None:
        ingest, self._ingest = self._ingest, None
        if ingest is not None:
            await ingest.stop()
        state = self.stream.source
        state.state, state.reason = "stopped", ""

    async def restart(self) -> None:
        await self.stop()
        self.restarts += 1
        await self.start()


def _test_size(url: str) -> tuple[int, int]:
    """`test:` or `test:WxH`."""
    match = re.fullmatch(r"test:(\d+)x(\d+)", url.strip())
    return (int(match[1]), int(match[2])) if match else TEST_SIZE


def classify(reason: str) -> str:
    """RtspPull's reason in the words the device record shows (the three a technician
    acts on first), the detail kept after them."""
    low = reason.lower()
    if "unauthorized" in low or "401" in low:
        return "wrong credentials"
    found = re.search(r"video found: ([^)]*)", reason)
    if found and "no h.264" in low:
        return f"unsupported codec {found[1]}"
    for sign in (
        "refused",
        "timeout",
        "no answer",
        "unreachable",
        "no route",
        "reset by peer",
        "network is",
        "host is down",
        "resolve",
    ):
        if sign in low:
            return f"unreachable ({reason})"
    return reason


def feed_health(feed: Feed | None) -> tuple[SourceState, str, int]:
    """(state, reason, reconnects) of one feed, as SourceHealth states. A feed retrying
    after a failure is down, not starting, so the device record does not flicker."""
    if feed is None:
        return "stopped", "", 0
    source = feed.stream.source
    reconnects = source.reconnects + feed.restarts
    if source.state == "live":
        return "up", "", reconnects
    if source.state == "failed":
        return "down", classify(source.reason), reconnects
    if source.state == "connecting":
        hint = source.reason.removeprefix("reconnecting after: ")
        if hint:
            return "down", classify(hint), reconnects
        return "starting", "", reconnects
    return "stopped", "", reconnects


def source_health(
    name: str,
    feed: Feed | None,
    out: Stream | None,
    publishing: bool,
    active: str,
    publish_problem: str,
) -> SourceHealth:
    """One source's health: its active feed's state and rates (out: the feed's stream)."""
    state, reason, reconnects = feed_health(feed)
    if state == "up" and publish_problem:
        reason = publish_problem  # the camera is fine, the uplink or the server is not
    stats = out.stats if out is not None and out.live else None
    return SourceHealth(
        name=name,
        state=state,
        reason=reason,
        publishing=publishing,
        active="sub" if active == "sub" else "main",
        fps=round(stats.fps, 2) if stats else 0.0,
        bitrate_kbps=round(stats.bitrate_bps / 1000, 1) if stats else 0.0,
        keyframe_interval_s=round(stats.gop_seconds, 3) if stats else 0.0,
        reconnects=reconnects,
        tracks=feed_tracks(feed),
    )


def feed_tracks(feed: Feed | None) -> list[TrackHealth]:
    """The tracks the feed's camera sends and their state (carried, transcoded, dropped)."""
    if feed is None or not feed.stream.live:
        return []
    return [
        TrackHealth(kind=t.kind, codec=t.codec, state=t.state) for t in feed.stream.source_tracks
    ]
