"""Snapshot: one JPEG from a camera feed. Only one keyframe is decoded (the one the hub's
GOP cache starts with, or the next to come), in a worker thread; PyAV's mjpeg encoder
makes the JPEG (no image library needed).
"""

from __future__ import annotations

import asyncio
from fractions import Fraction
from typing import Literal

import av

from media_server.hub import Hub
from media_server.media import Packet, StreamStart, Track

DECODERS: dict[str, Literal["h264", "hevc"]] = {"h264": "h264", "h265": "hevc"}


class SnapshotError(Exception):
    """No picture could be taken (message for the operator)."""


async def snapshot(hub: Hub, feed_id: str, timeout_s: float = 10.0) -> tuple[bytes, int, int]:
    """(jpeg, width, height) of the feed's next keyframe."""
    track, packet = await _next_keyframe(hub, feed_id, timeout_s)
    return await asyncio.to_thread(_decode_to_jpeg, track, packet.data)


async def _next_keyframe(hub: Hub, feed_id: str, timeout_s: float) -> tuple[Track, Packet]:
    sub = hub.stream(feed_id).subscribe(f"snapshot {feed_id}", 600)
    video: Track | None = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                item = await sub.get()
                if isinstance(item, StreamStart):
                    video = next((t for t in item.tracks if t.is_video), None)
                elif (
                    isinstance(item, Packet)
                    and item.keyframe
                    and video is not None
                    and item.track == video.index
                ):
                    return video, item
    except TimeoutError:
        raise SnapshotError(f"no keyframe from the camera within {timeout_s:g} s") from None
    finally:
        sub.close()


def _decode_to_jpeg(track: Track, data: bytes) -> tuple[bytes, int, int]:
    decoder = av.CodecContext.create(DECODERS[track.codec], "r")
    decoder.extradata = track.config  # avcC / hvcC: the AVCC payload decodes as it is
    frames = decoder.decode(av.Packet(data)) + decoder.decode(None)
    if not frames:
        raise SnapshotError("the keyframe did not decode")
    frame = frames[0]
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = frame.width, frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"q:v": "3"}
    packets = encoder.encode(frame.reformat(format="yuvj420p"))
    packets += encoder.encode(None)
    return b"".join(bytes(p) for p in packets), frame.width, frame.height
