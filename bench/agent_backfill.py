"""Device agent across a WAN cut: time to live picture after the link is back, and backfill
throughput on a shaped link.

    .venv/bin/python -m bench.agent_backfill [--cut-s 60] [--rate-mbit 10] [--kbps 3000]
                                             [--size 1280x720] [--source file|rtsp]
                                             [--blackhole]

One process: the platform (recorder on, a trial session open on the room), a source, an
agent enrolled with a one-time token, and a loopback proxy
(tests/fixtures/tcp_proxy.py) carrying both the agent's HTTP (control, backfill) and RTMP
over one line shaped to --rate-mbit. The line is cut for --cut-s, then restored.

The source: `file` (default), a looped 720p clip made with ffmpeg at --kbps with film
grain, so the bitrate is that of a real camera; `rtsp`, the GStreamer test camera of the
tests (its bouncing-ball pattern compresses to ~0.2 Mbit/s whatever --kbps says, too
little to measure a line with).

Measured:
- live back: restore -> a new segment in the LL-HLS playlist whose media decodes (init +
  that segment, decoded with PyAV);
- backfill throughput: bytes of stored segments / time spent uploading them (the live
  stream shares the line meanwhile, so the ratio is also given to what is left of it);
- backfill done: restore -> the gap marked filled; verify of the closed recording.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import av
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_room.devices import DeviceRegistry
from core.config import load_config
from courtcast.platform import Platform
from device_agents.agent import Agent
from device_agents.config import load_agent_config
from recorder.verify import verify_recording
from tests.fixtures.rtsp_camera import SERVER, SYSTEM_PYTHON, free_port
from tests.fixtures.tcp_proxy import Link, TcpProxy, _Loop


def make_clip(folder: Path, size: str, kbps: int) -> Path:
    """30 s of 25 fps H.264 at about kbps (noise keeps the encoder from saving bits) + AAC."""
    out = folder / "camera.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={size}:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=48000",
            "-t",
            "30",
            "-vf",
            "noise=alls=12:allf=t",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
            "-keyint_min",
            "25",
            "-sc_threshold",
            "0",
            "-b:v",
            f"{kbps}k",
            "-maxrate",
            f"{kbps}k",
            "-bufsize",
            f"{kbps}k",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-b:a",
            "64k",
            "-ac",
            "1",
            str(out),
        ],
        check=True,
        timeout=300,
    )
    return out


def start_camera(port: int, size: str, kbps: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            SYSTEM_PYTHON,
            str(SERVER),
            "--port",
            str(port),
            "--size",
            size,
            "--fps",
            "25",
            "--kbps",
            str(kbps),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    if not proc.stdout.readline().startswith(b"READY"):
        raise RuntimeError("the RTSP camera did not start (GStreamer installed?)")
    return proc


def role(node: Platform, name: str) -> Any:
    return next(r for r in node.roles if r.name == name)


async def until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.05)
    return value


async def play_url(node: Platform, stream: str) -> str:
    base = f"http://127.0.0.1:{node.http_port}"
    await role(node, "control_room").users.add("bench", "operator", "correct horse battery")
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        await http.post(
            "/api/v1/login", json={"name": "bench", "password": "correct horse battery"}
        )
        return base + (await http.get(f"/api/v1/streams/{stream}/play-url")).json()["hls"]


async def newest_segment(http: httpx.AsyncClient, url: str) -> tuple[int, str, str] | None:
    """(msn, init URI, segment URI) of the newest complete segment, or None."""
    text = (await http.get(url)).text
    first = re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", text)
    maps = re.findall(r'#EXT-X-MAP:URI="([^"]+)"', text)
    segments = [line for line in text.splitlines() if line and not line.startswith("#")]
    if first is None or not segments or not maps:
        return None
    return int(first[1]) + len(segments) - 1, maps[-1], segments[-1]


async def decoded_frames(http: httpx.AsyncClient, url: str, init: str, segment: str) -> int:
    base = url.rsplit("/", 1)[0] + "/"
    data = (await http.get(base + init)).content + (await http.get(base + segment)).content
    with av.open(io.BytesIO(data), "r") as container:
        return len(list(container.decode(video=0)))


async def enrol(node: Platform, folder: Path, camera_url: str, server: str, rtmp_url: str) -> Agent:
    token = await DeviceRegistry(role(node, "storage").state).make_enrol_token("c1", "r1")
    out = folder / "agent.yaml"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "courtcast.cli",
        "agent",
        "enroll",
        "--server",
        server,
        "--token",
        token,
        "--out",
        str(out),
        "--source",
        f"cam={camera_url}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"enrol failed: {err.decode()}")
    return Agent(load_agent_config(out).model_copy(update={"rtmp_url": rtmp_url}), out)


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    camera: subprocess.Popen[bytes] | None = None
    if args.source == "rtsp":
        port = free_port()
        camera = start_camera(port, args.size, args.kbps)
        source_url = f"rtsp://127.0.0.1:{port}/cam"
    else:
        source_url = str(make_clip(folder, args.size, args.kbps))
    config = load_config(
        overrides={
            "node.data_dir": str(folder / "data"),
            "http.port": 0,
            "rtmp.port": 0,
            "recorder.segment_target_s": 2.0,
        },
        environ={},
    )
    node = Platform(config)
    await node.start()
    loop, link = _Loop(), Link(args.rate_mbit * 1e6 / 8)
    http_proxy = TcpProxy(loop, node.http_port, link).start()
    rtmp_proxy = TcpProxy(loop, role(node, "media_server").rtmp_port, link).start()
    agent: Agent | None = None
    try:
        agent = await enrol(
            node,
            folder,
            source_url,
            f"http://127.0.0.1:{http_proxy.port}",
            f"rtmp://127.0.0.1:{rtmp_proxy.port}/live",
        )
        stream = agent.config.sources["cam"].main.stream_id
        await agent.start()
        hub = role(node, "media_server").hub
        await until(lambda: (s := hub.find(stream)) is not None and s.live, 30, "live")
        recorder = role(node, "recorder")
        session = await recorder.sessions.open("r1", "BENCH-1", "bench", public=True)
        recording = await until(lambda: next(iter(recorder.active.values()), None), 10, "rec")
        url = await play_url(node, stream)
        up0, t0 = rtmp_proxy.bytes_up, time.monotonic()
        await asyncio.sleep(5)
        live_bps = (rtmp_proxy.bytes_up - up0) * 8 / (time.monotonic() - t0)
        await asyncio.to_thread(link.cut, args.blackhole)
        await asyncio.sleep(args.cut_s)
        async with httpx.AsyncClient(timeout=10) as http:
            before = await newest_segment(http, url)
            await asyncio.to_thread(link.restore)
            restored = time.monotonic()
            while True:
                now = await newest_segment(http, url)
                if now is not None and (before is None or now[0] > before[0]):
                    break
                await asyncio.sleep(0.05)
            playlist_s = time.monotonic() - restored
            frames = await decoded_frames(http, url, now[1], now[2])
            picture_s = time.monotonic() - restored
        await until(
            lambda: recording.manifest.gaps and all(g.filled for g in recording.manifest.gaps),
            180,
            "gap filled",
        )
        filled_s = time.monotonic() - restored
        await recorder.sessions.close(session.id)
        await asyncio.sleep(0.5)
        await recorder.wait_closed()
        report = await verify_recording(
            role(node, "storage").objects, recording.id, recorder.signer.public
        )
        bf = agent.backfill
        assert bf is not None
        return {
            "cut_s": args.cut_s,
            "mode": "blackhole" if args.blackhole else "drop",
            "source": args.source,
            "playlist_s": playlist_s,
            "picture_s": picture_s,
            "frames": frames,
            "filled_s": filled_s,
            "segments": bf.uploaded,
            "mb": bf.bytes_uploaded / 1e6,
            "upload_s": bf.upload_s,
            "live_mbit": live_bps / 1e6,
            "rate_mbit": args.rate_mbit,
            "duplicates": bf.duplicates,
            "verify": report.summary(),
        }
    finally:
        if agent is not None:
            await agent.stop()
        for proxy in (http_proxy, rtmp_proxy):
            proxy.stop()
        loop.close()
        await node.stop()
        if camera is not None:
            camera.kill()
            camera.wait()


def report(r: dict[str, Any]) -> None:
    mb_s = r["mb"] / r["upload_s"] if r["upload_s"] else 0.0
    link_mb_s = r["rate_mbit"] / 8
    left = max(r["rate_mbit"] - r["live_mbit"], 0.01) / 8
    print(
        f"source {r['source']}, cut {r['cut_s']:.0f} s ({r['mode']}), "
        f"line {r['rate_mbit']:.0f} Mbit/s, live "
        f"{r['live_mbit']:.2f} Mbit/s"
    )
    print(
        f"live back: playlist {r['playlist_s']:.1f} s, picture decoded {r['picture_s']:.1f} s"
        f" ({r['frames']} frames) after restore"
    )
    print(
        f"backfill: {r['segments']} segments, {r['mb']:.2f} MB in {r['upload_s']:.1f} s "
        f"uploading = {mb_s:.3f} MB/s = {mb_s / link_mb_s:.2f} x line, "
        f"{mb_s / left:.2f} x line minus live; gap filled {r['filled_s']:.1f} s after "
        f"restore; duplicates {r['duplicates']}"
    )
    print(f"verify: {r['verify']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cut-s", type=float, default=60.0)
    parser.add_argument("--rate-mbit", type=float, default=10.0)
    parser.add_argument("--kbps", type=int, default=3000, help="source video bitrate")
    parser.add_argument("--source", choices=("file", "rtsp"), default="file")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument(
        "--blackhole",
        action="store_true",
        help="cut silently (sockets stay open) instead of resetting",
    )
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp,
        contextlib.suppress(KeyboardInterrupt),
    ):
        report(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()
