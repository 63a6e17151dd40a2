"""Hub -> aiortc: one viewer's tracks, fed from its hub subscription, never decoded.

aiortc's RTCRtpSender asks its track for the next item: an av.Frame is encoded, anything
else goes to the codec's `pack()`. Two modes, both without re-encoding:
- shared (default): items are EncodedFrame, RTP payloads computed once per stream
  (egress.VideoPayloadCache); the sender's encoder is replaced by PrepacketizedEncoder,
  whose pack() hands them over, so a viewer costs only RTP headers, SRTP and the send.
- pass-through: items are av.Packet in Annex-B, packetized by aiortc for each viewer.

A viewer subscribes to the hub when its sender first asks for media (after ICE and DTLS
are up), so it starts from the hub's cached GOP at that moment. The cached frames are
sent at once with timestamps squeezed to one tick apart just before the live edge, so the
browser shows the newest picture at once instead of playing the GOP back in real time.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import av
from aiortc import RTCRtpSender
from aiortc.codecs.base import Encoder
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame

from media_server.hub import Hub, Subscription
from media_server.media import Packet, Skipped, StreamEnd, StreamStart, Track, video_track
from media_server.webrtc import fastsend
from media_server.webrtc.audio import OPUS_FRAME, OPUS_RATE, OpusFrame
from media_server.webrtc.egress import StreamEgress, frame_nals
from media_server.webrtc.h264 import H264Error, parse_avcc_config, to_annexb

log = logging.getLogger(__name__)

VIDEO_RATE = 90000
VIDEO_STEP = 3000  # one 30 fps frame: the gap left where a timeline restarts
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_RATE)
AUDIO_TIME_BASE = fractions.Fraction(1, OPUS_RATE)
MAX_QUEUED = 300  # items waiting for a sender that stopped asking: drop, resync on a key
B_FRAMES = ("the stream has B-frames (frames out of presentation order), which browsers "
            "do not decode over WebRTC: set the encoder to bframes=0 (zerolatency) or "
            "watch it over HLS")


def reorders(packets: list[Packet], track: int) -> bool:
    """Does this video come in decode order != presentation order (B-frames)?"""
    last = None
    for p in packets:
        if p.track == track:
            if last is not None and p.pts < last and not p.keyframe:
                return True
            last = p.pts
    return False


@dataclass(slots=True)
class EncodedFrame:
    """A frame ready for RTP: payloads shared by all viewers, this viewer's timestamp."""

    payloads: list[bytes]
    timestamp: int


class PrepacketizedEncoder(Encoder):
    """Stands in for aiortc's codec in a sender whose track yields EncodedFrame."""

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        raise TypeError("a pre-packetized track never yields raw frames")

    def pack(self, packet: EncodedFrame) -> tuple[list[bytes], int]:  # type: ignore[override]
        return packet.payloads, packet.timestamp


def use_prepacketized(sender: RTCRtpSender) -> None:
    """Make sender send EncodedFrame payloads as they are (aiortc 1.16 internals)."""
    attr = "_RTCRtpSender__encoder"
    if not hasattr(sender, attr):
        raise RuntimeError("aiortc internals changed: RTCRtpSender has no __encoder")
    setattr(sender, attr, PrepacketizedEncoder())
    fastsend.install(sender)


class Timeline:
    """One continuous, increasing output timeline over sources that restart or jump."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.offset: int | None = None
        self.last: int | None = None

    def restart(self) -> None:
        self.offset = None

    def map(self, ts: int) -> int:
        if self.offset is None:
            self.offset = (0 if self.last is None else self.last + self.step) - ts
        out = ts + self.offset
        if self.last is not None and out <= self.last:
            self.offset += self.last + self.step - out
            out = self.last + self.step
        self.last = out
        return out


class FeedTrack(MediaStreamTrack):
    """A track an aiortc sender reads; the ViewerFeed puts items into it."""

    def __init__(self, kind: Literal["video", "audio"], feed: ViewerFeed) -> None:
        super().__init__()
        self.kind = kind
        self._feed = feed
        self._queue: asyncio.Queue[object | None] = asyncio.Queue()

    def put(self, item: object) -> bool:
        """False when the sender has fallen behind and the queue was dropped."""
        if self._queue.qsize() >= MAX_QUEUED:
            while not self._queue.empty():
                self._queue.get_nowait()
            return False
        self._queue.put_nowait(item)
        return True

    def end(self) -> None:
        self._queue.put_nowait(None)

    async def recv(self) -> object:  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        self._feed.start()
        item = await self._queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        return item


@dataclass
class FeedStats:
    video_frames: int = 0
    audio_frames: int = 0
    waited_for_key: int = 0
    first_frame_at: float = 0.0


class ViewerFeed:
    """One viewer: a hub subscription routed to its video and audio FeedTracks."""

    def __init__(self, hub: Hub, egress: StreamEgress, *, video: bool, audio: bool,
                 shared: bool = True, name: str = "webrtc viewer",
                 request_keyframe: Callable[[str], None] | None = None,
                 on_ended: Callable[[str], None] | None = None) -> None:
        self.hub = hub
        self.egress = egress
        self.stream_id = egress.stream_id
        self.name = name
        self.shared = shared
        self.video_track = FeedTrack("video", self) if video else None
        self.audio_track = FeedTrack("audio", self) if audio else None
        self.stats = FeedStats()
        self._request_keyframe = request_keyframe
        self._on_ended = on_ended
        self._task: asyncio.Task[None] | None = None
        self._sub: Subscription | None = None
        self._closed = False
        self._video_out = Timeline(VIDEO_STEP)
        self._audio_out = Timeline(OPUS_FRAME)
        self._video: Track | None = None
        self._params: tuple[bytes, ...] = ()
        self._length_size = 4
        self._audio: Track | None = None
        self._transcoding = False
        self._await_key = True
        self._burst: list[int] = []
        self._skip_audio = 0
        self._last_pts = -(1 << 62)

    # -- lifecycle --
    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._pump(), name=f"whep {self.name}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
        if self._sub is not None:
            self._sub.close()
        self._stop_transcoded_audio()
        for track in (self.video_track, self.audio_track):
            if track is not None:
                track.end()

    def _fail(self, reason: str) -> None:
        log.info("WHEP viewer %s of %s ends: %s", self.name, self.stream_id, reason)
        self.close()
        if self._on_ended is not None:
            self._on_ended(reason)

    async def _pump(self) -> None:
        stream = self.hub.stream(self.stream_id)
        self._plan_burst(stream.gop(), stream.tracks)
        self._sub = sub = self.hub.subscribe(self.stream_id, self.name)
        try:
            while True:
                self._handle(await sub.get())
        except EOFError:
            pass

    def _plan_burst(self, gop: list[Packet], tracks: tuple[Track, ...]) -> None:
        """Squeeze the cached GOP's video timestamps just before its newest frame."""
        video = video_track(tracks)
        if video is None:
            return
        frames = [p for p in gop if p.track == video.index]
        self._skip_audio = len(gop) - len(frames)
        if not frames and self.video_track is not None:
            self._ask_keyframe()
        if frames:
            newest = frames[-1].dts * VIDEO_RATE // video.timescale
            self._burst = [newest - (len(frames) - 1 - i) for i in range(len(frames))]

    def _ask_keyframe(self) -> None:
        if self._request_keyframe is not None:
            self._request_keyframe(self.stream_id)

    # -- items from the hub --
    def _handle(self, item: object) -> None:
        if isinstance(item, Packet):
            if self._video is not None and item.track == self._video.index:
                self._on_video(item)
            elif self._audio is not None and item.track == self._audio.index:
                self._on_audio(item)
        elif isinstance(item, StreamStart):
            self._on_start(item.tracks)
        elif isinstance(item, Skipped):
            self._await_key = True
            self._ask_keyframe()
        elif isinstance(item, StreamEnd):
            log.debug("WHEP viewer %s: publisher left (%s), waiting", self.name, item.reason)

    def _on_start(self, tracks: tuple[Track, ...]) -> None:
        video = video_track(tracks) if self.video_track is not None else None
        if video is not None and video.codec != "h264":
            self._fail(f"the stream now carries {video.codec.upper()} video, not H.264")
            return
        try:
            config = parse_avcc_config(video.config) if video is not None else None
        except H264Error as exc:
            self._fail(f"the stream's H.264 config is unusable: {exc}")
            return
        self._video = video
        self._params = config.parameter_sets if config else ()
        self._length_size = config.length_size if config else 4
        audio = next((t for t in tracks if not t.is_video), None)
        self._audio = audio if self.audio_track is not None else None
        self._set_transcoding(self._audio is not None and self._audio.codec == "aac")
        self._await_key = True
        self._last_pts = -(1 << 62)
        self._video_out.restart()
        self._audio_out.restart()

    def _on_video(self, packet: Packet) -> None:
        assert self._video is not None and self.video_track is not None
        if packet.pts < self._last_pts and not packet.keyframe:
            self._fail(B_FRAMES)
            return
        self._last_pts = packet.pts
        if self._await_key:
            if not packet.keyframe:
                self.stats.waited_for_key += 1
                return
            self._await_key = False
        if self._burst:
            ts = self._burst.pop(0)
        else:  # decode order: RTP timestamps must not go back
            ts = packet.dts * VIDEO_RATE // self._video.timescale
        out = self._video_out.map(ts)
        try:
            item = self._video_item(packet, out)
        except H264Error as exc:
            log.warning("stream %s: bad H.264 frame skipped: %s", self.stream_id, exc)
            self._await_key = True
            return
        if not self.video_track.put(item):
            self._await_key = True
            return
        self.stats.video_frames += 1
        if not self.stats.first_frame_at:
            self.stats.first_frame_at = time.time()

    def _video_item(self, packet: Packet, ts: int) -> object:
        if self.shared:
            payloads = self.egress.video.payloads(packet, self._params, self._length_size)
            return EncodedFrame(payloads, ts)
        nals = frame_nals(packet, self._params, self._length_size)
        av_packet = av.Packet(to_annexb(nals))
        av_packet.pts = ts
        av_packet.time_base = VIDEO_TIME_BASE
        return av_packet

    def _on_audio(self, packet: Packet) -> None:
        assert self._audio is not None
        if self._skip_audio:
            self._skip_audio -= 1  # cached audio is history: only live audio is played
            return
        if self._audio.codec == "opus":
            self._send_audio(packet.data, packet.pts * OPUS_RATE // self._audio.timescale)

    # -- audio --
    def _set_transcoding(self, on: bool) -> None:
        if on and not self._transcoding:
            self.egress.audio.attach(self._on_opus_frame)
        elif not on:
            self._stop_transcoded_audio()
        self._transcoding = on

    def _stop_transcoded_audio(self) -> None:
        if self._transcoding:
            self.egress.audio.detach(self._on_opus_frame)
            self._transcoding = False

    def _on_opus_frame(self, frame: OpusFrame) -> None:
        if frame.restart:
            self._audio_out.restart()
        self._send_audio(frame.data, frame.timestamp)

    def _send_audio(self, data: bytes, ts: int) -> None:
        if self.audio_track is None:
            return
        out = self._audio_out.map(ts)
        if self.shared:
            item: object = EncodedFrame([data], out)
        else:
            av_packet = av.Packet(data)
            av_packet.pts = out
            av_packet.time_base = AUDIO_TIME_BASE
            item = av_packet
        if self.audio_track.put(item):
            self.stats.audio_frames += 1
