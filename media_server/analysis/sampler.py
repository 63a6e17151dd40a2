"""The sampler: decode what analysis needs of one stream, in a worker thread.

The hub's tap calls `offer()` on the event loop with every item: it only appends to a
queue (never waits). The worker decodes the video (keyframes only when `fps` is 0 or when
keyframes come at least `fps` times a second, else every frame, since P-frames need
theirs) and hands `fps` pictures a second of media time,
scaled down to `width` in grey, to `on_picture`, still in the worker thread.

When the worker is more than MAX_BACKLOG packets behind, offer() stops queueing and skips
the stream's video up to its next keyframe; every packet skipped is counted (`skipped`,
in /metrics as courtcast_analysis_skipped_packets). The publisher and the other outputs
never notice.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

import av
import numpy as np
from av.video.codeccontext import VideoCodecContext

from media_server.media import Item, Packet, Skipped, StreamEnd, StreamStart, Track, video_track

log = logging.getLogger(__name__)

MAX_BACKLOG = 150  # video packets waiting: 5 s of 30 fps (a long GOP replayed at once fits)
_STOP = object()


@dataclass
class Picture:
    """One analysed picture: grey at the analysis width, its media time (s, from the
    publication's first packet) and wall-clock (arrival), and the frame it came from (for
    a snapshot)."""

    grey: np.ndarray
    media: float
    wall: float
    frame: av.VideoFrame


OnPicture = Callable[[Picture], None]
OnMarker = Callable[[StreamStart | StreamEnd], None]


class Sampler:
    def __init__(
        self,
        name: str,
        on_picture: OnPicture,
        on_marker: OnMarker,
        fps: float = 2.0,
        width: int = 320,
    ) -> None:
        self.name = name
        self.fps = fps
        self.width = width
        self.skipped = 0  # packets skipped because the worker was behind
        self.pictures = 0  # pictures handed on
        self.decoded = 0  # frames decoded
        self._on_picture = on_picture
        self._on_marker = on_marker
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        # video packets queued and taken: each counter written by one thread only (a shared
        # += from both could lose updates and drift), their difference is the backlog
        self._queued = 0
        self._taken = 0
        self._skipping = False
        self._video: Track | None = None  # loop side: the publication's video track
        self._closed = False
        # worker side
        self._decoder: VideoCodecContext | None = None
        self._track: Track | None = None
        self._want_keyframe = True
        self._base: float | None = None  # dts (s) of the publication's first video packet
        self._due = 0.0  # media time of the next picture
        self._last_key: float | None = None  # media time of the last keyframe
        self._key_interval: float | None = None  # between the last two keyframes
        self._thread = threading.Thread(target=self._run, name=f"analysis {name}", daemon=True)
        self._thread.start()

    # -- loop side: called by the hub's tap, must never block --------------------------

    def offer(self, item: Item) -> None:
        if self._closed:
            return
        if isinstance(item, Packet):
            video = self._video
            if video is None or item.track != video.index:
                return
            if self._skipping:
                if not item.keyframe:
                    self.skipped += 1
                    return
                self._skipping = False
            elif self._queued - self._taken >= MAX_BACKLOG:
                self._skipping = True
                self.skipped += 1
                self._queue.put(Skipped(0))
                return
            self._queued += 1
        elif isinstance(item, StreamStart):
            self._video = video_track(item.tracks)
            self._skipping = False
        elif isinstance(item, Skipped):
            return  # a tap is never behind; the marker is the sampler's own
        self._queue.put(item)

    def close(self) -> None:
        self._closed = True
        self._queue.put(_STOP)

    # -- worker side ---------------------------------------------------------------------

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._closed:
                return
            try:
                self._handle(item)  # type: ignore[arg-type]
            except Exception:  # a bug or a bad stream must not end analysis
                log.exception("analysis %s failed, again from the next keyframe", self.name)
                self._restart()

    def _handle(self, item: Item) -> None:
        if isinstance(item, Packet):
            self._taken += 1
            self._packet(item)
        elif isinstance(item, Skipped):
            self._restart()
        else:
            if isinstance(item, StreamStart):
                self._track = video_track(item.tracks)
                self._base = None
                self._due = 0.0
                self._last_key = self._key_interval = None
            self._restart()
            self._on_marker(item)

    def _restart(self) -> None:
        self._decoder = None
        self._want_keyframe = True

    def _packet(self, packet: Packet) -> None:
        track = self._track
        if track is None:
            return
        if self._want_keyframe:
            if not packet.keyframe:
                return
            self._want_keyframe = False
        if packet.keyframe:
            self._keyframe(packet.dts / track.timescale)
        if not packet.keyframe and self._keyframes_suffice():
            return
        if self._base is None:
            self._base = packet.dts / track.timescale
        if self._decoder is None:
            self._decoder = _decoder(track)
        source = av.Packet(packet.data)
        source.pts, source.dts = packet.pts, packet.dts
        try:
            frames = self._decoder.decode(source)
        except av.error.FFmpegError as exc:
            log.info("analysis %s: undecodable video (%s), from the next keyframe", self.name, exc)
            self._restart()
            return
        for frame in frames:
            self.decoded += 1
            self._sample(frame, track, packet.arrival)

    def _keyframe(self, at: float) -> None:
        if self._last_key is not None and at > self._last_key:
            self._key_interval = at - self._last_key
        self._last_key = at

    def _keyframes_suffice(self) -> bool:
        """Keyframes only when asked (fps 0), or when they alone come often enough for
        fps (a GOP of 1/fps or shorter): P-frames then cost decoding and give nothing."""
        if self.fps == 0:
            return True
        interval = self._key_interval
        return interval is not None and interval <= 1.05 / self.fps

    def _sample(self, frame: av.VideoFrame, track: Track, arrival: float) -> None:
        pts = frame.pts if frame.pts is not None else 0
        media = pts / track.timescale - (self._base or 0.0)
        if self.fps and media + 1e-3 < self._due:
            return
        if self.fps:  # on a grid of 1/fps, started again after a jump (a gap, a restart)
            step = 1 / self.fps
            self._due = media + step if media - self._due > step else self._due + step
        width = min(self.width, frame.width) & ~1
        height = max(2, round(frame.height * width / frame.width) & ~1)
        grey = frame.reformat(width=width, height=height, format="gray").to_ndarray()
        self.pictures += 1
        self._on_picture(Picture(grey, media, arrival, frame))


def _decoder(track: Track) -> VideoCodecContext:
    decoder = av.CodecContext.create({"h264": "h264", "h265": "hevc"}[track.codec], "r")
    assert isinstance(decoder, VideoCodecContext)
    decoder.extradata = track.config  # avcC / hvcC: the packets are length-prefixed
    decoder.thread_count = 1  # one core's share per stream, no frame-threading delay
    return decoder
