"""An Enhanced RTMP peer made with PyAV, whose bundled FFmpeg (libavformat 62) writes and
reads FourCC video tags ('hvc1', 'av01') as OBS 30+ and FFmpeg 6.1+ do; Debian's ffmpeg
5.1 cannot (FIELD-NOTES). Run as a subprocess: PyAV holds the GIL while it blocks on the
socket, which would stall a server on the same event loop.

    python -m tests.media_server.ertmp_peer publish URL SECONDS [hevc|av1]
    python -m tests.media_server.ertmp_peer play URL OUT.mp4 FRAMES
"""

from __future__ import annotations

import sys
import time

import av
import numpy as np

ENCODERS = {
    "hevc": ("libx265", {"x265-params": "log-level=none:keyint=25"}),
    "av1": ("libsvtav1", {"preset": "12", "svtav1-params": "keyint=25"}),
}


def publish(url: str, seconds: float, codec: str = "hevc") -> None:
    """320x240 25 fps video (x265 defaults: B-frames) and 48 kHz mono AAC, in real time."""
    name, options = ENCODERS[codec]
    out = av.open(url, "w", format="flv")
    video = out.add_stream(name, rate=25, options=options)
    video.width, video.height, video.pix_fmt = 320, 240, "yuv420p"
    audio = out.add_stream("aac", rate=48000)
    audio.layout = "mono"
    start, frames, blocks = time.monotonic(), 0, 0
    while frames < seconds * 25:
        if blocks * 1024 / 48000 <= frames / 25:
            samples = np.zeros((1, 1024), dtype=np.float32)
            block = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            block.sample_rate, block.pts = 48000, blocks * 1024
            out.mux(audio.encode(block))
            blocks += 1
            continue
        picture = np.full((240, 320, 3), frames * 7 % 256, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
        frame.pts = frames
        out.mux(video.encode(frame))
        frames += 1
        time.sleep(max(0.0, start + frames / 25 - time.monotonic()))
    out.mux(video.encode())
    out.mux(audio.encode())
    out.close()


def play(url: str, path: str, frames: int) -> None:
    """Copy what an RTMP player gets (no re-encode) to an MP4 until `frames` video frames."""
    source = av.open(url, options={"rw_timeout": "5000000"})
    out = av.open(path, "w")
    streams = {s.index: out.add_stream_from_template(s) for s in source.streams}
    seen = 0
    for packet in source.demux():
        if packet.dts is None:
            continue
        is_video = packet.stream.type == "video"
        packet.stream = streams[packet.stream.index]
        out.mux(packet)
        seen += is_video
        if seen >= frames:
            break
    out.close()
    source.close()


if __name__ == "__main__":
    command, url, *rest = sys.argv[1:]
    if command == "publish":
        publish(url, float(rest[0]), *rest[1:])
    else:
        play(url, rest[0], int(rest[1]))
