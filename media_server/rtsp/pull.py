"""RTSP pull: an IP camera (or a local file, looped in real time) published into the hub.

RtspPull is what callers hold: what to pull (URL, transport, timeouts, retry backoff),
start() and stop(), and the event loop's side of the pull: the hub publication and the
source's state (connecting / live / failed: reason / stopped), kept in the hub stream's
SourceState, where the stream listing shows it. Its worker thread (worker.py) reads the
source and hands items over with call_soon_threadsafe (coalesced: one wake-up carries
everything queued since the last); each reconnect is a new publication, so outputs see
a new epoch.

Source URLs may carry credentials; they go through redact_url before any log line, repr,
reason or API answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from pathlib import Path

import av
import av.container
import av.error

from core.backoff import Backoff
from core.redact import redact_url
from media_server.hub import Hub, Publication, SourceState, StreamBusy
from media_server.media import Packet
from media_server.patches import pyav_interrupt_clock
from media_server.rtsp.worker import (
    End,
    Handover,
    NewTracks,
    Publish,
    PullWorker,
    SourceError,
    StateChange,
)
from media_server.source_audio import SourcePacket

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
STABLE_S = 30.0  # a source up this long gets its reconnect backoff reset
STOP_GRACE_S = 2.0  # how long stop() waits for the worker before leaving it behind


class RtspPull:
    """Pulls one source into hub stream `stream_id`.

    url: rtsp://[user:pass@]host[:port]/path, or a local file path (looped, paced in real
    time). transport: "tcp" (default, survives NAT and loss) or "udp". One-shot: start()
    once, stop() once; the state is hub.stream(stream_id).source.
    """

    def __init__(
        self,
        hub: Hub,
        stream_id: str,
        url: str,
        transport: str = "tcp",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        *,
        backoff: Backoff | None = None,
        stable_s: float = STABLE_S,
    ) -> None:
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be 'tcp' or 'udp', not {transport!r}")
        self.hub = hub
        self.stream_id = stream_id
        self.transport = transport
        self.timeout_s = timeout_s
        self.backoff = backoff or Backoff()
        self.stable_s = stable_s
        self.is_file = "://" not in url or url.startswith("file://")
        self._source_url = url
        self._url = url.removeprefix("file://")
        self.safe_url = redact_url(url)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._outbox: deque[Handover] = deque()
        self._flush_scheduled = False
        self._publication: Publication | None = None
        self._worker = PullWorker(self, self._open, self._send, self._stopping)

    def __repr__(self) -> str:
        return f"<RtspPull {self.stream_id} {self.safe_url} {self.transport} {self.state.state}>"

    @property
    def url(self) -> str:
        """The source URL as given, credentials included: compare it, never log it (use
        safe_url)."""
        return self._source_url

    @property
    def state(self) -> SourceState:
        return self.hub.stream(self.stream_id).source

    @property
    def reconnects(self) -> int:
        return self._worker.reconnects

    @property
    def next_retry_s(self) -> float:
        """The wait before the next attempt (set when an attempt fails)."""
        return self._worker.next_retry_s

    @property
    def open_timeout_s(self) -> float:
        """Connect, DESCRIBE, SETUP, PLAY and probing: several round trips, so twice."""
        return self.timeout_s * 2

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self!r} already started")
        self._loop = asyncio.get_running_loop()
        pyav_interrupt_clock.install()
        self._set_state("connecting", "", 0)  # visible at once, before the thread runs
        self._thread = threading.Thread(
            target=self._worker.run, name=f"pull-{self.stream_id}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop pulling; a read blocked on a hung camera is aborted, not waited out."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            clock = pyav_interrupt_clock.CLOCK
            clock.interrupt(thread)
            deadline = time.monotonic() + STOP_GRACE_S
            while thread.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if not thread.is_alive():
                clock.release(thread)  # in case it ended before being marked
            else:
                log.warning(
                    "stream %s: puller of %s still blocked; it ends within %.0f s",
                    self.stream_id,
                    self.safe_url,
                    self.timeout_s * 2,
                )
        self._outbox.clear()
        self._close_publication("source stopped")
        self._set_state("stopped", "", self.reconnects)

    # -- opening the source (in the worker thread) --

    def _open(self) -> av.container.InputContainer:
        """The source, opened; a subclass may open another kind (V4l2Pull: a device)."""
        if self.is_file:
            if not Path(self._url).is_file():
                raise SourceError(f"no such file: {self._url}")
            return av.open(self._url, timeout=self.timeout_s)
        # PyAV's timeouts (open: connect to first packets; read: per packet) fire first and
        # say "timeout" plainly; FFmpeg's socket timeout is the backstop (a timed-out RTSP
        # request comes back from it as "invalid data").
        options = {
            "rtsp_transport": self.transport,
            "timeout": str(int((self.open_timeout_s + 1) * 1_000_000)),  # microseconds
        }
        started = time.monotonic()
        try:
            return av.open(
                self._url, options=options, timeout=(self.open_timeout_s, self.timeout_s)
            )
        except av.error.InvalidDataError:
            # an RTSP request cut short by the timeout comes back as "invalid data"
            if time.monotonic() - started < self.open_timeout_s * 0.95:
                raise
            raise SourceError(f"no answer within {self.open_timeout_s:g} s (timeout)") from None

    # -- hand-over from the worker thread --

    def _send(self, item: Handover) -> None:
        """Called in the worker thread: queue item for the loop, waking it once."""
        self._outbox.append(item)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._flush)
            except RuntimeError:  # the loop is gone (shutdown): nobody left to publish to
                self._stopping.set()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._stopping.is_set():
            self._outbox.clear()  # a worker left behind by stop() publishes nothing
            return
        while self._outbox:
            item = self._outbox.popleft()
            if isinstance(item, SourcePacket):  # the camera's G.711/Opus, for WebRTC
                if self._publication is not None:
                    self._publication.push_source_audio(item)
            elif isinstance(item, Packet):
                if self._publication is not None:
                    self._publication.push(item)
            else:
                self._apply(item)

    # -- the publication and the source's state --

    def _apply(self, item: Publish | NewTracks | End | StateChange) -> None:
        if isinstance(item, StateChange):
            self._set_state(item.state, item.reason, item.reconnects)
        elif isinstance(item, Publish):
            self._publish(item)
        elif isinstance(item, NewTracks):
            if self._publication is not None:
                self._publication.set_tracks(item.tracks)
        else:
            self._close_publication(item.reason)

    def _publish(self, item: Publish) -> None:
        session = item.session
        try:
            self._publication = self.hub.publish(
                self.stream_id,
                item.tracks,
                source=f"pull {self.safe_url}",
                on_evict=lambda reason: self._evicted(session, reason),
            )
        except StreamBusy as exc:
            reason = f"stream busy: {exc}"
            self._worker.leave(session, reason)
            self._set_state("failed", reason, self.reconnects)
            return
        self._publication.describe_source(item.source)
        self._publication.expect_source_audio(item.source_audio)
        self._set_state("live", "", self.reconnects)

    def _evicted(self, session: int, reason: str) -> None:
        self._publication = None
        self._worker.leave(session, reason)
        log.warning("stream %s: pull of %s %s", self.stream_id, self.safe_url, reason)

    def _close_publication(self, reason: str) -> None:
        if self._publication is not None:
            self._publication.close(reason)
            self._publication = None

    def _set_state(self, state: str, reason: str, reconnects: int) -> None:
        source = self.hub.stream(self.stream_id).source
        if source.state != state or source.reason != reason:
            source.since = time.time()
        source.state, source.reason, source.reconnects = state, reason, reconnects
