"""Hub -> aiortc: one viewer's tracks, fed from the stream's hub items, never decoded.

Two modes, both without re-encoding:
- shared (default): RTP payloads computed once per stream (egress.VideoPayloadCache) and
  sent at once, by a plain call, through the sender's rtp_out.RtpOut: a viewer costs
  only RTP headers, SRTP and the send, and no task wake-up of its own.
- pass-through: items are av.Packet in Annex-B, queued for aiortc's own send loop, which
  calls the codec's pack() for each viewer.

Every viewer of a stream is fed by the stream's one hub subscription (egress.Fanout). A
viewer joins it when its senders are ready (after ICE and DTLS are up), so it starts from
the hub's cached GOP at that moment. The cached frames are sent at once with timestamps
squeezed to one tick apart just before the live edge, so the browser shows the newest
picture at once instead of playing the GOP back in real time."""

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
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from media_server.codecs.bitstream import BitstreamError, nals_to_annexb
from media_server.codecs.h264 import parse_avcc_record
from media_server.hub import Hub
from media_server.media import Item, Packet, Skipped, StreamEnd, StreamStart, Track, video_track
from media_server.patches import aiortc_fast_sender
from media_server.source_audio import WEBRTC_CLOCKS, SourceAudio, SourceFrame
from media_server.webrtc import rtp_out
from media_server.webrtc.audio import OPUS_RATE, OpusFrame
from media_server.webrtc.egress import StreamEgress, frame_nals

log = logging.getLogger(__name__)

VIDEO_RATE = 90000
VIDEO_STEP = 3000  # one 30 fps frame: the gap left where a timeline restarts
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_RATE)
AUDIO_FRAMES_PER_S = 50  # 20 ms: the gap left where an audio timeline restarts
START_WAIT_S = 1.0  # a viewer whose other sender never starts gets what it can
MAX_QUEUED = 300  # items waiting for a sender that stopped asking: drop, resync on a key
B_FRAMES = (
    "the stream has B-frames (frames out of presentation order), which browsers "
    "do not decode over WebRTC: set the encoder to bframes=0 (zerolatency) or "
    "watch it over HLS"
)


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
    """A frame ready for RTP: payloads shared by all viewers, this viewer's timestamp
    (queued only while a track has no sender bound, e.g. in tests)."""

    payloads: list[bytes]
    timestamp: int


def use_prepacketized(sender: RTCRtpSender) -> None:
    """Make sender take shared payloads through rtp_out.RtpOut, bound to its FeedTrack
    (aiortc's own loop, encoder and track.recv() are then never used)."""
    aiortc_fast_sender.install(sender, rtp_out.RtpOut)


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
    """A track of one viewer: bound to its sender's RtpOut (shared payloads, sent at once),
    or a queue its aiortc sender reads (pass-through, and before a sender is bound)."""

    def __init__(self, kind: Literal["video", "audio"], feed: ViewerFeed) -> None:
        super().__init__()
        self.kind = kind
        self._feed = feed
        self._queue: asyncio.Queue[object | None] = asyncio.Queue()
        self.out: rtp_out.RtpOut | None = None

    def bind(self, out: rtp_out.RtpOut) -> None:
        """The sender is up: frames go straight to it from now on."""
        self.out = out
        self._feed.track_bound()

    def send(self, payloads: list[bytes], timestamp: int) -> bool:
        if self.out is not None:
            self.out.send_frame(payloads, timestamp)
            return True
        return self.put(EncodedFrame(payloads, timestamp))

    def put(self, item: object) -> bool:
        """False when the sender has fallen behind and the queue was dropped."""
        if self._queue.qsize() >= MAX_QUEUED:
            while not self._queue.empty():
                self._queue.get_nowait()
            return False
        self._queue.put_nowait(item)
        return True

    def end(self) -> None:
        if self.out is not None:
            self.out.stop()
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
    """One viewer: the stream's hub items (from egress.Fanout) routed to its video and
    audio FeedTracks, on this viewer's own timelines.

    Audio: the hub's Opus as it is, or its AAC made Opus (egress.audio); or, given
    source_audio, the camera's own frames (G.711, Opus) as they came, in the codec the
    viewer negotiated (source_audio.codec when the feed is made), with no transcoder."""

    def __init__(
        self,
        hub: Hub,
        egress: StreamEgress,
        *,
        video: bool,
        audio: bool,
        shared: bool = True,
        name: str = "webrtc viewer",
        request_keyframe: Callable[[str], None] | None = None,
        on_ended: Callable[[str], None] | None = None,
        source_audio: SourceAudio | None = None,
    ) -> None:
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
        self._started = False
        self._start_timer: asyncio.TimerHandle | None = None
        self._closed = False
        self._video_out = Timeline(VIDEO_STEP)
        self.source_audio = source_audio
        self.audio_codec = source_audio.codec if source_audio is not None else "opus"
        clock = WEBRTC_CLOCKS[self.audio_codec]
        self._audio_clock = fractions.Fraction(1, clock)
        self._audio_out = Timeline(clock // AUDIO_FRAMES_PER_S)
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
    def track_bound(self) -> None:
        """Start once every sender is bound, so no frame waits in a queue for one."""
        tracks = [t for t in (self.video_track, self.audio_track) if t is not None]
        if all(t.out is not None for t in tracks):
            self.start()
        elif self._start_timer is None:
            self._start_timer = asyncio.get_running_loop().call_later(START_WAIT_S, self.start)

    def start(self) -> None:
        """Join the stream's fan-out, starting from its cached GOP."""
        if self._started or self._closed:
            return
        self._started = True
        stream = self.hub.stream(self.stream_id)
        self._plan_burst(stream.gop(), stream.tracks)
        self.egress.fanout.join(self)
        if self.source_audio is not None and self.audio_track is not None:
            self.source_audio.attach(self._on_source_frame)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._start_timer is not None:
            self._start_timer.cancel()
        if self._started:
            self.egress.fanout.leave(self)
        if self.source_audio is not None:
            self.source_audio.detach(self._on_source_frame)
        self._stop_transcoded_audio()
        for track in (self.video_track, self.audio_track):
            if track is not None:
                track.end()

    def fail(self, reason: str) -> None:
        log.info("WHEP viewer %s of %s ends: %s", self.name, self.stream_id, reason)
        self.close()
        if self._on_ended is not None:
            self._on_ended(reason)

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
    def handle(self, item: Item) -> None:
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
            self.fail(f"the stream now carries {video.codec.upper()} video, not H.264")
            return
        try:
            params, length_size = parse_avcc_record(video.config) if video is not None else ([], 4)
        except BitstreamError as exc:
            self.fail(f"the stream's H.264 config is unusable: {exc}")
            return
        self._video = video
        self._params = tuple(params)
        self._length_size = length_size
        audio = next((t for t in tracks if not t.is_video), None)
        self._audio = audio if self.audio_track is not None else None
        if self.source_audio is None:
            self._set_transcoding(self._audio is not None and self._audio.codec == "aac")
        elif self._audio is not None and self._audio.source_codec != self.audio_codec:
            now = self._audio.source_codec or self._audio.codec
            self.fail(f"the stream's audio is now {now}, not {self.audio_codec} as negotiated")
            return
        self._await_key = True
        self._last_pts = -(1 << 62)
        self._video_out.restart()
        self._audio_out.restart()

    def _on_video(self, packet: Packet) -> None:
        assert self._video is not None and self.video_track is not None
        if packet.pts < self._last_pts and not packet.keyframe:
            self.fail(B_FRAMES)
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
            sent = self._send_video(packet, out)
        except BitstreamError as exc:
            log.warning("stream %s: bad H.264 frame skipped: %s", self.stream_id, exc)
            self._await_key = True
            return
        if not sent:
            self._await_key = True
            return
        self.stats.video_frames += 1
        if not self.stats.first_frame_at:
            self.stats.first_frame_at = time.time()

    def _send_video(self, packet: Packet, ts: int) -> bool:
        assert self.video_track is not None
        if self.shared:
            payloads = self.egress.video.payloads(packet, self._params, self._length_size)
            return self.video_track.send(payloads, ts)
        nals = frame_nals(packet, self._params, self._length_size)
        av_packet = av.Packet(nals_to_annexb(nals))
        av_packet.pts = ts
        av_packet.time_base = VIDEO_TIME_BASE
        return self.video_track.put(av_packet)

    def _on_audio(self, packet: Packet) -> None:
        assert self._audio is not None
        if self._skip_audio:
            self._skip_audio -= 1  # cached audio is history: only live audio is played
            return
        if self._audio.codec == "opus" and self.source_audio is None:
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

    def _on_source_frame(self, frame: SourceFrame) -> None:
        """The camera's own audio frame (source_audio.py), sent as it came."""
        if self._audio is not None and frame.codec == self.audio_codec:
            self._send_audio(frame.data, frame.timestamp)

    def _send_audio(self, data: bytes, ts: int) -> None:
        if self.audio_track is None:
            return
        out = self._audio_out.map(ts)
        if self.shared:
            sent = self.audio_track.send([data], out)
        else:
            av_packet = av.Packet(data)
            av_packet.pts = out
            av_packet.time_base = self._audio_clock
            sent = self.audio_track.put(av_packet)
        if sent:
            self.stats.audio_frames += 1
