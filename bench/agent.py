"""Device agent bench: agent CPU per stream-second and RSS per camera (main + sub, remux
only: RTSP in, RTMP out, the local ring on disk).

    .venv/bin/python -m bench.agent [--cameras 1,2,4] [--seconds 20] [--repeat 3]
        [--profile /tmp/agent-prof]

For each N: N GStreamer RTSP cameras (main 640x360, sub 320x180, 25 fps, 1 s GOP, AAC),
one `courtcast agent run` process with N sources (each main + sub: 2N streams), publishing
to a courtcast RtmpServer in this process. After every stream is live on the server and a
warm-up, the agent process's CPU time (all threads) over --seconds gives ms per
stream-second; RSS is read at the end. The cameras' own CPU (x264 encoding) is not the
agent's and is not counted. Other benches may share the machine: the load average
over each run is printed, and CPU time (not wall time) is the number to compare.

CPU is also split per thread (the event loop thread vs the RTSP reader threads and the
ring's disk-write threads). --profile also samples the agent with py-spy (native frames,
threads) over the window, keeps the raw stacks in PREFIX-{N}cam.txt and prints where the
CPU goes: the busy samples of each thread grouped by the part of the agent on the stack.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.procs import TICKS, Procs, cpu_s, free_port, rss_mb, tree
from device_agents.config import (
    AgentConfig,
    SourceConfig,
    StreamConfig,
    write_agent_config,
)
from media_server.hub import Hub
from media_server.rtmp.server import RtmpServer

ROOT = Path(__file__).resolve().parent.parent
CAMERA = ROOT / "tests" / "fixtures" / "rtsp_camera_server.py"
COURTCAST = str(Path(sys.executable).parent / "courtcast")
WARMUP_S = 3.0


def start_camera(procs: Procs, port: int) -> None:
    proc = procs.start(
        [
            "/usr/bin/python3",
            str(CAMERA),
            "--port",
            str(port),
            "--size",
            "640x360",
            "--sub-size",
            "320x180",
            "--fps",
            "25",
        ],
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith(b"READY"):
        raise SystemExit(f"camera on port {port} did not start: {line!r}")


def config(folder: Path, rtmp_port: int, cameras: list[int]) -> Path:
    sources = {}
    for i, port in enumerate(cameras):
        url = f"rtsp://127.0.0.1:{port}"
        sources[f"cam{i}"] = SourceConfig(
            kind="rtsp",
            url=f"{url}/cam",
            sub_url=f"{url}/sub",
            main=StreamConfig(stream_id=f"b-r-cam{i}", key="k"),
            sub=StreamConfig(stream_id=f"b-r-cam{i}-sub", key="k"),
        )
    path = folder / "agent.yaml"
    write_agent_config(
        path,
        AgentConfig(
            server=f"http://127.0.0.1:{free_port()}",
            rtmp_url=f"rtmp://127.0.0.1:{rtmp_port}/live",
            device_id="bench",
            device_secret="x",
            court="b",
            room="r",
            sources=sources,
            spool={"dir": folder / "spool", "max_bytes": 2 << 30},
        ),
        exclusive=False,
    )  # type: ignore[arg-type]
    return path


def start_profile(procs: Procs, pid: int, seconds: float, out: Path) -> subprocess.Popen[Any]:
    """py-spy over the measuring window: native frames, per thread, raw (folded) stacks."""
    spy = str(Path(sys.executable).parent / "py-spy")
    return procs.start(
        [
            spy,
            "record",
            "--native",
            "--threads",
            "-r",
            "100",
            "-f",
            "raw",
            "-d",
            str(int(seconds)),
            "-p",
            str(pid),
            "-o",
            str(out),
        ],
        stop_signal=signal.SIGINT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process, by thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / TICKS
    return out


# -- where the time goes: py-spy raw stacks grouped by the part of the agent on them --

# a sample whose innermost named frame is one of these is a thread waiting, not working
IDLE_LEAVES = {
    "poll",
    "epoll_wait",
    "select",
    "pthread_cond_timedwait",
    "pthread_cond_wait",
    "PyThread_acquire_lock_timed",
    "sem_clockwait",
    "sem_timedwait",
    "clock_nanosleep",
    "nanosleep",
}
# first marker found on the stack names the part: inner parts before outer ones (the
# selector, ring and publisher may all run inside the feed's push, RtspPull._flush)
PARTS = (
    ("RTSP read + demux in FFmpeg", "av_read_frame"),
    ("PyAV packet objects", "InputContainer_8generator"),
    ("to hub form (AVCC, timestamps)", "_TrackReader.read"),
    ("hand-over to the event loop", "RtspPull._send"),
    ("disk writes", "RingRecorder._store"),
    ("publisher: socket writes", "_SelectorSocketTransport.write"),
    ("publisher: FLV + RTMP chunking", "PlayOut.handle"),
    ("publisher: task (queue, drain)", "Publisher._pump"),
    ("publisher: reading the server", "RtmpPublishSession._read_loop"),
    ("ring: segmenter + fMP4", "RingRecorder._feed"),
    ("ring: segmenter + fMP4", "RingRecorder._read"),
    ("selector hop (output stream push)", "Selector._forward"),
    ("selector hop (output stream push)", "Selector._run"),
    ("feed -> agent hub (stats, GOP, offers)", "RtspPull._flush"),
    ("control link + heartbeat", "device_agents/link.py"),
    ("backfill", "device_agents/backfill.py"),
)


def _frame_name(frame: str) -> str:
    return frame.split(" (", 1)[0]


def profile_parts(path: Path) -> Counter[tuple[str, str]]:
    """Busy samples by (thread kind, part of the agent)."""
    parts: Counter[tuple[str, str]] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not stack or not frames[0].startswith("thread ("):
            continue
        name = frames[0].partition("): ")[2]
        named = [f for f in frames[1:] if not f.startswith("0x")]
        if not named or _frame_name(named[-1]) in IDLE_LEAVES:
            continue
        part = next(
            (p for p, mark in PARTS if any(mark in f for f in named)), "event loop, timers, other"
        )
        parts[_thread_kind(name), part] += int(count)
    return parts


LOOP = "event loop thread"


def _thread_kind(name: str) -> str:
    if name.startswith("pull-"):
        return "RTSP reader threads"
    if name == "MainThread":
        return LOOP
    return "worker threads (ring writes)"


@dataclass
class Run:
    cameras: int
    ms: float  # agent CPU ms per stream-second, all threads
    main_ms: float  # of which the event loop thread
    rss_mb: float
    fps: float
    load: float
    profile: Path | None = None


def video_frames(hub: Hub, ids: list[str]) -> int:
    """Video frames the server got on these streams so far."""
    return sum(hub.stream(i).stats.video_frames for i in ids)


async def one_run(n: int, seconds: float, profile: Path | None = None) -> Run:
    """One agent with N cameras: CPU per stream-second (all, event loop thread), RSS."""
    hub = Hub()
    server = RtmpServer(hub, "127.0.0.1", 0)
    await server.start()
    procs = Procs()
    load0 = os.getloadavg()[0]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ports = [free_port() for _ in range(n)]
            for port in ports:
                start_camera(procs, port)
            agent = procs.start(
                [
                    COURTCAST,
                    "--log-level",
                    "error",
                    "agent",
                    "run",
                    "--config",
                    str(config(Path(tmp), server.port, ports)),
                ],
                stop_signal=signal.SIGTERM,
            )
            ids = [f"b-r-cam{i}{s}" for i in range(n) for s in ("", "-sub")]
            deadline = time.monotonic() + 40
            while not all((st := hub.find(i)) is not None and st.live for i in ids):
                if time.monotonic() > deadline:
                    raise SystemExit("not every stream went live on the server")
                await asyncio.sleep(0.2)
            await asyncio.sleep(WARMUP_S)
            frames0 = video_frames(hub, ids)
            spy = start_profile(procs, agent.pid, seconds, profile) if profile else None
            cpu0, main0 = cpu_s(tree(agent.pid)), thread_cpu(agent.pid).get(agent.pid, 0.0)
            await asyncio.sleep(seconds)
            cpu1, main1 = cpu_s(tree(agent.pid)), thread_cpu(agent.pid).get(agent.pid, 0.0)
            if spy is not None:
                await asyncio.to_thread(spy.wait, 30)
            rss = rss_mb(tree(agent.pid))
            frames = video_frames(hub, ids) - frames0
            procs.stop(agent)
    finally:
        procs.stop_all()
        await server.stop()
    per = 1000 / (len(ids) * seconds)
    return Run(
        n,
        (cpu1 - cpu0) * per,
        (main1 - main0) * per,
        rss,
        frames / (len(ids) * seconds),
        (load0 + os.getloadavg()[0]) / 2,
        profile,
    )


def print_profile(run: Run) -> None:
    """Each thread kind's measured CPU, split by its busy samples (py-spy's own idea of
    busy is not CPU time: the event loop thread is scaled to its measured CPU, the other
    threads share the rest by samples)."""
    assert run.profile is not None
    parts = profile_parts(run.profile)
    kinds: Counter[str] = Counter()
    for (kind, _), count in parts.items():
        kinds[kind] += count
    others = sum(c for k, c in kinds.items() if k != LOOP) or 1
    print(f"\n{run.cameras} cameras: where the agent's {run.ms:.1f} ms per stream-second go")
    for kind, count in kinds.most_common():
        ms = run.main_ms if kind == LOOP else (run.ms - run.main_ms) * count / others
        print(f"  {kind:<44} {ms:5.1f} ms")
        for (k, part), n in parts.most_common():
            if k == kind:
                print(f"    {part:<42} {ms * n / count:5.1f} ms  {100 * n / count:4.0f} %")


def median_run(runs: list[Run]) -> Run:
    """The run with the median CPU (its RSS, fps and load come with it)."""
    return sorted(runs, key=lambda r: r.ms)[len(runs) // 2]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cameras", default="1,2,4")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per N; the median CPU is shown, with the range"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="PREFIX",
        help="also py-spy the agent: PREFIX-{N}cam.txt (raw), per run",
    )
    args = parser.parse_args()
    rows: list[tuple[Run, list[Run]]] = []
    for n in (int(v) for v in args.cameras.split(",")):
        runs = []
        for i in range(args.repeat):
            out = Path(f"{args.profile}-{n}cam-{i}.txt") if args.profile else None
            runs.append(await one_run(n, args.seconds, out))
        rows.append((median_run(runs), runs))
        print(f"  {n} cameras: " + ", ".join(f"{r.ms:.1f}" for r in runs), file=sys.stderr)
    print(
        f"{'cameras':>7} {'streams':>7} {'CPU ms/stream-s':>16} {'range':>11} "
        f"{'loop thread':>11} {'agent RSS MB':>12} {'MB/camera':>9} {'fps':>5} "
        f"{'load':>5}"
    )
    for run, runs in rows:
        low, high = min(r.ms for r in runs), max(r.ms for r in runs)
        print(
            f"{run.cameras:>7} {2 * run.cameras:>7} {run.ms:>16.1f} "
            f"{f'{low:.1f}-{high:.1f}':>11} {run.main_ms:>11.1f} {run.rss_mb:>12.1f} "
            f"{run.rss_mb / run.cameras:>9.1f} {run.fps:>5.1f} {run.load:>5.2f}"
        )
    for run, _ in rows:
        if run.profile is not None:
            print_profile(run)


if __name__ == "__main__":
    asyncio.run(main())
