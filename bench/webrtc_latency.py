"""Glass-to-glass latency on loopback: RTMP -> WHEP and WHIP -> WHEP.

Every published frame carries its capture time (wall-clock ms) as a 40-bit barcode in
its picture. A publisher makes 1280x720 30 fps frames and stamps them when made:
- rtmp: raw frames piped to ffmpeg (libx264 zerolatency, 2 s GOP, no B-frames) -> RTMP;
- whip: an aiortc peer connection (its libx264 encoder) -> WHIP.
An aiortc WHEP viewer decodes every frame and reads the barcode: latency = now - stamp.
Two figures per frame: when its last RTP packet arrived ("arrival": capture + encode +
server + network) and when its decoded picture came out of aiortc ("decoded"; aiortc's
jitter buffer releases a frame only when the next one starts, i.e. +1 frame interval,
where Chromium releases it on the marker bit). No display step: add a screen refresh.

The server (hub + RTMP + WHIP/WHEP) runs in its own process, as in production.

    .venv/bin/python bench/webrtc_latency.py [--mode rtmp,whip] [--seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.webrtc_viewers import free_port

W, H, FPS = 1280, 720, 30
BITS, BLOCK = 40, 32  # barcode: 40 blocks of 32x32 px along the top
WARMUP_S = 2.0  # the GOP burst and the first ramp-up are not steady state


# -- barcode --


def stamped_luma(stamp_ms: int, n: int) -> np.ndarray:
    """A moving gradient (work for the encoder) with the stamp drawn along the top."""
    x = (np.arange(W, dtype=np.uint16) + n * 8) % 220 + 16
    y = np.broadcast_to(x[None, :], (H, W)).astype(np.uint8).copy()
    for bit in range(BITS):
        on = (stamp_ms >> (BITS - 1 - bit)) & 1
        y[:BLOCK, bit * BLOCK : (bit + 1) * BLOCK] = 235 if on else 16
    return y


def read_stamp(luma: np.ndarray) -> int:
    row = luma[BLOCK // 2, BLOCK // 2 :: BLOCK][:BITS]
    value = 0
    for px in row:
        value = (value << 1) | int(px > 128)
    return value


def now_ms() -> int:
    return int(time.time() * 1000) & ((1 << BITS) - 1)


# -- server process --


def serve(http_port: int, rtmp_port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    from media_server.hub import Hub
    from media_server.rtmp.server import RtmpServer
    from media_server.webrtc import IceConfig, make_webrtc_router

    async def allow(*_: Any) -> None:
        return None

    async def main() -> None:
        hub = Hub()
        rtmp = RtmpServer(hub, "127.0.0.1", rtmp_port)
        await rtmp.start()
        app = FastAPI()
        app.include_router(
            make_webrtc_router(
                hub, allow, allow, IceConfig(host_addresses=["127.0.0.1"], connect_timeout_s=60)
            )
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning")
        await uvicorn.Server(config).serve()
        await rtmp.stop()

    asyncio.run(main())


# -- publishers --


def rtmp_publisher(rtmp_port: int, stop: threading.Event) -> None:
    """Frames made in real time, stamped as made, into ffmpeg's stdin."""
    cmd = [
        "ffmpeg",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-s",
        f"{W}x{H}",
        "-r",
        str(FPS),
        "-i",
        "-",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-tune",
        "zerolatency",
        "-g",
        str(2 * FPS),
        "-bf",
        "0",
        "-b:v",
        "2M",
        "-maxrate",
        "2M",
        "-bufsize",
        "1M",
        "-f",
        "flv",
        f"rtmp://127.0.0.1:{rtmp_port}/live/lat",
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    chroma = bytes([128]) * (W * H // 2)
    start = time.monotonic()
    n = 0
    try:
        assert proc.stdin is not None
        while not stop.is_set():
            delay = start + n / FPS - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            proc.stdin.write(stamped_luma(now_ms(), n).tobytes() + chroma)
            proc.stdin.flush()
            n += 1
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(10)


def whip_track() -> Any:
    import av
    from aiortc.mediastreams import MediaStreamTrack

    class Stamped(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.start = 0.0

        async def recv(self) -> av.VideoFrame:
            if not self.start:
                self.start = time.monotonic()
            delay = self.start + self.n / FPS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            luma = stamped_luma(now_ms(), self.n)
            yuv = np.concatenate([luma, np.full((H // 2, W), 128, np.uint8)])
            frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
            frame.pts, frame.time_base = self.n * 3000, Fraction(1, 90000)
            self.n += 1
            return frame

    return Stamped()


async def whip_publish(client: httpx.AsyncClient) -> Any:
    from aiortc import RTCRtpSender, RTCSessionDescription

    from media_server.webrtc.ice import IceConfig, new_peer_connection

    pc = new_peer_connection(IceConfig())
    transceiver = pc.addTransceiver(whip_track(), direction="sendonly")
    transceiver.setCodecPreferences(
        [
            c
            for c in RTCRtpSender.getCapabilities("video").codecs
            if c.mimeType.lower() == "video/h264"
        ]
    )
    await pc.setLocalDescription(await pc.createOffer())
    res = await client.post(
        "/whip/lat", content=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}
    )
    res.raise_for_status()
    await pc.setRemoteDescription(RTCSessionDescription(res.text, "answer"))
    return pc


# -- the viewer --


async def whep_view(client: httpx.AsyncClient, seconds: float) -> dict[str, list[float]]:
    from aiortc import RTCSessionDescription

    from media_server.webrtc.ice import IceConfig, new_peer_connection

    pc = new_peer_connection(IceConfig())
    receiver = pc.addTransceiver("video", direction="recvonly").receiver
    arrivals = tap_arrivals(receiver)
    await pc.setLocalDescription(await pc.createOffer())
    res = await _post_when_live(client, pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(res.text, "answer"))
    out: dict[str, list[float]] = {"arrival": [], "decoded": []}
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            frame: Any = await asyncio.wait_for(receiver.track.recv(), 10)
            now = time.time()
            stamp = read_stamp(frame.to_ndarray(format="gray"))
            if time.monotonic() - t0 < WARMUP_S:
                continue
            out["decoded"].append(_age(now, stamp))
            arrived = arrivals.pop(frame.pts, None)
            if arrived is not None:
                out["arrival"].append(_age(arrived, stamp))
    finally:
        await pc.close()
    return out


def _age(at: float, stamp: int) -> float:
    return ((int(at * 1000) & ((1 << BITS) - 1)) - stamp) % (1 << BITS)


def tap_arrivals(receiver: Any) -> dict[int, float]:
    """Wall-clock of each frame's marker packet (its last), by the frame's pts (aiortc
    counts pts from the first RTP timestamp it saw)."""
    seen: dict[int, float] = {}
    origin: list[int] = []
    original = receiver._handle_rtp_packet

    async def handle(packet: Any, arrival_time_ms: int) -> None:
        if not origin:
            origin.append(packet.timestamp)
        if packet.marker:
            seen[(packet.timestamp - origin[0]) % (1 << 32)] = time.time()
            if len(seen) > 300:
                seen.pop(next(iter(seen)))
        await original(packet, arrival_time_ms)

    receiver._handle_rtp_packet = handle
    return seen


async def _post_when_live(client: httpx.AsyncClient, sdp: str) -> httpx.Response:
    deadline = time.monotonic() + 15
    while True:
        res = await client.post(
            "/whep/lat", content=sdp, headers={"Content-Type": "application/sdp"}
        )
        if res.status_code == 201 or time.monotonic() > deadline:
            res.raise_for_status()
            return res
        await asyncio.sleep(0.3)


# -- orchestration --


async def run(mode: str, http_port: int, rtmp_port: int, seconds: float) -> dict[str, Any]:
    stop = threading.Event()
    publisher: Any = None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=20) as c:
        if mode == "rtmp":
            publisher = threading.Thread(target=rtmp_publisher, args=(rtmp_port, stop))
            publisher.start()
        else:
            publisher = await whip_publish(c)
        try:
            samples = await whep_view(c, seconds)
        finally:
            stop.set()
            if mode == "rtmp":
                await asyncio.to_thread(publisher.join, 15)
            else:
                await publisher.close()
    return {k: summary(v) for k, v in samples.items()}


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {
        "n": len(values),
        "p50": statistics.median(ordered),
        "p95": ordered[int(0.95 * (len(ordered) - 1))],
        "max": ordered[-1],
    }


def wait_up(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.options(f"http://127.0.0.1:{port}/whep/lat").status_code == 204:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", default="bench", choices=["bench", "server"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rtmp-port", type=int, default=0)
    parser.add_argument("--mode", default="rtmp,whip")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    if args.role == "server":
        serve(args.port, args.rtmp_port)
        return
    for mode in args.mode.split(","):
        http_port, rtmp_port = free_port(), free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--role",
                "server",
                "--port",
                str(http_port),
                "--rtmp-port",
                str(rtmp_port),
            ]
        )
        try:
            wait_up(http_port)
            result = asyncio.run(run(mode, http_port, rtmp_port, args.seconds))
            print(json.dumps({"mode": f"{mode} -> whep", "latency_ms": result}), flush=True)
        finally:
            server.terminate()
            server.wait(15)


if __name__ == "__main__":
    main()
