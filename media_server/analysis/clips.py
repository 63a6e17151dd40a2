"""Event clips and snapshots: what an alert shows.

A `PacketRing` keeps the stream's last GOPs (at least `pre_roll_s` of them, plus a margin
for the time analysis takes to notice), as packets: nothing decoded. An alert takes a
`Clip` from it, starting at the last keyframe at least `pre_roll_s` before the event; the
clip then collects what the stream sends for `post_roll_s` after it. Its MP4 is the
packets as they came, remuxed (media_server/fmp4.py: one init segment and one fragment),
so it plays in a browser and decodes in ffprobe; nothing is re-encoded. Snapshots are
JPEGs of the analysed frame, at most SNAPSHOT_WIDTH wide.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import cv2

from media_server import fmp4
from media_server.media import Packet, Track, video_track

MARGIN_S = 6.0  # kept beyond the pre-roll: analysis notices an event a little after it
MAX_RING_BYTES = 48 * 1024 * 1024  # a stream's ring never holds more, whatever its bitrate
MAX_CLIP_S = 120.0
SNAPSHOT_WIDTH = 640
JPEG_QUALITY = 85


class PacketRing:
    """The stream's last GOPs, from a video keyframe on."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.tracks: tuple[Track, ...] = ()
        self._video: int | None = None
        self._gops: list[list[Packet]] = []
        self._bytes = 0

    def start(self, tracks: tuple[Track, ...]) -> None:
        video = video_track(tracks)
        self.tracks = tracks
        self._video = video.index if video is not None else None
        self._gops, self._bytes = [], 0

    def push(self, packet: Packet) -> None:
        if packet.track == self._video and packet.keyframe:
            self._gops.append([packet])
            self._bytes += len(packet.data)
            horizon = packet.arrival - self.keep_s - MARGIN_S
            while len(self._gops) > 1 and (
                self._gops[1][0].arrival <= horizon or self._bytes > MAX_RING_BYTES
            ):
                self._bytes -= sum(len(p.data) for p in self._gops.pop(0))
        elif self._gops:
            self._gops[-1].append(packet)
            self._bytes += len(packet.data)

    def since(self, at: float) -> list[Packet]:
        """The packets from the last GOP starting at or before `at` (the oldest GOP if none
        does) to now."""
        if not self._gops:
            return []
        start = 0
        for i, gop in enumerate(self._gops):
            if gop and gop[0].arrival <= at:
                start = i
        return [p for gop in self._gops[start:] for p in gop]


@dataclass
class Clip:
    """The packets of one alert's clip, collected until `until` (wall-clock)."""

    tracks: tuple[Track, ...]
    until: float
    packets: list[Packet] = field(default_factory=list)

    def add(self, packet: Packet) -> bool:
        """Take one more packet; False once the clip is complete."""
        if packet.arrival > self.until:
            return False
        self.packets.append(packet)
        return True

    def start_time(self) -> float:
        return self.packets[0].arrival if self.packets else self.until


def clip_from(ring: PacketRing, event_at: float, pre_roll_s: float, post_roll_s: float) -> Clip:
    until = event_at + min(post_roll_s, MAX_CLIP_S)
    return Clip(ring.tracks, until, ring.since(event_at - pre_roll_s))


def mp4(clip: Clip) -> bytes:
    """The clip as an MP4 file (init segment + one fragment), timestamps from zero. Audio
    before the first video frame is left out; blocking-free but CPU: run it in a thread."""
    video = video_track(clip.tracks)
    if video is None or not clip.packets:
        raise ValueError("a clip needs video packets")
    first = next(p for p in clip.packets if p.track == video.index)
    start_s = first.dts / video.timescale
    runs: list[fmp4.TrackRun] = []
    for track in clip.tracks:
        offset = -round(start_s * track.timescale)
        packets = [p for p in clip.packets if p.track == track.index and p.dts + offset >= 0]
        if packets:
            runs.append(fmp4.TrackRun(track, packets, dts_offset=offset))
    used = tuple(run.track for run in runs)
    return fmp4.init_segment(used) + fmp4.fragment(1, runs)


def snapshot(frame: av.VideoFrame) -> bytes:
    """A JPEG of the frame, at most SNAPSHOT_WIDTH wide."""
    width = min(SNAPSHOT_WIDTH, frame.width) & ~1
    height = max(2, round(frame.height * width / frame.width) & ~1)
    picture = frame.to_ndarray(format="bgr24", width=width, height=height)
    ok, jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("the snapshot could not be encoded")
    return bytes(jpeg)
