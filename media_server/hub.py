"""The hub: one bus per stream id, packets fanned out to subscribers without copies.

Ingests (RTMP, RTSP pull, WHIP) publish; outputs (LL-HLS, RTMP play, WHEP, the recorder)
attach a consumer (media_server/consumer.py: a bounded queue read by a task, or a Tap
called inside the push). The hub keeps the current GOP and replays it, after the stream's
start, to every consumer that attaches, so a new one starts at once from the last keyframe.

All methods run on the event loop. Blocking ingests (PyAV in a thread) hand packets over
with loop.call_soon_threadsafe.

Scale-out seam (DESIGN.md §9): `Hub.find` answers for this node only. A locator that also
answers "elsewhere: node X" sits above it and starts an on-demand relay that publishes into
this hub like any other ingest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from media_server.consumer import Consumer, QueuedConsumer
from media_server.media import (
    Item,
    Packet,
    SourceTrack,
    StreamEnd,
    StreamStart,
    Track,
    video_track,
)
from media_server.source_audio import SourceAudio, SourcePacket

log = logging.getLogger(__name__)

DEFAULT_QUEUE_PACKETS = 600  # ~8 s of 30 fps video + 48 kHz AAC
MAX_GOP_PACKETS = 3000  # a stream without keyframes must not grow the cache for ever
MAX_GOP_BYTES = 32 * 1024 * 1024
STALE_PUBLISHER_S = 5.0  # a publisher silent this long may be taken over


class StreamBusy(Exception):
    """A second publisher tried to take a stream whose publisher is alive."""


@dataclass
class StreamStats:
    """Counters kept on the hot path; rates are derived when someone asks."""

    packets: int = 0
    bytes: int = 0
    video_frames: int = 0
    keyframes: int = 0
    drops: int = 0
    gop_seconds: float = 0.0
    gop_frames: int = 0
    fps: float = 0.0
    bitrate_bps: float = 0.0
    _win_start: float = 0.0  # the rate window: its start, and the counters then
    _win_bytes: int = 0
    _win_frames: int = 0
    _last_key_at: float | None = None
    _last_key_frame: int = 0  # video_frames counted with the last keyframe

    def count(self, packet: Packet, size: int, is_video: bool, timescale: int) -> None:
        # the hot path: plain counters; gop and window work at keyframes and once a second
        self.packets += 1
        self.bytes += size
        if is_video:
            self.video_frames += 1
            if packet.keyframe:
                self._keyframe(packet.dts / timescale)
        if packet.arrival - self._win_start >= 1.0:
            self._roll_window(packet.arrival)

    def _keyframe(self, at: float) -> None:
        self.keyframes += 1
        if self._last_key_at is not None and at > self._last_key_at:
            self.gop_seconds = at - self._last_key_at
            self.gop_frames = self.video_frames - self._last_key_frame
        self._last_key_at = at
        self._last_key_frame = self.video_frames

    def _roll_window(self, now: float) -> None:
        if self._win_start:  # not the first packet: a window of at least a second ended
            span = now - self._win_start
            self.fps = (self.video_frames - self._win_frames) / span
            self.bitrate_bps = (self.bytes - self._win_bytes) * 8 / span
        self._win_start, self._win_bytes, self._win_frames = now, self.bytes, self.video_frames

    def reset_rates(self) -> None:
        self.fps = self.bitrate_bps = 0.0
        self._win_start = 0.0
        self._last_key_at = None


class Publication:
    """The publisher's handle on a stream. Only the live publication may push."""

    def __init__(
        self,
        stream: Stream,
        source: str,
        on_evict: Callable[[str], None] | None,
        on_keyframe_request: Callable[[], None] | None = None,
    ) -> None:
        self.stream = stream
        self.source = source
        self.started = time.time()
        self.last_packet = time.monotonic()
        self.alive = True
        self.keyframe_requests = 0
        self._on_evict = on_evict
        self._on_keyframe_request = on_keyframe_request

    def request_keyframe(self) -> bool:
        """Ask the ingest for a keyframe now (WHIP: RTCP PLI). False when it cannot be
        asked (RTMP, files: the next keyframe comes when the encoder sends it)."""
        if not self.alive or self._on_keyframe_request is None:
            return False
        self.keyframe_requests += 1
        self._on_keyframe_request()
        return True

    def push(self, packet: Packet) -> None:
        if self.alive:
            self.last_packet = time.monotonic()
            self.stream.push(packet)

    def push_source_audio(self, packet: SourcePacket) -> None:
        """The source's own audio frame (G.711, Opus) beside the hub's AAC transcode of
        it, for WebRTC viewers that take it as it is (source_audio.py)."""
        if self.alive:
            self.stream.source_audio.push(packet)

    def expect_source_audio(self, codec: str) -> None:
        """The codec of the source audio frames this publication will push: WebRTC viewers
        who come before the first of them (an RTSP camera's audio waits for its sender
        report) are offered it already."""
        if self.alive and codec:
            self.stream.source_audio.expect(codec)

    def set_tracks(self, tracks: tuple[Track, ...]) -> None:
        """New codec config mid-stream (a new sequence header): subscribers restart."""
        if self.alive:
            self.stream.set_tracks(tracks)

    def describe_source(self, tracks: tuple[SourceTrack, ...]) -> None:
        """Every track the source sends and what became of it (carried, transcoded,
        dropped: why), for stats and events."""
        if self.alive:
            self.stream.source_tracks = tracks

    def close(self, reason: str = "publisher left") -> None:
        if self.alive:
            self.alive = False
            self.stream.unpublish(self, reason)

    def evict(self, reason: str) -> None:
        """Taken over by a newer publisher: tell the ingest to drop its connection."""
        self.alive = False
        if self._on_evict is not None:
            self._on_evict(reason)


@dataclass
class SourceState:
    """Where a pulled source (RTSP camera) stands: connecting, live or failed: reason."""

    state: str = "idle"
    reason: str = ""
    since: float = field(default_factory=time.time)
    reconnects: int = 0


ConsumerT = TypeVar("ConsumerT", bound=Consumer)


class Stream:
    """One bus: the live publication (if any), the GOP cache and the subscribers."""

    def __init__(self, stream_id: str, ended: Callable[[str], None] | None = None) -> None:
        self.id = stream_id
        self._ended = ended  # told the stream id when a publication ends (Hub.on_unpublish)
        self.tracks: tuple[Track, ...] = ()
        self.epoch = 0
        self.publication: Publication | None = None
        # replaced, never changed in place: push() iterates it with no copy per packet while
        # a subscriber may leave (or join) during the offer
        self.subscribers: list[Consumer] = []
        self.stats = StreamStats()
        self.source = SourceState()
        self.source_tracks: tuple[SourceTrack, ...] = ()  # set by the ingest per publication
        self.source_audio = SourceAudio()  # the source's audio as sent, for WebRTC only
        self.last_end_reason = ""
        self._gop: list[Packet] = []
        self._gop_bytes = 0
        self._video_index: int | None = None
        self._timescales: tuple[int, ...] = ()
        self.listeners: list[Callable[[Stream], None]] = []

    @property
    def realtime(self) -> bool:
        """A subscriber shows frames as they arrive (WebRTC), so the ingest may not hold
        them back (media_server/rtmp/read_batching.py)."""
        return any(sub.realtime for sub in self.subscribers)

    @property
    def live(self) -> bool:
        return self.publication is not None and self.publication.alive

    @property
    def uptime(self) -> float:
        return time.time() - self.publication.started if self.live and self.publication else 0.0

    def gop(self) -> list[Packet]:
        """The packets since the last video keyframe (a copy of the list, not the data)."""
        return list(self._gop)

    def request_keyframe(self) -> bool:
        """Any subscriber (viewer, recorder) asks the live ingest for a keyframe; False
        when nobody publishes or the ingest cannot be asked."""
        return self.publication is not None and self.publication.request_keyframe()

    # -- publisher path --
    def start(self, publication: Publication, tracks: tuple[Track, ...]) -> None:
        self.publication = publication
        self.source_tracks = ()
        self.source_audio.reset()
        self.epoch += 1
        self.stats.reset_rates()
        self.set_tracks(tracks)

    def set_tracks(self, tracks: tuple[Track, ...]) -> None:
        self.tracks = tracks
        video = video_track(tracks)
        self._video_index = video.index if video else None
        self._timescales = tuple(t.timescale for t in tracks)
        self._gop, self._gop_bytes = [], 0
        marker = StreamStart(tracks, self.epoch)
        for sub in self.subscribers:
            sub.offer(marker)
        self._notify()

    def push(self, packet: Packet) -> None:
        is_video = packet.track == self._video_index
        if not 0 <= packet.track < len(self._timescales):
            return  # a packet for a track that was never announced
        size = len(packet.data)
        self.stats.count(packet, size, is_video, self._timescales[packet.track])
        self._cache(packet, size, is_video)
        for sub in self.subscribers:
            sub.offer(packet)

    def _cache(self, packet: Packet, size: int, is_video: bool) -> None:
        if is_video and packet.keyframe:
            self._gop, self._gop_bytes = [packet], size
            return
        if self._video_index is None:
            # audio only: keep about a second so a new listener starts at once
            if len(self._gop) >= 50:
                self._gop_bytes -= len(self._gop.pop(0).data)
        elif not self._gop:
            return  # no keyframe yet: nothing a subscriber could start from
        if len(self._gop) >= MAX_GOP_PACKETS or self._gop_bytes >= MAX_GOP_BYTES:
            self._gop, self._gop_bytes = [], 0
            return
        self._gop.append(packet)
        self._gop_bytes += size

    def unpublish(self, publication: Publication, reason: str) -> None:
        if self.publication is not publication:
            return
        self.publication = None
        self.last_end_reason = reason
        self.source_audio.reset()
        self._gop, self._gop_bytes = [], 0
        self.stats.reset_rates()
        marker = StreamEnd(reason)
        for sub in self.subscribers:
            sub.offer(marker)
        self._notify()
        if self._ended is not None:
            self._ended(self.id)

    # -- consumer path --
    def subscribe(self, name: str, max_packets: int) -> QueuedConsumer:
        return self.attach(QueuedConsumer(self, name, max_packets))

    def attach(self, consumer: ConsumerT) -> ConsumerT:
        """Add a consumer of any kind: it is offered the replay, then everything pushed."""
        self.replay(consumer.offer)
        self.subscribers = [*self.subscribers, consumer]
        self._notify()
        return consumer

    def replay(self, offer: Callable[[Item], None]) -> None:
        """Hand offer what a reader joining now starts from: the live publication's start
        and the cached GOP (nothing while nobody publishes). attach() does this for every
        consumer; a consumer that serves several readers (the WebRTC fan-out) does it for
        each one that joins it later."""
        if self.live:
            offer(StreamStart(self.tracks, self.epoch))
            for packet in self._gop:
                offer(packet)

    def unsubscribe(self, consumer: Consumer) -> None:
        if consumer in self.subscribers:
            self.subscribers = [s for s in self.subscribers if s is not consumer]
            self._notify()

    def _notify(self) -> None:
        for listener in list(self.listeners):
            listener(self)


class Hub:
    """All streams of this node by id."""

    def __init__(self, stale_publisher_s: float = STALE_PUBLISHER_S) -> None:
        self._streams: dict[str, Stream] = {}
        self.stale_publisher_s = stale_publisher_s
        # called with the stream id when a publication starts (the recorder starts
        # recordings of streams that are recorded while live, before the GOP rolls over)
        self.on_publish: list[Callable[[str], None]] = []
        # called with the stream id when a publication ends (news of streams going offline)
        self.on_unpublish: list[Callable[[str], None]] = []

    def find(self, stream_id: str) -> Stream | None:
        return self._streams.get(stream_id)

    def stream(self, stream_id: str) -> Stream:
        """The stream with this id, created idle if new (a recorder may wait for it)."""
        found = self._streams.get(stream_id)
        if found is None:
            found = self._streams[stream_id] = Stream(stream_id, self._ended)
        return found

    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    def _ended(self, stream_id: str) -> None:
        for callback in list(self.on_unpublish):
            callback(stream_id)

    def publish(
        self,
        stream_id: str,
        tracks: tuple[Track, ...],
        source: str,
        on_evict: Callable[[str], None] | None = None,
        on_keyframe_request: Callable[[], None] | None = None,
    ) -> Publication:
        """Start publishing. Refused while another publisher is alive and sending; a
        publisher silent for stale_publisher_s (a dead connection not yet noticed) is
        taken over, and subscribers see a new epoch (a discontinuity).
        on_keyframe_request: how this ingest makes its source send a keyframe, if it can."""
        stream = self.stream(stream_id)
        old = stream.publication
        if old is not None and old.alive:
            silent = time.monotonic() - old.last_packet
            if silent < self.stale_publisher_s:
                raise StreamBusy(
                    f"stream {stream_id!r} is already being published by {old.source} "
                    f"(live since {time.strftime('%H:%M:%S', time.localtime(old.started))})"
                )
            log.warning(
                "stream %s: publisher %s silent %.1f s, taken over by %s",
                stream_id,
                old.source,
                silent,
                source,
            )
            stream.unpublish(old, f"taken over by {source}")
            old.evict(f"taken over by {source}")
        publication = Publication(stream, source, on_evict, on_keyframe_request)
        stream.start(publication, tracks)
        for callback in list(self.on_publish):
            callback(stream_id)
        return publication

    def subscribe(
        self, stream_id: str, name: str, max_packets: int = DEFAULT_QUEUE_PACKETS
    ) -> QueuedConsumer:
        return self.stream(stream_id).subscribe(name, max_packets)

    def drop_idle(self, keep: Iterable[str] = ()) -> None:
        """Forget streams with neither publisher nor subscribers, except those in keep
        (pulled cameras: their source state must survive while they are down)."""
        kept = set(keep)
        for sid, stream in list(self._streams.items()):
            if sid in kept:
                continue
            if not stream.live and not stream.subscribers and not stream.listeners:
                del self._streams[sid]
