"""What a WHEP viewer gets when browsers cannot take a stream over WebRTC as it is (H.265;
H.264 with B-frames, as OBS and broadcast encoders send by default): H.264 without
B-frames, never a 406.

- The room's H.264 sub stream, when the camera has one live that plays as is (no B-frames):
  nothing is transcoded. (An agent's `sub-stream-h264` command sets a camera's sub stream
  so over ONVIF: device_agents/onvif.py.)
- Otherwise a rendition: the stream decoded, scaled to at most 640x360 and encoded as
  constrained baseline H.264 (downscale.py) in a worker thread of its own, made once per
  stream and shared by all its viewers, started by the first and stopped after the last.

A rendition publishes into a hub of its own (Renditions.hub) under the stream's id, with
the source's audio tracks passed through unchanged, so the WebRTC egress plays it like
any stream (shared payloads, AAC->Opus, the GOP burst), while LL-HLS, the recorder and
the stats never see it: they keep the source as it is. A viewer's keyframe request (PLI,
a new viewer with no cached GOP) makes the encoder send an IDR at once.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import av

from media_server.hub import Hub, Publication
from media_server.media import Packet, Skipped, StreamEnd, StreamStart, Track, video_track
from media_server.webrtc.downscale import DECODERS, DownscaleError, Downscaler, Encoded
from media_server.webrtc.egress import EgressRegistry, StreamEgress
from media_server.webrtc.tracks import reorders

log = logging.getLogger(__name__)

# a camera's sub stream: the id device_agents.protocol.stream_id_for gives it
SUB_SUFFIX = "-sub"


def has_b_frames(gop: list[Packet], track: int) -> bool:
    """Does this video reorder frames? Told from the GOP's first frame already: with
    B-frames even a keyframe is shown after it is decoded (pts > dts); a GOP of one frame
    would otherwise pass, and the viewer fail at the first B-frame."""
    return reorders(gop, track) or any(p.pts != p.dts for p in gop if p.track == track)


def plays_as_is(hub: Hub, stream_id: str) -> bool:
    """Is this stream live as H.264 without B-frames, what browsers take over WebRTC?"""
    stream = hub.find(stream_id)
    if stream is None or not stream.live:
        return False
    video = video_track(stream.tracks)
    gop = stream.gop()
    return video is not None and video.codec == "h264" and not has_b_frames(gop, video.index)


def can_render(codec: str) -> bool:
    return codec in DECODERS


class Rendition:
    """One stream's H.264 rendition, read from `source` and published into `out`."""

    def __init__(self, source: Hub, out: Hub, stream_id: str) -> None:
        self.out = out
        self.stream_id = stream_id
        self.fps = source.stream(stream_id).stats.fps
        self.errors = 0
        self.cpu_s = 0.0  # of finished epochs; see cpu()
        self.frames_out = 0
        self._scaler: Downscaler | None = None
        self._tracks: tuple[Track, ...] = ()
        self._publication: Publication | None = None
        self._want_key = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"rendition {stream_id}")
        self._sub = source.subscribe(stream_id, "webrtc rendition")
        self._sub.realtime = True  # it feeds WebRTC viewers: the ingest must not batch
        self._task = asyncio.create_task(self._run(), name=f"rendition {stream_id}")

    def cpu(self) -> float:
        """CPU seconds spent decoding, scaling and encoding so far."""
        return self.cpu_s + (self._scaler.cpu_s if self._scaler is not None else 0.0)

    def request_keyframe(self) -> None:
        self._want_key = True

    def count_viewers(self, viewers: int) -> None:
        """The stream's stats list its subscribers: say how many viewers this one feeds."""
        self._sub.viewers = viewers
        self._sub.name = f"webrtc rendition ({viewers} viewers)"

    def stop(self, reason: str = "no viewers left") -> None:
        self._task.cancel()
        self._sub.close()
        self._end(reason)
        self._executor.shutdown(wait=False, cancel_futures=True)
        log.info("stream %s: rendition stopped (%s)", self.stream_id, reason)

    async def _run(self) -> None:
        async for item in self._sub:
            if isinstance(item, Packet):
                await self._packet(item)
            elif isinstance(item, StreamStart):
                self._start(item.tracks)
            elif isinstance(item, StreamEnd):
                self._end(item.reason)
            elif isinstance(item, Skipped) and self._scaler is not None:
                self._want_key = True  # the next source frame is a keyframe; so is ours

    def _start(self, tracks: tuple[Track, ...]) -> None:
        self._end("the source restarted")
        video = video_track(tracks)
        self._tracks = tracks
        if video is None:
            return
        try:
            self._scaler = Downscaler(video, self.fps)
        except DownscaleError as exc:
            log.warning("stream %s: %s", self.stream_id, exc)
            return
        log.info("stream %s: rendition of %s video started", self.stream_id, video.codec)

    def _end(self, reason: str) -> None:
        if self._scaler is not None:
            self.cpu_s += self._scaler.cpu_s
            self._scaler = None
        if self._publication is not None:
            self._publication.close(reason)
            self._publication = None

    async def _packet(self, packet: Packet) -> None:
        scaler = self._scaler
        if scaler is None:
            return
        video = video_track(self._tracks)
        if video is None or packet.track != video.index:
            if self._publication is not None:
                self._publication.push(packet)  # audio as the source sent it
            return
        key, self._want_key = self._want_key, False
        loop = asyncio.get_running_loop()
        try:
            frames = await loop.run_in_executor(self._executor, scaler.feed, packet, key)
        except (av.FFmpegError, DownscaleError) as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                log.warning("stream %s: rendition skipped a frame: %s", self.stream_id, exc)
            return
        if scaler is self._scaler:  # not restarted meanwhile
            for frame in frames:
                self._publish(video, scaler, frame)

    def _publish(self, video: Track, scaler: Downscaler, frame: Encoded) -> None:
        if self._publication is None:
            if not frame.keyframe:
                return
            self._publication = self.out.publish(
                self.stream_id,
                self._rendered_tracks(video, scaler),
                "webrtc rendition",
                on_keyframe_request=self.request_keyframe,
            )
        self.frames_out += 1
        self._publication.push(
            Packet(video.index, frame.pts, frame.pts, frame.keyframe, frame.data)
        )

    def _rendered_tracks(self, video: Track, scaler: Downscaler) -> tuple[Track, ...]:
        width, height = scaler.size
        h264 = replace(video, codec="h264", config=scaler.config, width=width, height=height)
        return tuple(h264 if t is video else t for t in self._tracks)


class Renditions(EgressRegistry):
    """The WebRTC egress of renditions: a rendition runs while its egress has viewers."""

    def __init__(self, source: Hub) -> None:
        super().__init__(Hub())  # a hub of their own: out of sight of HLS, recorder, stats
        self.source = source
        self.running: dict[str, Rendition] = {}

    def acquire(self, stream_id: str) -> StreamEgress:
        if stream_id not in self.running:
            self.running[stream_id] = Rendition(self.source, self.hub, stream_id)
        egress = super().acquire(stream_id)
        self.running[stream_id].count_viewers(egress.viewers)
        return egress

    def release(self, egress: StreamEgress) -> None:
        super().release(egress)
        if egress.stream_id in self.running:
            self.running[egress.stream_id].count_viewers(egress.viewers)
        if self.get(egress.stream_id) is None:
            rendition = self.running.pop(egress.stream_id, None)
            if rendition is not None:
                rendition.stop()
            self.hub.drop_idle()

    def request_keyframe(self, stream_id: str) -> None:
        rendition = self.running.get(stream_id)
        if rendition is not None:
            rendition.request_keyframe()

    def stop_all(self) -> None:
        for rendition in self.running.values():
            rendition.stop("server shutting down")
        self.running.clear()
