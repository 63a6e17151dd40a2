"""RTSP pull: an IP camera (or a local file, looped in real time) published into the hub.

The one blocking thing, PyAV's demuxer, runs in a worker thread; packets are copied, never
decoded, converted to the hub's AVCC form and handed to the event loop with
call_soon_threadsafe (coalesced: one wake-up carries everything queued since the last).
A dropped camera is retried with a growing, jittered wait that resets once the camera has
stayed up for a while; each reconnect is a new publication, so outputs see a new epoch.
The source's state (connecting / live / failed: reason / stopped) lives in the hub
stream's SourceState, where the stream listing shows it.

Source URLs may carry credentials; they go through redact_url before any log line, repr,
reason or API answer.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import av
import av.container
import av.error

from core.backoff import Backoff
from core.redact import redact_url
from media_server.bitstream import AccessUnitNormalizer, BitstreamError
from media_server.hub import Hub, Publication, SourceState, StreamBusy
from media_server.media import Packet, Track

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 5.0
STABLE_S = 30.0  # a source up this long gets its reconnect backoff reset
STOP_GRACE_S = 2.0  # how long stop() waits for the worker before leaving it behind
VIDEO_CODECS = {"h264": "h264", "hevc": "h265"}


class SourceError(Exception):
    """The source answered, but with nothing we can publish (message for the user)."""


class _InterruptClock:
    """Lets stop() abort a PyAV call blocked on a hung camera at once.

    PyAV's interrupt callback (av/container/core.py, polled by FFmpeg every ~100 ms while
    it waits on a socket) asks `time.monotonic()` whether the open/read timeout has
    passed, and PyAV offers no other hook. Installed as that module's `time`, this clock
    answers "much later" to threads being stopped, so their call ends with ExitError now
    instead of after timeout_s; every other thread sees the real clock.

    FFmpeg calls that callback ~10 times per packet, each under the GIL: while no thread
    is being stopped, `monotonic` is time.monotonic itself (no Python frame per call).
    """

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()  # objects, not idents: never reused
        self._jump = 0.0
        self._lock = threading.Lock()
        self.monotonic: Callable[[], float] = time.monotonic

    def _stopping_monotonic(self) -> float:
        now = time.monotonic()
        if self._threads and threading.current_thread() in self._threads:
            self._jump += 1e6  # keeps growing: a timeout restarted after the stop also fires
            return now + self._jump
        return now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    def interrupt(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.add(thread)
            self.monotonic = self._stopping_monotonic

    def release(self, thread: threading.Thread) -> None:
        with self._lock:
            self._threads.discard(thread)
            if not self._threads:
                self.monotonic = time.monotonic


_INTERRUPTS = _InterruptClock()


def _install_interrupts() -> bool:
    core = getattr(av.container, "core", None)
    current = getattr(core, "time", None)
    if current is _INTERRUPTS:
        return True
    if current is not time:  # a PyAV whose callback no longer asks time.monotonic
        log.debug("PyAV interrupt hook unavailable: stop() waits for the read timeout")
        return False
    core.time = _INTERRUPTS
    return True


# -- hand-over items (worker thread -> event loop) --


@dataclass(frozen=True, slots=True)
class _Publish:
    tracks: tuple[Track, ...]
    session: int


@dataclass(frozen=True, slots=True)
class _NewTracks:
    tracks: tuple[Track, ...]


@dataclass(frozen=True, slots=True)
class _End:
    reason: str


@dataclass(frozen=True, slots=True)
class _State:
    state: str
    reason: str
    reconnects: int


_Item = Packet | _Publish | _NewTracks | _End | _State


class _TrackReader:
    """One source stream -> one hub track: timestamps checked, video converted to AVCC."""

    def __init__(self, index: int, stream: av.stream.Stream, codec: str) -> None:
        self.index = index
        self.source_index = stream.index
        self.codec = codec
        ctx = stream.codec_context
        self.is_video = codec in ("h264", "h265")
        self.timescale, self._rescale = _timescale(stream, self.is_video)
        self.step = _frame_ticks(stream, self.timescale, self.is_video)
        extradata = bytes(ctx.extradata or b"")
        self.normalizer = AccessUnitNormalizer(codec, extradata) if self.is_video else None
        self.track = self._build_track(ctx, extradata)
        self.new_track: Track | None = None
        self.offset = 0  # added to every timestamp (file loops)
        self.first_dts: int | None = None
        self.last_dts: int | None = None
        self.dropped = 0
        self._pending: tuple[bytes, bool, float] | None = None

    def _build_track(self, ctx: Any, config: bytes) -> Track:
        if self.normalizer is None:
            return Track(
                self.index,
                "audio",
                "aac",
                self.timescale,
                config,
                sample_rate=ctx.sample_rate,
                channels=ctx.channels,
            )
        width, height, record = ctx.width, ctx.height, b""
        if self.normalizer.params.complete:
            record = self.normalizer.params.record()
            info = self.normalizer.params.sps_info()
            width, height = info.width, info.height
        return Track(
            self.index,
            "video",
            self.codec,
            self.timescale,  # type: ignore[arg-type]
            record,
            width=width,
            height=height,
        )

    @property
    def ready(self) -> bool:
        return bool(self.track.config)

    def read(self, packet: av.Packet, arrival: float) -> list[Packet]:
        data, keyframe = bytes(packet), bool(packet.is_keyframe)
        if self.normalizer is not None:
            try:
                data, keyframe, changed = self.normalizer.convert(data)
            except BitstreamError:
                self.dropped += 1  # one damaged frame is no reason to drop the camera
                return []
            if changed and self.normalizer.params.complete:
                self._refresh_track()
            if not data:
                return []
        return self._stamp(data, keyframe, packet, arrival)

    def _refresh_track(self) -> None:
        assert self.normalizer is not None
        record = self.normalizer.params.record()
        if record != self.track.config:
            info = self.normalizer.params.sps_info()
            self.track = Track(
                self.index,
                "video",
                self.codec,  # type: ignore[arg-type]
                self.timescale,
                record,
                width=info.width,
                height=info.height,
            )
            self.new_track = self.track

    def _stamp(
        self, data: bytes, keyframe: bool, packet: av.Packet, arrival: float
    ) -> list[Packet]:
        """Timestamps in the track's timescale; a packet without any (RTSP's first, before
        the first RTP timestamp mapping) gets one from its neighbour, a packet going
        backwards is dropped, as a muxer would refuse it."""
        dts = packet.dts if packet.dts is not None else packet.pts
        if dts is None:
            if self.last_dts is None:
                self._pending = (data, keyframe, arrival)
                return []
            dts = pts = self.last_dts + self.step
        else:
            pts = packet.pts if packet.pts is not None else dts
            dts, pts = self._scale(dts) + self.offset, self._scale(pts) + self.offset
        out: list[Packet] = []
        if self._pending is not None and self.last_dts is None:
            early = dts - self.step
            out.append(
                Packet(
                    self.index, early, early, self._pending[1], self._pending[0], self._pending[2]
                )
            )
            self.first_dts = self.last_dts = early
        self._pending = None
        if self.last_dts is not None and dts <= self.last_dts:
            self.dropped += 1
            return out
        if self.first_dts is None:
            self.first_dts = dts
        self.last_dts = dts
        out.append(Packet(self.index, dts, max(pts, dts), keyframe, data, arrival))
        return out

    def _scale(self, ts: int) -> int:
        return round(ts * self._rescale) if self._rescale is not None else ts


def _frame_ticks(stream: av.stream.Stream, timescale: int, is_video: bool) -> int:
    """One frame's duration in ticks: stands in for a missing timestamp."""
    if is_video:
        rate = stream.guessed_rate or stream.average_rate or 25
        return max(1, round(timescale / rate))
    ctx = stream.codec_context
    return max(1, round((ctx.frame_size or 1024) * timescale / (ctx.sample_rate or timescale)))


def _timescale(stream: av.stream.Stream, is_video: bool) -> tuple[int, Fraction | None]:
    """The track's timescale and the factor from the stream's time_base to it."""
    tb = stream.time_base or Fraction(1, 90000)
    if tb.numerator == 1:
        return tb.denominator, None
    scale = 90000 if is_video else (stream.codec_context.sample_rate or 90000)
    return scale, tb * scale


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
        self._secrets = _secrets_of(url)
        self.reconnects = 0
        self.next_retry_s = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._outbox: deque[_Item] = deque()
        self._flush_scheduled = False
        self._publication: Publication | None = None
        self._session = 0
        self._leave_session = -1  # the loop asks the worker to drop this session
        self._leave_reason = ""
        self._last_reason = ""

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

    # -- event loop side --
    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self!r} already started")
        self._loop = asyncio.get_running_loop()
        _install_interrupts()
        self._set_state("connecting", "", 0)  # visible at once, before the thread runs
        self._thread = threading.Thread(
            target=self._run, name=f"pull-{self.stream_id}", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        """Stop pulling; a read blocked on a hung camera is aborted, not waited out."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            _INTERRUPTS.interrupt(thread)
            deadline = time.monotonic() + STOP_GRACE_S
            while thread.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            if not thread.is_alive():
                _INTERRUPTS.release(thread)  # in case it ended before being marked
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

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._stopping.is_set():
            self._outbox.clear()  # a worker left behind by stop() publishes nothing
            return
        while self._outbox:
            item = self._outbox.popleft()
            if isinstance(item, Packet):
                if self._publication is not None:
                    self._publication.push(item)
            else:
                self._apply(item)

    def _apply(self, item: _Publish | _NewTracks | _End | _State) -> None:
        if isinstance(item, _State):
            self._set_state(item.state, item.reason, item.reconnects)
        elif isinstance(item, _Publish):
            self._publish(item)
        elif isinstance(item, _NewTracks):
            if self._publication is not None:
                self._publication.set_tracks(item.tracks)
        else:
            self._close_publication(item.reason)

    def _publish(self, item: _Publish) -> None:
        session = item.session
        try:
            self._publication = self.hub.publish(
                self.stream_id,
                item.tracks,
                source=f"pull {self.safe_url}",
                on_evict=lambda reason: self._evicted(session, reason),
            )
        except StreamBusy as exc:
            self._leave(session, f"stream busy: {exc}")
            self._set_state("failed", self._leave_reason, self.reconnects)
            return
        self._set_state("live", "", self.reconnects)

    def _leave(self, session: int, reason: str) -> None:
        self._leave_reason = reason
        self._leave_session = session  # read by the worker: set last

    def _evicted(self, session: int, reason: str) -> None:
        self._publication = None
        self._leave(session, reason)
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

    # -- worker thread side --
    def _send(self, item: _Item) -> None:
        self._outbox.append(item)
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            try:
                self._loop.call_soon_threadsafe(self._flush)
            except RuntimeError:  # the loop is gone (shutdown): nobody left to publish to
                self._stopping.set()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._attempt()
        finally:
            _INTERRUPTS.release(threading.current_thread())

    def _attempt(self) -> None:
        self._session += 1
        hint = f"reconnecting after: {self._last_reason}" if self.reconnects else ""
        self._send(_State("connecting", hint, self.reconnects))
        started = time.monotonic()
        live_since: list[float] = []
        try:
            self._pull(live_since)
            reason = "the source ended the stream"
        except (av.error.FFmpegError, OSError, BitstreamError, SourceError) as exc:
            reason = self._reason(exc)
        self._last_reason = reason
        if self._stopping.is_set():
            self._send(_End(reason))
            return
        if live_since and time.monotonic() - live_since[0] >= self.stable_s:
            self.backoff.reset()
        self.next_retry_s = self.backoff.next()
        # the state before the end: whoever sees the stream end (API, tests) sees why
        self._send(_State("failed", reason, self.reconnects))
        self._send(_End(reason))
        log.warning(
            "stream %s: %s failed after %.1f s: %s; retry in %.1f s",
            self.stream_id,
            self.safe_url,
            time.monotonic() - started,
            reason,
            self.next_retry_s,
        )
        self._stopping.wait(self.next_retry_s)
        self.reconnects += 1

    def _pull(self, live_since: list[float]) -> None:
        container = self._open()
        try:
            readers = self._readers(container)
            self._describe(container, readers)
            self._forward(container, readers, live_since)
        finally:
            container.close()

    def _open(self) -> av.container.InputContainer:
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

    @property
    def open_timeout_s(self) -> float:
        """Connect, DESCRIBE, SETUP, PLAY and probing: several round trips, so twice."""
        return self.timeout_s * 2

    def _readers(self, container: av.container.InputContainer) -> dict[int, _TrackReader]:
        video = next(
            (s for s in container.streams.video if s.codec_context.name in VIDEO_CODECS), None
        )
        if video is None:
            found = ", ".join(s.codec_context.name for s in container.streams.video) or "none"
            raise SourceError(f"no H.264/H.265 video track (video found: {found})")
        readers = {video.index: _TrackReader(0, video, VIDEO_CODECS[video.codec_context.name])}
        for stream in container.streams.audio:
            if stream.codec_context.name == "aac" and len(readers) == 1:
                readers[stream.index] = _TrackReader(1, stream, "aac")
        return readers

    def _describe(
        self, container: av.container.InputContainer, readers: dict[int, _TrackReader]
    ) -> None:
        kept = [
            f"{r.codec} {r.track.width}x{r.track.height}"
            if r.is_video
            else f"{r.codec} {r.track.sample_rate} Hz"
            for r in readers.values()
        ]
        skipped = [
            f"{s.type} {s.codec_context.name}"
            for s in container.streams
            if s.index not in readers and s.type in ("video", "audio")
        ]
        log.info(
            "stream %s: connected to %s (%s): %s%s",
            self.stream_id,
            self.safe_url,
            "file" if self.is_file else self.transport,
            ", ".join(kept),
            f"; skipped {', '.join(skipped)} (transcoding not yet supported)" if skipped else "",
        )

    def _forward(
        self,
        container: av.container.InputContainer,
        readers: dict[int, _TrackReader],
        live_since: list[float],
    ) -> None:
        video = next(r for r in readers.values() if r.is_video)
        published = False
        for packet, arrival in self._packets(container, readers):
            if self._stopping.is_set():
                return
            if self._leave_session == self._session:
                raise SourceError(self._leave_reason)
            reader = readers[packet.stream.index]
            for out in reader.read(packet, arrival):
                if not published:
                    if not (reader is video and out.keyframe and video.ready):
                        continue  # nothing a viewer could start from yet
                    video.new_track = None
                    tracks = tuple(r.track for r in readers.values())
                    self._send(_Publish(tracks, self._session))
                    live_since.append(time.monotonic())
                    published = True
                elif reader.new_track is not None:
                    reader.new_track = None
                    self._send(_NewTracks(tuple(r.track for r in readers.values())))
                self._send(out)

    def _packets(
        self, container: av.container.InputContainer, readers: dict[int, _TrackReader]
    ) -> Iterator[tuple[av.Packet, float]]:
        """Packets with their arrival time; a file is looped and paced in real time."""
        if not self.is_file:
            last = time.monotonic()
            try:
                for packet in container.demux([container.streams[i] for i in readers]):
                    last = time.monotonic()
                    if packet.size:
                        yield packet, time.time()
            except av.error.FFmpegError:
                if time.monotonic() - last < self.timeout_s * 0.95 or self._stopping.is_set():
                    raise
                raise SourceError(f"no data for {self.timeout_s:g} s (timeout)") from None
            return
        pacer = _Pacer(self._stopping)
        while not self._stopping.is_set():
            for packet in container.demux([container.streams[i] for i in readers]):
                if packet.size:
                    pacer.wait(packet, readers[packet.stream.index])
                    yield packet, time.time()
            _next_loop(readers)
            container.seek(0)

    def _reason(self, exc: BaseException) -> str:
        """What went wrong, in words a technician can act on, with no secret in it."""
        if isinstance(exc, av.error.ExitError):
            text = "stopped" if self._stopping.is_set() else "no answer in time (timeout)"
        elif isinstance(exc, av.error.HTTPUnauthorizedError):
            text = "unauthorized: check the user name and password in the source URL"
        elif isinstance(exc, av.error.HTTPNotFoundError):
            text = "not found: check the stream path in the source URL"
        elif isinstance(exc, ConnectionRefusedError):
            text = "connection refused: is the camera up, and is the port right?"
        elif isinstance(exc, TimeoutError):
            text = f"no answer within {self.timeout_s:g} s (timeout)"
        elif isinstance(exc, av.error.FFmpegError):
            text = f"{exc.strerror or type(exc).__name__}"
        else:
            text = str(exc) or type(exc).__name__
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        text = redact_url(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _Pacer:
    """Holds file packets until their time: wall start + (dts - first dts)."""

    def __init__(self, stopping: threading.Event) -> None:
        self._stopping = stopping
        self._origin: tuple[float, float] | None = None  # (wall, media seconds)

    def wait(self, packet: av.Packet, reader: _TrackReader) -> None:
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None:
            return
        media_s = float(ts * (packet.time_base or 0)) + reader.offset / reader.timescale
        if self._origin is None:
            self._origin = (time.monotonic(), media_s)
        delay = self._origin[0] + media_s - self._origin[1] - time.monotonic()
        if delay > 0:
            self._stopping.wait(delay)


def _next_loop(readers: dict[int, _TrackReader]) -> None:
    """Shift every track by the file's length so the next loop continues the timeline."""
    # first_dts was taken in the first loop (offset 0); rounding up keeps every track's
    # next dts past its own last one, and one span for all keeps audio and video in sync
    ends, starts = [], []
    for r in readers.values():
        if r.first_dts is not None and r.last_dts is not None:
            ends.append((r.last_dts - r.offset + r.step) / r.timescale)
            starts.append(r.first_dts / r.timescale)
    if not ends:
        raise SourceError("the file holds no packets")
    span = max(ends) - min(starts)
    for reader in readers.values():
        reader.offset += math.ceil(span * reader.timescale)


def _secrets_of(url: str) -> list[str]:
    """The userinfo and password of a URL, raw and percent-decoded, for scrubbing."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found = {parts.password or "", unquote(parts.password or "")}
    netloc = parts.netloc
    if "@" in netloc:
        found.add(netloc.rsplit("@", 1)[0])
    return sorted((s for s in found if len(s) >= 3), key=len, reverse=True)


__all__ = ["Backoff", "RtspPull", "SourceError", "redact_url"]
