"""Audio for WebRTC viewers: Opus passes through; AAC becomes Opus once per stream
(unless the viewer takes the camera's own G.711 or Opus: media_server/source_audio.py).

Browsers take no AAC over WebRTC. A stream's AAC is decoded, resampled to 48 kHz stereo
and encoded to 20 ms Opus frames by one transcoder per stream, whatever the number of
viewers, in a worker thread so the event loop never waits on a codec.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import av

from media_server.consumer import QueuedConsumer
from media_server.hub import Hub
from media_server.media import Packet, Skipped, StreamEnd, StreamStart, Track

log = logging.getLogger(__name__)

OPUS_RATE = 48000
OPUS_FRAME = 960  # 20 ms at 48 kHz
OPUS_BITRATE = 64000


def opus_head(channels: int = 2, pre_skip: int = 312, input_rate: int = OPUS_RATE) -> bytes:
    """An OpusHead (RFC 7845 5.1), the Track.config of an Opus track."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, input_rate, 0, 0)


@dataclass(frozen=True, slots=True)
class OpusFrame:
    """One encoded Opus frame and its timestamp (48 kHz) on the transcoder's timeline.

    restart is True for the first frame after a discontinuity (new publication, skip)."""

    data: bytes
    timestamp: int
    restart: bool = False


class AacOpusCodec:
    """The blocking part: AAC access units in, Opus frames out. One per publication."""

    def __init__(self, track: Track) -> None:
        self._decoder = av.CodecContext.create("aac", "r")
        self._decoder.extradata = track.config
        self._timescale = track.timescale
        self._time_base = fractions.Fraction(1, track.timescale)
        self._resampler = av.AudioResampler(
            format="s16", layout="stereo", rate=OPUS_RATE, frame_size=OPUS_FRAME
        )
        self._encoder = av.CodecContext.create("libopus", "w")
        self._encoder.sample_rate = OPUS_RATE
        self._encoder.layout = "stereo"
        self._encoder.format = "s16"
        self._encoder.bit_rate = OPUS_BITRATE
        self._encoder.time_base = fractions.Fraction(1, OPUS_RATE)
        self._encoder.options = {"application": "audio", "frame_duration": "20"}
        self._next_ts: int | None = None

    def transcode(self, packets: list[Packet]) -> list[OpusFrame]:
        out: list[OpusFrame] = []
        for packet in packets:
            if self._next_ts is None:
                self._next_ts = packet.pts * OPUS_RATE // self._timescale
            av_packet = av.Packet(packet.data)
            av_packet.pts = av_packet.dts = packet.pts
            av_packet.time_base = self._time_base
            try:
                frames = self._decoder.decode(av_packet)
            except av.FFmpegError as exc:
                log.debug("AAC frame not decodable, skipped: %s", exc)
                continue
            for frame in frames:
                out.extend(self._encode(frame))
        return out

    def _encode(self, frame: av.AudioFrame) -> list[OpusFrame]:
        out: list[OpusFrame] = []
        frame.pts = None  # the resampler and encoder count samples themselves
        try:
            for chunk in self._resampler.resample(frame):
                for encoded in self._encoder.encode(chunk):
                    out.append(OpusFrame(bytes(encoded), self._next_ts or 0))
                    self._next_ts = (self._next_ts or 0) + OPUS_FRAME
        except av.FFmpegError as exc:  # e.g. the channel layout changed mid-stream
            log.warning("stream audio could not be made Opus, frame skipped: %s", exc)
        return out


Listener = Callable[[OpusFrame], None]


class AacToOpus:
    """One stream's transcoder: its own hub subscription, Opus fanned out to listeners.

    Runs only while someone listens (the first listener starts it, the last stops it)."""

    def __init__(self, hub: Hub, stream_id: str) -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.listeners: list[Listener] = []
        self.frames_out = 0
        self.cpu_s = 0.0
        self._task: asyncio.Task[None] | None = None
        self._sub: QueuedConsumer | None = None
        self._executor: ThreadPoolExecutor | None = None

    def attach(self, listener: Listener) -> None:
        self.listeners.append(listener)
        if self._task is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"aac-opus-{self.stream_id}")
            self._task = asyncio.create_task(self._run(), name=f"aac-opus {self.stream_id}")

    def detach(self, listener: Listener) -> None:
        if listener in self.listeners:
            self.listeners.remove(listener)
        if not self.listeners:
            self.stop()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _run(self) -> None:
        # the cached GOP's audio is history by now: listeners get live audio only
        cached = len(self.hub.stream(self.stream_id).gop())
        self._sub = sub = self.hub.subscribe(self.stream_id, "webrtc aac->opus")
        sub.realtime = True
        codec: AacOpusCodec | None = None
        audio_index = -1
        restart = True
        try:
            while True:
                batch = [await sub.get()]
                while (item := sub.get_nowait()) is not None:
                    batch.append(item)
                packets: list[Packet] = []
                for item in batch:
                    if isinstance(item, StreamStart):
                        codec, audio_index = self._codec_for(item.tracks)
                        packets, restart = [], True
                    elif isinstance(item, (StreamEnd, Skipped)):
                        restart = True
                    elif isinstance(item, Packet) and cached > 0:
                        cached -= 1
                    elif isinstance(item, Packet) and item.track == audio_index:
                        packets.append(item)
                if codec is not None and packets:
                    frames = await self._transcode(codec, packets)
                    if frames and restart:
                        frames[0] = OpusFrame(frames[0].data, frames[0].timestamp, True)
                        restart = False
                    self._fan_out(frames)
        except EOFError:
            pass

    def _codec_for(self, tracks: tuple[Track, ...]) -> tuple[AacOpusCodec | None, int]:
        aac = next((t for t in tracks if t.codec == "aac"), None)
        return (AacOpusCodec(aac), aac.index) if aac else (None, -1)

    async def _transcode(self, codec: AacOpusCodec, packets: list[Packet]) -> list[OpusFrame]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._timed, codec, packets)

    def _timed(self, codec: AacOpusCodec, packets: list[Packet]) -> list[OpusFrame]:
        start = time.thread_time()
        frames = codec.transcode(packets)
        self.cpu_s += time.thread_time() - start
        return frames

    def _fan_out(self, frames: list[OpusFrame]) -> None:
        self.frames_out += len(frames)
        for frame in frames:
            for listener in list(self.listeners):
                listener(frame)
