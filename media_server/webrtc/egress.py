"""What all WebRTC viewers of one stream share: one queued hub consumer, RTP payloads and
the AAC->Opus transcoder.

One task per stream (Fanout) reads the hub and hands each item to every viewer by a plain
call, and each viewer sends its packets there and then: a frame costs one task wake-up
per stream, not one or two per viewer (what a wake-up per viewer cost: bench/RESULTS.md).
The hub hands every subscriber the same Packet objects. The RTP payloads of a video frame
(parameter sets on keyframes, STAP-A/FU-A split) depend only on the frame, so the first
viewer to send a frame computes them and the others reuse them; each viewer's sender then
adds only its RTP header and SRTP. Entries are keyed by the Packet object and hold it, so
an id is never reused while its entry lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass
from functools import partial
from typing import Protocol

from media_server.codecs.bitstream import split_avcc
from media_server.codecs.h264 import (
    MAX_PAYLOAD,
    NAL_AUD,
    NAL_PPS,
    NAL_SPS,
    h264_payloads,
    nal_type,
)
from media_server.consumer import QueuedConsumer
from media_server.hub import Hub
from media_server.media import Item, Packet
from media_server.webrtc.audio import AacToOpus

log = logging.getLogger(__name__)

PAYLOAD_CACHE_FRAMES = 512  # ~17 s of 30 fps video: viewers further apart recompute


def frame_nals(
    packet: Packet, parameter_sets: tuple[bytes, ...], length_size: int = 4
) -> list[bytes | memoryview]:
    """The NAL units to send for one frame: keyframes start with SPS/PPS (from avcC when
    the frame does not carry its own), access unit delimiters are dropped."""
    nals: list[bytes | memoryview] = [
        n for n in split_avcc(packet.data, length_size) if nal_type(n) != NAL_AUD
    ]
    if packet.keyframe:
        inband = {nal_type(n) for n in nals}
        if NAL_SPS not in inband or NAL_PPS not in inband:
            nals = [*parameter_sets, *(n for n in nals if nal_type(n) not in (NAL_SPS, NAL_PPS))]
    return nals


@dataclass
class PayloadCacheStats:
    computed: int = 0
    reused: int = 0


class VideoPayloadCache:
    """RTP payloads per video frame, computed once for all viewers of a stream."""

    def __init__(
        self, max_frames: int = PAYLOAD_CACHE_FRAMES, max_payload: int = MAX_PAYLOAD
    ) -> None:
        self.max_frames = max_frames
        self.max_payload = max_payload
        self.stats = PayloadCacheStats()
        self._entries: OrderedDict[int, tuple[Packet, list[bytes]]] = OrderedDict()

    def payloads(
        self, packet: Packet, parameter_sets: tuple[bytes, ...], length_size: int = 4
    ) -> list[bytes]:
        key = id(packet)
        hit = self._entries.get(key)
        if hit is not None and hit[0] is packet:
            self.stats.reused += 1
            return hit[1]
        payloads = h264_payloads(frame_nals(packet, parameter_sets, length_size), self.max_payload)
        self.stats.computed += 1
        self._entries[key] = (packet, payloads)
        if len(self._entries) > self.max_frames:
            self._entries.popitem(last=False)
        return payloads

    def clear(self) -> None:
        self._entries.clear()


class Receiver(Protocol):
    """A viewer as the fan-out sees it."""

    def handle(self, item: Item) -> None: ...

    def fail(self, reason: str) -> None: ...


class Fanout:
    """One queued hub consumer for all WebRTC viewers of a stream, alive while it has any.

    A viewer joins at the stream's cached GOP, replayed by the hub: join() first hands the
    items already queued to the viewers there before, so the newcomer gets each packet
    exactly once."""

    def __init__(self, hub: Hub, stream_id: str) -> None:
        self.hub = hub
        self.stream_id = stream_id
        self.viewers: tuple[Receiver, ...] = ()
        self._sub: QueuedConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def join(self, viewer: Receiver) -> None:
        if self._sub is None:
            self._sub = self.hub.subscribe(self.stream_id, "webrtc")
            self._sub.realtime = True
            self._task = asyncio.create_task(self._run(self._sub), name=f"webrtc {self.stream_id}")
        self._drain(self._sub)  # what the hub already gave the others, the GOP includes
        self.viewers = (*self.viewers, viewer)
        self._rename()
        # what the hub replays to a consumer attaching now, to this viewer alone
        self.hub.stream(self.stream_id).replay(partial(self._deliver, viewer))

    def leave(self, viewer: Receiver) -> None:
        self.viewers = tuple(v for v in self.viewers if v is not viewer)
        self._rename()
        if not self.viewers:
            self.close()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    def _rename(self) -> None:
        # stats list hub subscribers by name: say how many viewers this one stands for
        if self._sub is not None:
            self._sub.name = f"webrtc ({len(self.viewers)} viewers)"
            self._sub.viewers = len(self.viewers)

    async def _run(self, sub: QueuedConsumer) -> None:
        try:
            while True:
                self._dispatch(await sub.get())
                self._drain(sub)
        except EOFError:
            pass

    def _drain(self, sub: QueuedConsumer) -> None:
        while (item := sub.get_nowait()) is not None:
            self._dispatch(item)

    def _dispatch(self, item: Item) -> None:
        for viewer in self.viewers:
            self._deliver(viewer, item)

    def _deliver(self, viewer: Receiver, item: Item) -> None:
        try:
            viewer.handle(item)
        except Exception as exc:  # one viewer's failure must not stop the others
            log.exception("stream %s: WebRTC viewer failed", self.stream_id)
            viewer.fail(f"internal error: {exc}")


class StreamEgress:
    """Shared per-stream state of the WebRTC egress, alive while it has viewers."""

    def __init__(self, hub: Hub, stream_id: str) -> None:
        self.stream_id = stream_id
        self.video = VideoPayloadCache()
        self.audio = AacToOpus(hub, stream_id)
        self.fanout = Fanout(hub, stream_id)
        self.viewers = 0

    def close(self) -> None:
        self.fanout.close()
        self.audio.stop()
        self.video.clear()


class EgressRegistry:
    """StreamEgress per stream id, made on the first viewer, dropped after the last."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._egress: dict[str, StreamEgress] = {}

    def acquire(self, stream_id: str) -> StreamEgress:
        egress = self._egress.get(stream_id)
        if egress is None:
            egress = self._egress[stream_id] = StreamEgress(self.hub, stream_id)
        egress.viewers += 1
        return egress

    def release(self, egress: StreamEgress) -> None:
        egress.viewers -= 1
        if egress.viewers <= 0 and self._egress.get(egress.stream_id) is egress:
            del self._egress[egress.stream_id]
            egress.close()

    def get(self, stream_id: str) -> StreamEgress | None:
        return self._egress.get(stream_id)
