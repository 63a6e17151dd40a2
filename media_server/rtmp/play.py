"""RTMP play: hub items -> FLV messages for one player, pure of I/O.

The player gets onMetaData and sequence headers at each StreamStart, then packets from the
first video keyframe on, with timestamps rebased so its clock starts near 0 and never
jumps back when a new publisher takes the stream over.
"""

from __future__ import annotations

from collections.abc import Callable

from media_server.media import Item, Packet, Skipped, StreamStart, Track
from media_server.rtmp import flv
from media_server.rtmp.chunk import AUDIO, DATA_AMF0, TS_MASK, VIDEO

CSID_DATA, CSID_AUDIO, CSID_VIDEO = 5, 6, 7
PLAYABLE = frozenset({"h264", "h265", "aac"})

# (chunk stream, message type, timestamp, payload, prefix)
Send = Callable[[int, int, int, bytes | memoryview, bytes], None]


class PlayOut:
    def __init__(self, send: Send) -> None:
        self.send = send
        self.tracks: dict[int, Track] = {}
        self.epoch: int | None = None
        self.base: int | None = None
        self.offset = 0
        self.last = 0
        self.has_video = False
        self.waiting_key = True
        self.packets = 0

    def handle(self, item: Item) -> None:
        if isinstance(item, Packet):
            self._packet(item)
        elif isinstance(item, StreamStart):
            self._start(item)
        elif isinstance(item, Skipped):
            self.waiting_key = self.has_video

    def _start(self, start: StreamStart) -> None:
        if self.epoch is not None and start.epoch != self.epoch:
            self.offset, self.base = self.last, None  # a new publisher, a new clock
        self.epoch = start.epoch
        self.tracks = {t.index: t for t in start.tracks if t.codec in PLAYABLE}
        self.has_video = any(t.is_video for t in self.tracks.values())
        self.waiting_key = self.has_video
        if not self.tracks:
            return
        self.send(CSID_DATA, DATA_AMF0, self.last, flv.metadata(tuple(self.tracks.values())), b"")
        for track in self.tracks.values():
            if track.is_video:
                self.send(CSID_VIDEO, VIDEO, self.last, flv.video_config_tag(track), b"")
            else:
                self.send(CSID_AUDIO, AUDIO, self.last, flv.audio_config_tag(track), b"")

    def _packet(self, packet: Packet) -> None:
        track = self.tracks.get(packet.track)
        if track is None:
            return
        if self.waiting_key:
            if not (track.is_video and packet.keyframe):
                return
            self.waiting_key = False
        scale = track.timescale
        dts = packet.dts if scale == 1000 else packet.dts * 1000 // scale
        if self.base is None:
            self.base = dts
        out = max(dts - self.base + self.offset, 0)
        self.last = max(self.last, out)
        self.packets += 1
        if track.is_video:
            pts = packet.pts if scale == 1000 else packet.pts * 1000 // scale
            prefix = flv.video_frame_prefix(track, packet, pts - dts)
            self.send(CSID_VIDEO, VIDEO, out & TS_MASK, packet.data, prefix)
        else:
            self.send(CSID_AUDIO, AUDIO, out & TS_MASK, packet.data, flv.AAC_FRAME_PREFIX)
