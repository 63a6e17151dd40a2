"""Device agent bench: agent CPU per stream-second and RSS per camera (main + sub, remux
only: RTSP in, RTMP out, the local ring on disk).

    .venv/bin/python -m bench.agent [--cameras 1,2,4] [--seconds 20]

For each N: N GStreamer RTSP cameras (main 640x360, sub 320x180, 25 fps, 1 s GOP, AAC),
one `courtcast agent run` process with N sources (each main + sub: 2N streams), publishing
to a courtcast RtmpServer in this process. After every stream is live on the server and a
warm-up, the agent process's CPU time (all threads) over --seconds gives ms per
stream-second; RSS is read at the end. The cameras' own CPU (x264 encoding) is not the
agent's and is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import Procs, cpu_s, free_port, rss_mb, tree  # noqa: E402
from device_agents.config import (  # noqa: E402
    AgentConfig,
    SourceConfig,
    StreamConfig,
    write_agent_config,
)
from media_server.hub import Hub  # noqa: E402
from media_server.rtmp.server import RtmpServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CAMERA = ROOT / "tests" / "fixtures" / "rtsp_camera_server.py"
COURTCAST = str(Path(sys.executable).parent / "courtcast")
WARMUP_S = 3.0


def start_camera(procs: Procs, port: int) -> None:
    proc = procs.start(["/usr/bin/python3", str(CAMERA), "--port", str(port), "--size",
                        "640x360", "--sub-size", "320x180", "--fps", "25"],
                       stdout=__import__("subprocess").PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(b"READY"):
        raise SystemExit(f"camera on port {port} did not start: {line!r}")


def config(folder: Path, rtmp_port: int, cameras: list[int]) -> Path:
    sources = {}
    for i, port in enumerate(cameras):
        url = f"rtsp://127.0.0.1:{port}"
        sources[f"cam{i}"] = SourceConfig(
            kind="rtsp", url=f"{url}/cam", sub_url=f"{url}/sub",
            main=StreamConfig(stream_id=f"b-r-cam{i}", key="k"),
            sub=StreamConfig(stream_id=f"b-r-cam{i}-sub", key="k"))
    path = folder / "agent.yaml"
    write_agent_config(path, AgentConfig(
        server=f"http://127.0.0.1:{free_port()}", rtmp_url=f"rtmp://127.0.0.1:{rtmp_port}/live",
        device_id="bench", device_secret="x", court="b", room="r", sources=sources,
        spool={"dir": folder / "spool", "max_bytes": 2 << 30}), exclusive=False)  # type: ignore[arg-type]
    return path


async def one_run(n: int, seconds: float) -> tuple[float, float, int]:
    """(ms CPU per stream-second, RSS MB, frames the server got) for N cameras."""
    hub = Hub()
    server = RtmpServer(hub, "127.0.0.1", 0)
    await server.start()
    procs = Procs()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ports = [free_port() for _ in range(n)]
            for port in ports:
                start_camera(procs, port)
            agent = procs.start([COURTCAST, "--log-level", "warning", "agent", "run",
                                 "--config", str(config(Path(tmp), server.port, ports))],
                                stop_signal=signal.SIGTERM)
            ids = [f"b-r-cam{i}{s}" for i in range(n) for s in ("", "-sub")]
            deadline = time.monotonic() + 40
            while not all((st := hub.find(i)) is not None and st.live for i in ids):
                if time.monotonic() > deadline:
                    raise SystemExit("not every stream went live on the server")
                await asyncio.sleep(0.2)
            await asyncio.sleep(WARMUP_S)
            frames0 = sum(hub.find(i).stats.video_frames for i in ids)  # type: ignore[union-attr]
            cpu0 = cpu_s(tree(agent.pid))
            await asyncio.sleep(seconds)
            cpu1 = cpu_s(tree(agent.pid))
            rss = rss_mb(tree(agent.pid))
            frames = sum(hub.find(i).stats.video_frames for i in ids) - frames0  # type: ignore[union-attr]
            procs.stop(agent)
    finally:
        procs.stop_all()
        await server.stop()
    return (cpu1 - cpu0) * 1000 / (len(ids) * seconds), rss, frames


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cameras", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    rows = []
    for n in (int(v) for v in args.cameras.split(",")):
        ms, rss, frames = await one_run(n, args.seconds)
        rows.append((n, 2 * n, ms, rss, frames / (2 * n * args.seconds)))
        print(f"  {n} cameras done", file=sys.stderr)
    print(f"{'cameras':>7} {'streams':>7} {'CPU ms/stream-s':>16} {'agent RSS MB':>13} "
          f"{'RSS MB/camera':>14} {'fps at server':>14}")
    for n, streams, ms, rss, fps in rows:
        print(f"{n:>7} {streams:>7} {ms:>16.1f} {rss:>13.1f} {rss / n:>14.1f} {fps:>14.1f}")


if __name__ == "__main__":
    asyncio.run(main())
