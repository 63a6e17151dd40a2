"""Audio transcode cost per stream: G.711 -> AAC at ingest, AAC -> Opus for WebRTC, the
RTSP ingest's CPU per stream with a G.711 camera (transcoded) against an AAC camera
(passed through), and the WebRTC audio path of a G.711 camera: its PCMA passed through
(media_server/source_audio.py) against PCMA -> AAC -> Opus.

    .venv/bin/python -m bench.audio_transcode [--seconds 60] [--ingest-seconds 20]

Codec costs: thread CPU of the transcoder over `seconds` of synthetic 440 Hz audio (CPU ms
per stream-second). Ingest: this process's CPU while one RtspPull reads a GStreamer camera
(tests/fixtures/rtsp_camera.py, 640x360 25 fps H.264; the camera is another process).
WebRTC audio: the same with a PCMA camera and one audio-only ViewerFeed whose frames are
taken off its track (no network: what both paths share, the RTP send, is left out); its
CPU less the ingest alone is the audio path's cost per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from fractions import Fraction

import av
import numpy as np

from media_server.hub import Hub
from media_server.ingest_audio import AudioSource, AudioTranscoder
from media_server.media import Packet
from media_server.rtsp.pull import RtspPull
from media_server.webrtc.audio import AacOpusCodec
from media_server.webrtc.egress import StreamEgress
from media_server.webrtc.tracks import FeedTrack, ViewerFeed
from tests.fixtures.rtsp_camera import RtspCamera, free_port


def encoded(codec: str, rate: int, seconds: float, frame: int) -> list[bytes]:
    enc = av.CodecContext.create(codec, "w")
    enc.sample_rate, enc.layout = rate, "mono"
    enc.format = "s16" if codec.startswith("pcm") else "fltp"
    t = np.arange(int(rate * seconds)) / rate
    pcm = np.sin(2 * np.pi * 440 * t) * 0.2
    out: list[bytes] = []
    for i in range(0, len(pcm) - frame, frame):
        chunk = pcm[i : i + frame]
        if enc.format.name == "s16":
            f = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16)[None], "s16", "mono")
        else:
            f = av.AudioFrame.from_ndarray(chunk.astype(np.float32)[None], "fltp", "mono")
        f.sample_rate, f.pts, f.time_base = rate, i, Fraction(1, rate)
        out.extend(bytes(p) for p in enc.encode(f))
    return out


def g711_to_aac(seconds: float) -> float:
    frames = encoded("pcm_alaw", 8000, seconds, 160)  # 20 ms RTP packets
    t = AudioTranscoder(AudioSource("pcma", "pcm_alaw", 8000, 1, 8000), 1)
    for i, data in enumerate(frames):
        t.transcode(data, i * 160, 0.0)
    return t.cpu_s * 1000 / seconds


def aac_to_opus(seconds: float) -> float:
    frames = encoded("aac", 48000, seconds, 1024)
    t = AudioTranscoder(AudioSource("x", "pcm_alaw", 48000, 1, 48000), 1)  # for its config
    codec = AacOpusCodec(t.track)
    packets = [Packet(1, i * 1024, i * 1024, True, d) for i, d in enumerate(frames)]
    started = time.thread_time()
    for n in range(0, len(packets), 10):
        codec.transcode(packets[n : n + 10])
    return (time.thread_time() - started) * 1000 / seconds


async def ingest_cpu(audio: str, seconds: float) -> float:
    camera = RtspCamera(free_port(), audio=audio)
    camera.start()
    try:
        hub = Hub()
        pull = RtspPull(hub, "cam", camera.url, timeout_s=3.0)
        pull.start()
        while not hub.stream("cam").live:
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        started = time.process_time()
        await asyncio.sleep(seconds)
        used = time.process_time() - started
        await pull.stop()
    finally:
        camera.kill()
    return used * 1000 / seconds


async def webrtc_audio_cpu(path: str, seconds: float) -> float:
    """CPU ms per stream-second of a PCMA camera's ingest, plus one WebRTC viewer's audio
    path: "" (no viewer), "passthrough" or "aac-opus"."""
    camera = RtspCamera(free_port(), audio="pcma")
    camera.start()
    try:
        hub = Hub()
        stream = hub.stream("cam")
        pull = RtspPull(hub, "cam", camera.url, timeout_s=3.0)
        pull.start()
        while not (stream.live and stream.source_audio.codec):
            await asyncio.sleep(0.05)
        feed, drain, egress = None, None, StreamEgress(hub, "cam")
        if path:
            source = stream.source_audio if path == "passthrough" else None
            feed = ViewerFeed(hub, egress, video=False, audio=True, source_audio=source)
            assert feed.audio_track is not None
            drain = asyncio.create_task(_take(feed.audio_track))
        await asyncio.sleep(1.0)
        started = time.process_time()
        await asyncio.sleep(seconds)
        used = time.process_time() - started
        if path == "aac-opus":
            print(f"  of which the AAC->Opus codec thread: {egress.audio.cpu_s * 1000:.0f} ms")
        if feed is not None and drain is not None:
            assert feed.stats.audio_frames > 0, f"{path}: no audio frames sent"
            drain.cancel()
            feed.close()
        await pull.stop()
    finally:
        camera.kill()
    return used * 1000 / seconds


async def _take(track: FeedTrack) -> None:
    while True:
        await track.recv()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--ingest-seconds", type=float, default=20.0)
    parser.add_argument("--webrtc-only", action="store_true", help="the WebRTC audio path only")
    args = parser.parse_args()
    if args.webrtc_only:
        for path in ("", "passthrough", "aac-opus") * 3:
            cpu = asyncio.run(webrtc_audio_cpu(path, args.ingest_seconds))
            name = path or "no viewer"
            print(f"RTSP ingest, H.264 + PCMA, WebRTC audio {name}: {cpu:.1f} ms CPU/stream-s")
        return
    print(f"G.711 A-law 8 kHz -> AAC-LC 16 kHz: {g711_to_aac(args.seconds):.1f} ms CPU/stream-s")
    print(f"AAC 48 kHz -> Opus 48 kHz (WebRTC): {aac_to_opus(args.seconds):.1f} ms CPU/stream-s")
    for audio in ("aac", "pcma", "aac", "pcma"):
        cpu = asyncio.run(ingest_cpu(audio, args.ingest_seconds))
        print(f"RTSP ingest, 640x360 H.264 + {audio}: {cpu:.1f} ms CPU/stream-s")


if __name__ == "__main__":
    main()
