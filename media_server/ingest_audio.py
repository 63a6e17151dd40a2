"""Audio at ingest: whatever codec a source sends becomes the hub's AAC-LC, once per stream.

LL-HLS, recordings and RTMP play carry AAC, and WebRTC makes Opus from it (webrtc/audio.py),
so one transcode at ingest gives every output the sound. A source in another codec (G.711
or G.726 from IP cameras, Opus or L16 over RTSP, MP3, Speex or PCM from RTMP encoders) is
decoded and encoded to AAC-LC here by one AudioTranscoder per publication. It blocks (PyAV):
the RTSP pull calls it in its own worker thread; RTMP, whose ingest runs on the event loop,
goes through ThreadedTranscoder, which runs it in a thread of its own.

Timestamps: output samples are counted from the first input timestamp, so the AAC track
runs on the source's clock; a jump in the source's timestamps (audio that stopped and came
back) starts the count again there rather than closing the hole.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av

from media_server.codecs.aac import make_asc
from media_server.media import Packet, Track

log = logging.getLogger(__name__)

AAC_RATES = (48000, 44100, 32000, 24000, 22050, 16000)  # kept as they are; others resampled
AAC_FRAME = 1024
AAC_BITRATE_PER_CHANNEL = 64000
JUMP_S = 0.5  # a source timestamp this far from the sample count re-anchors the count
MAX_BACKLOG = 200  # frames waiting for the RTMP transcoder thread before frames are dropped


@dataclass(frozen=True, slots=True)
class AudioSource:
    """What a source sends: `decoder` is PyAV's decoder name, `name` the codec as
    technicians know it (pcma, pcmu, g726, opus, l16, mp3, speex, ...)."""

    name: str
    decoder: str
    sample_rate: int
    channels: int
    timescale: int  # of the input timestamps
    extradata: bytes = b""


def aac_rate(source_rate: int) -> int:
    """The AAC track's rate: the source's if AAC-LC players take it well, else 16/48 kHz."""
    if source_rate in AAC_RATES:
        return source_rate
    return 16000 if source_rate < 16000 else 48000


class AudioTranscoder:
    """Source audio frames in, AAC-LC hub packets out (blocking; one per publication).

    decoder: a ready decoder (the RTSP demuxer's stream context, which knows the
    source's parameters best); made from `source` when None."""

    def __init__(
        self, source: AudioSource, index: int, decoder: av.AudioCodecContext | None = None
    ) -> None:
        self.source = source
        self.rate = aac_rate(source.sample_rate)
        self.channels = 1 if source.channels <= 1 else 2
        layout = "mono" if self.channels == 1 else "stereo"
        self.track = Track(
            index,
            "audio",
            "aac",
            self.rate,
            make_asc(self.rate, self.channels),
            sample_rate=self.rate,
            channels=self.channels,
            source_codec=source.name,
        )
        self._decoder = decoder or _decoder(source)
        self._encoder = av.CodecContext.create("aac", "w")
        self._encoder.sample_rate = self.rate
        self._encoder.layout = layout
        self._encoder.format = "fltp"
        self._encoder.bit_rate = AAC_BITRATE_PER_CHANNEL * self.channels
        self._encoder.time_base = Fraction(1, self.rate)
        self._layout = layout
        self._resampler = av.AudioResampler(format="fltp", layout=layout, rate=self.rate)
        self._fifo = av.AudioFifo()
        self._next_pts: int | None = None  # output ticks of the next sample into the fifo
        self._last_pts = -1
        self.frames_in = 0
        self.frames_out = 0
        self.errors = 0
        self.cpu_s = 0.0

    def transcode(self, data: bytes, ts: int, arrival: float) -> list[Packet]:
        """One source frame (ts in the source's timescale) -> the AAC packets it completes."""
        started = time.thread_time()
        try:
            return self._transcode(data, ts, arrival)
        finally:
            self.cpu_s += time.thread_time() - started

    def _transcode(self, data: bytes, ts: int, arrival: float) -> list[Packet]:
        self.frames_in += 1
        packet = av.Packet(data)
        try:
            frames = self._decoder.decode(packet)
        except av.FFmpegError as exc:
            self.errors += 1  # one damaged frame is no reason to lose the sound
            log.debug("%s frame not decodable, skipped: %s", self.source.name, exc)
            return []
        out: list[Packet] = []
        at = ts * self.rate // self.source.timescale
        for frame in frames:
            if self._next_pts is None or abs(at - self._next_pts) > JUMP_S * self.rate:
                self._restart(at)
            frame.pts = None
            for chunk in self._resampler.resample(frame):
                self._fifo.write(chunk)
            at += frame.samples * self.rate // max(1, frame.sample_rate)
            out.extend(self._encode_ready(arrival))
        return out

    def _restart(self, at: int) -> None:
        """Count samples from `at` again; what the fifo held of the old run is dropped."""
        if self._next_pts is not None:
            log.info(
                "%s audio timestamps jumped %.2f s: count restarted",
                self.source.name,
                (at - self._next_pts) / self.rate,
            )
        self._resampler = av.AudioResampler(format="fltp", layout=self._layout, rate=self.rate)
        self._fifo = av.AudioFifo()
        self._next_pts = at

    def _encode_ready(self, arrival: float) -> list[Packet]:
        out: list[Packet] = []
        while self._fifo.samples >= AAC_FRAME:
            chunk = self._fifo.read(AAC_FRAME)
            assert chunk is not None and self._next_pts is not None
            chunk.pts, chunk.time_base = self._next_pts, Fraction(1, self.rate)
            self._next_pts += AAC_FRAME
            for encoded in self._encoder.encode(chunk):
                pts = int(encoded.pts or 0)
                if pts < 0 or pts <= self._last_pts:
                    continue  # the encoder's priming frame before the start, or a step back
                self._last_pts = pts
                self.frames_out += 1
                out.append(Packet(self.track.index, pts, pts, True, bytes(encoded), arrival))
        return out


def _decoder(source: AudioSource) -> av.AudioCodecContext:
    ctx: Any = av.CodecContext.create(source.decoder, "r")
    ctx.sample_rate = source.sample_rate
    ctx.layout = "mono" if source.channels <= 1 else "stereo"
    if source.extradata:
        ctx.extradata = source.extradata
    return ctx  # type: ignore[no-any-return]


# shared by every RTMP stream's transcoder; each keeps its own frames in order (see feed)
_POOL = ThreadPoolExecutor(max(2, os.cpu_count() or 2), thread_name_prefix="audio-aac")


class ThreadedTranscoder:
    """An AudioTranscoder fed from the event loop (RTMP): frames are transcoded in order in
    a pool thread, AAC packets come back to `deliver` on the loop. The loop never waits on
    it; a transcoder MAX_BACKLOG frames behind loses frames (counted) rather than memory."""

    def __init__(
        self, transcoder: AudioTranscoder, deliver: Callable[[list[Packet]], None]
    ) -> None:
        self.transcoder = transcoder
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._queue: deque[tuple[bytes, int, float]] = deque()
        self._lock = threading.Lock()
        self._running = False  # a pool thread is draining the queue
        self.dropped = 0
        self.closed = False

    @property
    def track(self) -> Track:
        return self.transcoder.track

    def feed(self, data: bytes, ts: int, arrival: float) -> None:
        if self.closed:
            return
        with self._lock:
            if len(self._queue) >= MAX_BACKLOG:
                self.dropped += 1
                return
            self._queue.append((data, ts, arrival))
            if self._running:
                return
            self._running = True
        _POOL.submit(self._drain)

    def _drain(self) -> None:
        """In a pool thread: transcode what is queued until the queue is empty."""
        while not self.closed:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                batch = list(self._queue)
                self._queue.clear()
            packets: list[Packet] = []
            for data, ts, arrival in batch:
                try:
                    packets.extend(self.transcoder.transcode(data, ts, arrival))
                except Exception:  # a codec failure must not end the publication's video
                    log.exception("%s -> AAC transcode failed", self.transcoder.source.name)
            if packets:
                try:
                    self._loop.call_soon_threadsafe(self._back, packets)
                except RuntimeError:  # the loop is gone
                    self.closed = True
        with self._lock:
            self._running = False

    def _back(self, packets: list[Packet]) -> None:
        if not self.closed:
            self._deliver(packets)

    def close(self) -> None:
        self.closed = True
        with self._lock:
            self._queue.clear()
