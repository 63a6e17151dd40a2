"""The worker thread of a pull: connect, read, hand over, retry.

The one blocking thing, PyAV's demuxer, runs here. Packets are copied, never decoded,
converted by the track readers (tracks.py) and handed to the event loop as hand-over
items, in order, through the pull's send(). A dropped camera is retried with a growing,
jittered wait that resets once the camera has stayed up for a while; each connection is
a session, and a new session a new publication.

The loop talks back through two things only: the stopping event, and leave(), which
asks the worker to drop a session the hub no longer takes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import av
import av.container
import av.error

from core.redact import redact_url
from media_server.codecs.bitstream import BitstreamError
from media_server.media import Packet, SourceTrack, Track, VideoCodec
from media_server.patches.pyav_interrupt_clock import CLOCK
from media_server.rtsp.sender_clock import SenderClock
from media_server.rtsp.tracks import AUDIO_NAMES, TrackReader, TranscodingReader

if TYPE_CHECKING:
    from media_server.rtsp.pull import RtspPull

log = logging.getLogger(__name__)

VIDEO_CODECS: dict[str, VideoCodec] = {"h264": "h264", "hevc": "h265"}  # PyAV's names


class SourceError(Exception):
    """The source answered, but with nothing we can publish (message for the user)."""


# -- hand-over items (worker thread -> event loop) --


@dataclass(frozen=True, slots=True)
class Publish:
    tracks: tuple[Track, ...]
    session: int
    source: tuple[SourceTrack, ...] = ()  # every track of the source, and its fate
    # the codec of the camera's own audio that will reach Stream.source_audio ("" none);
    # known now, though the audio itself may be held until the camera's sender report
    source_audio: str = ""


@dataclass(frozen=True, slots=True)
class NewTracks:
    tracks: tuple[Track, ...]


@dataclass(frozen=True, slots=True)
class End:
    reason: str


@dataclass(frozen=True, slots=True)
class StateChange:
    state: str
    reason: str
    reconnects: int


Handover = Packet | Publish | NewTracks | End | StateChange


class PullWorker:
    """Pulls pull's source until its stopping event is set; run() is the thread's body."""

    def __init__(
        self,
        pull: RtspPull,
        open_source: Callable[[], av.container.InputContainer],
        send: Callable[[Handover], None],
        stopping: threading.Event,
    ) -> None:
        self.pull = pull  # what to pull and how: stream id, safe URL, timeouts, backoff
        self._open = open_source
        self._send = send
        self._stopping = stopping
        self._secrets = _secrets_of(pull.url)
        self.reconnects = 0
        self.next_retry_s = 0.0
        self._session = 0
        self._leave_session = -1  # the loop asks the worker to drop this session
        self._leave_reason = ""
        self._last_reason = ""
        self._dropped: dict[int, str] = {}  # source stream index -> why it is not carried

    def leave(self, session: int, reason: str) -> None:
        """Drop `session` (called from the loop: the hub evicted or refused it)."""
        self._leave_reason = reason
        self._leave_session = session  # read by the worker: set last

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                self._attempt()
        finally:
            CLOCK.release(threading.current_thread())

    def _attempt(self) -> None:
        pull = self.pull
        self._session += 1
        hint = f"reconnecting after: {self._last_reason}" if self.reconnects else ""
        self._send(StateChange("connecting", hint, self.reconnects))
        started = time.monotonic()
        live_since: list[float] = []
        try:
            self._pull(live_since)
            reason = "the source ended the stream"
        except (av.error.FFmpegError, OSError, BitstreamError, SourceError) as exc:
            reason = self._reason(exc)
        self._last_reason = reason
        if self._stopping.is_set():
            self._send(End(reason))
            return
        if live_since and time.monotonic() - live_since[0] >= pull.stable_s:
            pull.backoff.reset()
        self.next_retry_s = pull.backoff.next()
        # the state before the end: whoever sees the stream end (API, tests) sees why
        self._send(StateChange("failed", reason, self.reconnects))
        self._send(End(reason))
        log.warning(
            "stream %s: %s failed after %.1f s: %s; retry in %.1f s",
            pull.stream_id,
            pull.safe_url,
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

    def _readers(self, container: av.container.InputContainer) -> dict[int, TrackReader]:
        video = next(
            (s for s in container.streams.video if s.codec_context.name in VIDEO_CODECS), None
        )
        if video is None:
            found = ", ".join(s.codec_context.name for s in container.streams.video) or "none"
            raise SourceError(f"no H.264/H.265 video track (video found: {found})")
        readers = {video.index: TrackReader(0, video, VIDEO_CODECS[video.codec_context.name])}
        self._dropped = {}
        for stream in container.streams:
            if stream.index in readers:
                continue
            if stream.type != "audio":
                self._dropped[stream.index] = f"{stream.type} tracks are not carried"
            elif len(readers) > 1:
                self._dropped[stream.index] = "a second audio track (the first is carried)"
            elif stream.codec_context.name == "aac":
                readers[stream.index] = TrackReader(1, stream, "aac")
            else:
                try:  # AAC for every output, made here once (media_server/ingest_audio.py)
                    readers[stream.index] = TranscodingReader(1, stream)
                except (av.error.FFmpegError, ValueError) as exc:
                    name = stream.codec_context.name
                    self._dropped[stream.index] = f"cannot transcode {name}: {exc}"
        return readers

    def _source_tracks(
        self, container: av.container.InputContainer, readers: dict[int, TrackReader]
    ) -> tuple[SourceTrack, ...]:
        out = []
        for stream in container.streams:
            name = stream.codec_context.name
            reader = readers.get(stream.index)
            if isinstance(reader, TranscodingReader):
                name = reader.transcoder.source.name
                state = f"transcoded from {name}"
            elif reader is not None:
                name, state = reader.codec, "carried"
            else:
                name = AUDIO_NAMES.get(name, name)
                state = f"dropped: {self._dropped.get(stream.index, 'not carried')}"
            out.append(SourceTrack(stream.type, name, state))
        return tuple(out)

    def _describe(
        self, container: av.container.InputContainer, readers: dict[int, TrackReader]
    ) -> None:
        tracks = ", ".join(
            f"{t.kind} {t.codec}: {t.state}" for t in self._source_tracks(container, readers)
        )
        log.info(
            "stream %s: connected to %s (%s): %s",
            self.pull.stream_id,
            self.pull.safe_url,
            "file" if self.pull.is_file else self.pull.transport,
            tracks,
        )
        if self._dropped:
            log.warning("stream %s: %s", self.pull.stream_id, tracks)

    def _forward(
        self,
        container: av.container.InputContainer,
        readers: dict[int, TrackReader],
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
                    source = self._source_tracks(container, readers)
                    passing = [
                        r.transcoder.source.name
                        for r in readers.values()
                        if isinstance(r, TranscodingReader) and r.webrtc_clock
                    ]
                    self._send(Publish(tracks, self._session, source, "".join(passing[:1])))
                    live_since.append(time.monotonic())
                    published = True
                elif reader.new_track is not None:
                    reader.new_track = None
                    self._send(NewTracks(tuple(r.track for r in readers.values())))
                self._send(out)

    def _packets(
        self, container: av.container.InputContainer, readers: dict[int, TrackReader]
    ) -> Iterator[tuple[av.Packet[Any], float]]:
        """Packets with their arrival time; a file is looped and paced in real time."""
        timeout_s = self.pull.timeout_s
        if not self.pull.is_file:
            last = time.monotonic()
            lead = next(r.source_index for r in readers.values() if r.is_video)
            clock = SenderClock(container, lead, self.pull.stream_id)
            try:
                for packet in container.demux([container.streams[i] for i in readers]):
                    last = time.monotonic()
                    if packet.size:
                        yield from clock.feed(packet, time.time())
            except av.error.FFmpegError:
                if time.monotonic() - last < timeout_s * 0.95 or self._stopping.is_set():
                    raise
                raise SourceError(f"no data for {timeout_s:g} s (timeout)") from None
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
            text = f"no answer within {self.pull.timeout_s:g} s (timeout)"
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

    def wait(self, packet: av.Packet[Any], reader: TrackReader) -> None:
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is None:
            return
        media_s = float(ts * (packet.time_base or 0)) + reader.offset / reader.timescale
        if self._origin is None:
            self._origin = (time.monotonic(), media_s)
        delay = self._origin[0] + media_s - self._origin[1] - time.monotonic()
        if delay > 0:
            self._stopping.wait(delay)


def _next_loop(readers: dict[int, TrackReader]) -> None:
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
